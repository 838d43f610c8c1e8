//! The server under idle, slow and greedy clients: it sheds them and keeps
//! serving everyone else.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, call};

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.endpoint.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// True once the server has closed `stream` (reads end or fail).
fn closed(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock || err.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Idle and slow connections past the limit are closed to make room, and a
/// normal Get still answers at once.
#[test]
fn idle_and_slow_connections_cannot_lock_anyone_out() {
    let server = Server::start(&["--max-connections", "64", "--header-timeout", "2s"]);
    call(
        &server.endpoint,
        "POST",
        "/v1/projects/p/operations",
        Some(&json!({"operationId": "x"})),
    );
    // Twice the limit in idle connections, and some that trickle their
    // headers in a byte at a time.
    let mut idle: Vec<TcpStream> = (0..128).map(|_| connect(&server)).collect();
    let mut slow: Vec<TcpStream> = (0..16).map(|_| connect(&server)).collect();
    for stream in &mut slow {
        stream
            .write_all(b"GET /v1/projects/p/operations/x HTTP/1.1\r\nHo")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, got) = call(&server.endpoint, "GET", "/v1/projects/p/operations/x", None);
    let took = started.elapsed();
    assert_eq!(status, 200, "{got}");
    assert!(took < Duration::from_millis(100), "a normal Get took {took:?}");
    let shed = idle.iter_mut().map(closed).filter(|shut| *shut).count();
    assert!(
        shed >= 64,
        "only {shed} of 128 idle connections were closed to keep to the limit of 64"
    );
    // What is left of the slow ones is closed at the header timeout.
    std::thread::sleep(Duration::from_millis(2500));
    for stream in &mut slow {
        let _ = stream.write_all(b"s");
        assert!(
            closed(stream),
            "a client trickling its headers outlived the header timeout"
        );
    }
    assert!(rss_kb(&server) < 100 * 1024, "RSS {} kB", rss_kb(&server));
}

/// A body shorter than its Content-Length is answered 408 at the body
/// timeout, with an AIP-193 body, rather than held forever.
#[test]
fn a_body_that_never_arrives_times_out() {
    let server = Server::start(&["--body-timeout", "1s"]);
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /v1/projects/p/operations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"operationId\"",
        )
        .unwrap();
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"status\":\"DEADLINE_EXCEEDED\""), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _) = call(&server.endpoint, "GET", "/v1/projects/p/operations", None);
    assert_eq!(status, 200, "nothing was created, and the server serves on");
}

/// Past the bound on blocked calls, a Wait is RESOURCE_EXHAUSTED at once;
/// everything else is served meanwhile.
#[test]
fn waiters_past_the_bound_are_refused() {
    let server = Server::start(&["--max-waiters", "20", "--max-wait", "30s"]);
    call(
        &server.endpoint,
        "POST",
        "/v1/projects/p/operations",
        Some(&json!({"operationId": "slow"})),
    );
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let endpoint = server.endpoint.clone();
            std::thread::spawn(move || {
                call(
                    &endpoint,
                    "POST",
                    "/v1/projects/p/operations/slow:wait",
                    Some(&json!({"timeout": "20s"})),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, refused) = call(
        &server.endpoint,
        "POST",
        "/v1/projects/p/operations/slow:wait",
        Some(&json!({"timeout": "20s"})),
    );
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["status"], "RESOURCE_EXHAUSTED", "{refused}");
    let (status, _) = call(&server.endpoint, "GET", "/v1/projects/p/operations/slow", None);
    assert_eq!(status, 200, "Get is still served");
    let (status, _) = call(
        &server.endpoint,
        "POST",
        "/v1/projects/p/operations/slow:complete",
        Some(&json!({"response": {}})),
    );
    assert_eq!(status, 200);
    for waiter in waiters {
        let (status, op): (u16, Value) = waiter.join().unwrap();
        assert_eq!((status, &op["done"]), (200, &json!(true)), "{op}");
    }
}
