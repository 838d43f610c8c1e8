//! kill -9 at random moments under a mixed load: every acknowledged write
//! is there after the restart, and nothing is half-written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, call};

/// What an operation may look like after the crash.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Absent,
    Running(i64),
    Done(i64),
}

/// Per operation id, the states it may be in: the last acknowledged write,
/// or that and the write in flight when the server died (which may or may
/// not have committed).
type Expected = HashMap<String, Vec<State>>;

/// One client's loop of create, update, complete and delete, until `stop`.
fn load(endpoint: String, client: usize, round: usize, expected: Arc<Mutex<Expected>>, stop: Arc<AtomicBool>) {
    let mut n: i64 = 0;
    let set = |id: &str, states: Vec<State>| {
        expected.lock().unwrap().insert(id.to_owned(), states);
    };
    let send = |method: &'static str, path: String, body: Value| {
        let endpoint = endpoint.clone();
        let result = std::panic::catch_unwind(move || call(&endpoint, method, &path, Some(&body)));
        matches!(result, Ok((200, _)))
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("r{round}-c{client}-{n}");
        let name = format!("/v1/projects/crash/operations/{id}");
        // An unacknowledged create may or may not exist: not checked.
        if !send(
            "POST",
            "/v1/projects/crash/operations".into(),
            json!({"operationId": id}),
        ) {
            continue;
        }
        set(&id, vec![State::Running(0)]);
        let progress = n % 100 + 1;
        set(&id, vec![State::Running(0), State::Running(progress)]);
        if !send("POST", format!("{name}:update"), json!({"progressPercent": progress})) {
            continue;
        }
        set(&id, vec![State::Running(progress)]);
        match n % 3 {
            0 => {
                set(&id, vec![State::Running(progress), State::Done(n)]);
                if send("POST", format!("{name}:complete"), json!({"response": {"n": n}})) {
                    set(&id, vec![State::Done(n)]);
                }
            }
            1 => {
                set(&id, vec![State::Running(progress), State::Absent]);
                if send("DELETE", name, json!({})) {
                    set(&id, vec![State::Absent]);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn acknowledged_writes_survive_twenty_kill_nines() {
    let mut dir = Some(tempfile::tempdir().unwrap());
    let expected: Arc<Mutex<Expected>> = Arc::default();
    for round in 0..20 {
        let server = Server::start_in(dir.take().unwrap(), &[]);
        verify(&server, &expected.lock().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (endpoint, expected, stop) = (server.endpoint.clone(), expected.clone(), stop.clone());
                std::thread::spawn(move || load(endpoint, client, round, expected, stop))
            })
            .collect();
        // A different moment each round, mid-load.
        std::thread::sleep(Duration::from_millis(150 + (round as u64 * 37) % 250));
        dir = server.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
    }
    let server = Server::start_in(dir.take().unwrap(), &[]);
    let expected = expected.lock().unwrap();
    assert!(
        expected.len() > 200,
        "the load wrote too little to prove anything: {}",
        expected.len()
    );
    verify(&server, &expected);
}

/// Every acknowledged write is in place, and every stored operation reads
/// whole (a torn row would be refused as INTERNAL).
fn verify(server: &Server, expected: &Expected) {
    let mut stored: HashMap<String, State> = HashMap::new();
    let mut token = String::new();
    loop {
        let (status, page) = call(
            &server.endpoint,
            "GET",
            &format!("/v1/projects/crash/operations?pageSize=1000&pageToken={token}"),
            None,
        );
        assert_eq!(status, 200, "every stored operation reads whole: {page}");
        for op in page["operations"].as_array().into_iter().flatten() {
            let done = op["done"] == true;
            let outcomes = usize::from(op.get("response").is_some()) + usize::from(op.get("error").is_some());
            assert_eq!(outcomes, usize::from(done), "done with exactly one outcome: {op}");
            let id = op["name"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
            let state = if done {
                State::Done(op["response"]["value"]["n"].as_f64().unwrap_or(-1.0) as i64)
            } else {
                State::Running(op["metadata"]["progressPercent"].as_i64().unwrap_or(0))
            };
            stored.insert(id, state);
        }
        token = page["nextPageToken"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            break;
        }
    }
    for (id, states) in expected {
        let found = stored.get(id).cloned().unwrap_or(State::Absent);
        assert!(
            states.contains(&found),
            "{id} is {found:?}, but was acknowledged as one of {states:?}"
        );
    }
}
