//! `serve --tokens FILE` as an operator uses it: tokens made by `longrun
//! token new`, the CLI's `--token`, SIGHUP reloading the file on a live
//! connection, and one audit line per change.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Server, binary};

/// `longrun token new`: the secret (stderr) and the `[[token]]` entry
/// (stdout, ready to append).
fn new_token(name: &str, grant: &str) -> (String, String) {
    let output = Command::new(binary())
        .args(["token", "new", "--name", name, "--grant", grant])
        .output()
        .unwrap();
    assert!(output.status.success());
    let secret = String::from_utf8(output.stderr).unwrap().trim().to_owned();
    let entry = String::from_utf8(output.stdout).unwrap();
    assert!(
        entry.contains("[[token]]") && !entry.contains(&secret),
        "the file gets only the hash"
    );
    (secret, entry)
}

/// One keep-alive HTTP/1.1 connection.
struct Connection(BufReader<TcpStream>);

impl Connection {
    fn open(endpoint: &str) -> Self {
        let stream = TcpStream::connect(endpoint.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self(BufReader::new(stream))
    }

    /// GET `path` with `token`; the status.
    fn get(&mut self, path: &str, token: &str) -> u16 {
        write!(
            self.0.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut status_line = String::new();
        self.0.read_line(&mut status_line).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        status_line[9..12].parse().unwrap()
    }
}

#[test]
fn tokens_reload_on_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let (old, old_entry) = new_token("ops", "projects/demo=admin");
    std::fs::write(&file, &old_entry).unwrap();
    let server = Server::start(&["--tokens", file.to_str().unwrap()]);

    // The CLI sends --token; without it the server says what is missing.
    let create = |token: &str| {
        Command::new(binary())
            .args(["operations", "--endpoint", &server.endpoint, "--token", token])
            .args(["create", "projects/demo", "--operation-id", "audited"])
            .output()
            .unwrap()
    };
    let refused = create("not-a-token");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not valid"),
        "{refused:?}"
    );
    assert!(create(&old).status.success());

    let mut connection = Connection::open(&server.endpoint);
    let path = "/v1/projects/demo/operations/audited";
    assert_eq!(connection.get(path, &old), 200);
    let (new, new_entry) = new_token("ops-2", "projects/demo=viewer");
    std::fs::write(&file, &new_entry).unwrap();
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connection.get(path, &old) != 401 {
        assert!(Instant::now() < deadline, "the old token still works after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        connection.get(path, &new),
        200,
        "the new token works on the same connection"
    );

    // A broken file keeps the tokens that work.
    std::fs::write(&file, "[[token]]\nname = \"x\"\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(connection.get(path, &new), 200);

    let log = server.log.lock().unwrap().join("\n");
    let audit = log
        .lines()
        .find(|line| line.contains("\"audit\"") && line.contains("CreateOperation") && line.contains("\"ops\""))
        .unwrap_or_else(|| panic!("no audit line for the create:\n{log}"));
    assert!(audit.contains("\"outcome\":\"OK\""), "{audit}");
    assert!(log.contains("did not reload"), "a broken file is reported");
}

#[test]
fn a_public_address_is_served_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, new_token("ops", "*=admin").1).unwrap();
    let server = Server::start(&["--listen", "0.0.0.0:0", "--tokens", file.to_str().unwrap()]);
    assert!(server.endpoint.contains("0.0.0.0:"), "{}", server.endpoint);
}
