//! Watch streams over REST (Server-Sent Events) and gRPC: the snapshot,
//! changes as they commit, resuming from the last event, filters and
//! grants, heartbeats, shutdown, and clients that read too slowly.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::TestServer;
use longrun_proto::longrun::v1::WatchOperationsRequest;
use longrun_proto::longrun::v1::watch_client::WatchClient;
use longrun_proto::longrun::v1::watch_operations_response::Event as WireEvent;

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    kind: String,
    id: Option<String>,
    data: Value,
}

impl Sse {
    fn name(&self) -> &str {
        self.data["operation"]["name"]
            .as_str()
            .or_else(|| self.data["name"].as_str())
            .unwrap_or_default()
    }
}

/// Reads a watch stream's events as they arrive.
struct Watching {
    response: reqwest::Response,
    buffer: String,
    /// The id of the last event with one (what EventSource would resume from).
    last_id: Option<String>,
}

impl Watching {
    async fn open(server: &TestServer, path: &str, last_event_id: Option<&str>) -> Self {
        let mut request = server.http.get(format!("{}/v1/{path}", server.endpoint));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
            last_id: None,
        }
    }

    /// The next event (heartbeats included, as kind `heartbeat`), or `None`
    /// at the end of the stream.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    kind: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut comment = false;
                for line in block.lines() {
                    if let Some(kind) = line.strip_prefix("event: ") {
                        event.kind = kind.to_owned();
                    } else if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(data).unwrap();
                    } else if line.starts_with(':') {
                        comment = true;
                    }
                }
                if event.id.is_some() {
                    self.last_id.clone_from(&event.id);
                }
                if comment && event.data.is_null() {
                    event.kind = "heartbeat".into();
                }
                return Some(event);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events up to and including the first of `kind`.
    async fn until(&mut self, kind: &str) -> Vec<Sse> {
        let mut events = Vec::new();
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before {kind}: {:?}", kinds_and_names(&events)));
            let done = event.kind == kind;
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// The next event that is not a heartbeat.
    async fn next_change(&mut self) -> Sse {
        loop {
            let event = self.next().await.expect("a change");
            if event.kind != "heartbeat" {
                return event;
            }
        }
    }
}

fn kinds_and_names(events: &[Sse]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|event| {
            (
                event.kind.clone(),
                event.name().rsplit('/').next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_watch_shows_the_snapshot_then_each_change_as_it_commits() {
    let server = TestServer::start().await;
    for id in ["a", "b"] {
        server
            .post("projects/w/operations", json!({"operationId": id, "verb": "import"}))
            .await;
    }
    let mut watch = Watching::open(&server, "projects/w/operations:watch", None).await;
    let snapshot = watch.until("synced").await;
    assert_eq!(
        kinds_and_names(&snapshot),
        [
            ("operation".into(), "b".into()),
            ("operation".into(), "a".into()),
            ("synced".into(), String::new())
        ],
        "newest first, then synced"
    );
    let first = &snapshot[0].data;
    assert_eq!(first["operation"]["done"], Value::Null);
    assert_eq!(first["standard"]["state"], "RUNNING");
    assert_eq!(first["standard"]["verb"], "import");

    server
        .post("projects/w/operations/a:update", json!({"progressPercent": 40}))
        .await;
    let progress = watch.next_change().await;
    assert_eq!(
        (progress.kind.as_str(), progress.name()),
        ("operation", "projects/w/operations/a")
    );
    assert_eq!(progress.data["standard"]["progressPercent"], 40);

    server.post("projects/w/operations", json!({"operationId": "c"})).await;
    assert_eq!(watch.next_change().await.name(), "projects/w/operations/c");
    // Elsewhere: not this stream's business.
    server
        .post("projects/other/operations", json!({"operationId": "x"}))
        .await;
    server
        .post("projects/w/operations/c:complete", json!({"response": {"rows": 2}}))
        .await;
    let done = watch.next_change().await;
    assert_eq!(done.name(), "projects/w/operations/c");
    assert_eq!(done.data["operation"]["done"], true);
    assert_eq!(done.data["operation"]["response"]["value"]["rows"], 2);

    let deleted = server
        .http
        .delete(format!("{}/v1/projects/w/operations/b", server.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let removed = watch.next_change().await;
    assert_eq!(
        (removed.kind.as_str(), removed.name()),
        ("removed", "projects/w/operations/b")
    );
    assert_eq!(removed.data["deleted"], true);
    let ids: Vec<u64> = [&progress, &done, &removed]
        .iter()
        .map(|event| event.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.is_sorted(), "ids only rise: {ids:?}");
}

/// A client that reconnects with the last id it saw gets what it missed,
/// not the snapshot again.
#[tokio::test]
async fn a_reconnecting_client_resumes_where_it_left_off() {
    let server = TestServer::start().await;
    server.post("projects/r/operations", json!({"operationId": "a"})).await;
    let mut watch = Watching::open(&server, "projects/r/operations:watch", None).await;
    watch.until("synced").await;
    server.post("projects/r/operations", json!({"operationId": "b"})).await;
    watch.next_change().await;
    let resume_at = watch.last_id.clone().unwrap();
    drop(watch);

    // Missed while away.
    server.post("projects/r/operations", json!({"operationId": "c"})).await;
    server
        .post("projects/r/operations/a:complete", json!({"response": {}}))
        .await;
    let mut watch = Watching::open(&server, "projects/r/operations:watch", Some(&resume_at)).await;
    let replayed = watch.until("synced").await;
    assert_eq!(
        kinds_and_names(&replayed),
        [
            ("operation".into(), "c".into()),
            ("operation".into(), "a".into()),
            ("synced".into(), String::new())
        ],
        "only what changed after {resume_at}"
    );
    assert_eq!(replayed[1].data["operation"]["done"], true);
    // And live again.
    server.post("projects/r/operations", json!({"operationId": "d"})).await;
    assert_eq!(watch.next_change().await.name(), "projects/r/operations/d");

    // A position the server never gave: start over with a snapshot.
    let mut watch = Watching::open(&server, "projects/r/operations:watch", Some("999999")).await;
    let events = watch.until("synced").await;
    assert_eq!(events[0].kind, "reset");
    assert_eq!(events[0].id, None, "a reset moves no resume position");
    assert_eq!(
        events.len(),
        1 + 4 + 1,
        "reset, the four operations, synced: {:?}",
        kinds_and_names(&events)
    );
}

/// The filter decides what the stream shows; an operation that stops
/// matching is removed from the view (not deleted).
#[tokio::test]
async fn a_filtered_watch_shows_only_what_matches() {
    let server = TestServer::start().await;
    server.post("projects/f/operations", json!({"operationId": "a"})).await;
    let filter = "done%20%3D%20false";
    let mut watch = Watching::open(&server, &format!("projects/f/operations:watch?filter={filter}"), None).await;
    assert_eq!(watch.until("synced").await.len(), 2);
    server
        .post("projects/f/operations/a:complete", json!({"response": {}}))
        .await;
    let left = watch.next_change().await;
    assert_eq!(
        (left.kind.as_str(), left.name(), &left.data["deleted"]),
        ("removed", "projects/f/operations/a", &json!(false))
    );

    let (status, error) = server.get("projects/f/operations:watch?filter=done%20%3D%3D").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["details"][0]["reason"], "INVALID_FILTER");
}

/// A quiet stream still says it is alive; a shutdown ends every stream
/// with UNAVAILABLE, so clients reconnect elsewhere.
#[tokio::test]
async fn quiet_streams_beat_and_a_shutdown_ends_them() {
    let mut server = TestServer::start_with(|config| {
        config.limits.watch_heartbeat = Duration::from_millis(200);
    })
    .await;
    let mut watch = Watching::open(&server, "projects/h/operations:watch", None).await;
    watch.until("synced").await;
    let beat = watch.next().await.unwrap();
    assert_eq!(beat.kind, "heartbeat");
    assert!(beat.id.is_some(), "a heartbeat moves the resume position");

    server.stop.take().unwrap().send(()).unwrap();
    let end = watch.until("end").await.pop().unwrap();
    assert_eq!(end.data["error"]["status"], "UNAVAILABLE");
    assert!(watch.next().await.is_none(), "nothing after the end");
}

/// A client that stops reading cannot make the server hold more: its
/// stream ends, and it resumes from the last event it read.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_can_resume() {
    let server = TestServer::start_with(|config| {
        config.limits.watch_buffer = 8;
    })
    .await;
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!("GET /v1/projects/slow/operations:watch HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Enough to fill the socket's buffers many times over.
    let big = "x".repeat(64 * 1024);
    for i in 0..200 {
        let (status, body) = server
            .post(
                "projects/slow/operations",
                json!({"operationId": format!("op{i}"), "metadata": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"padding": big}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Read nothing for a while, then everything: the stream has ended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the server ended the stream of a client that stopped reading"
    );
    // What an SSE client would have dispatched: whole events only.
    let body = dechunk(&received);
    let complete = &body[..body.rfind("\n\n").map_or(0, |end| end + 2)];
    let events: Vec<&str> = complete.split("\n\n").filter(|block| !block.is_empty()).collect();
    let operations = events
        .iter()
        .filter(|block| block.starts_with("event: operation"))
        .count();
    assert!(
        operations < 200,
        "the stream ended before all 200 operations: {operations}"
    );
    let field = |block: &str, name: &str| {
        block
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
    };
    let last_id = events
        .iter()
        .rev()
        .find_map(|block| field(block, "id: "))
        .expect("some events arrived");
    let mut seen: std::collections::HashSet<String> = events
        .iter()
        .filter_map(|block| field(block, "data: "))
        .filter_map(|data| serde_json::from_str::<Value>(&data).ok())
        .filter_map(|data| data["operation"]["name"].as_str().map(str::to_owned))
        .collect();

    // Resuming from the last event read gets the rest.
    let mut watch = Watching::open(&server, "projects/slow/operations:watch", Some(&last_id)).await;
    let rest = watch.until("synced").await;
    seen.extend(
        rest.iter()
            .map(|event| event.name().to_owned())
            .filter(|name| !name.is_empty()),
    );
    let missing: Vec<String> = (0..200)
        .map(|i| format!("projects/slow/operations/op{i}"))
        .filter(|name| !seen.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "every operation, before the cut or after the resume; missing {missing:?} (resumed after {last_id}, {} events then {:?})",
        events.len(),
        kinds_and_names(&rest)
    );
}

/// The body of a raw HTTP/1.1 response with chunked encoding, as far as
/// it arrived.
fn dechunk(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let Some((_, mut rest)) = text.split_once("\r\n\r\n") else {
        return String::new();
    };
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            body.push_str(&after[..after.len().min(size)]);
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

/// Over gRPC: the same stream, with resume tokens.
#[tokio::test]
async fn grpc_watch_streams_the_same_events() {
    let server = TestServer::start().await;
    server.post("projects/g/operations", json!({"operationId": "a"})).await;
    let mut client = WatchClient::connect(server.endpoint.clone()).await.unwrap();
    let request = WatchOperationsRequest {
        name: "projects/g".into(),
        ..Default::default()
    };
    let mut stream = client.watch_operations(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(WireEvent::Operation(view)) = first.event else {
        panic!("{first:?}")
    };
    assert_eq!(view.operation.unwrap().name, "projects/g/operations/a");
    assert_eq!(view.standard.unwrap().state, 2, "RUNNING");
    let synced = stream.message().await.unwrap().unwrap();
    assert!(matches!(synced.event, Some(WireEvent::Synced(_))), "{synced:?}");

    server
        .post("projects/g/operations/a:update", json!({"progressPercent": 70}))
        .await;
    let changed = stream.message().await.unwrap().unwrap();
    let Some(WireEvent::Operation(view)) = changed.event else {
        panic!("{changed:?}")
    };
    assert_eq!(view.standard.unwrap().progress_percent, 70);
    let token = changed.resume_token;
    drop(stream);

    server.post("projects/g/operations", json!({"operationId": "b"})).await;
    let request = WatchOperationsRequest {
        name: "projects/g".into(),
        resume_token: token,
        ..Default::default()
    };
    let mut stream = client.watch_operations(request).await.unwrap().into_inner();
    let missed = stream.message().await.unwrap().unwrap();
    let Some(WireEvent::Operation(view)) = missed.event else {
        panic!("{missed:?}")
    };
    assert_eq!(view.operation.unwrap().name, "projects/g/operations/b");

    let bad = WatchOperationsRequest {
        name: "projects/g".into(),
        filter: "done ==".into(),
        ..Default::default()
    };
    let status = client.watch_operations(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// `?view=longrun` gives the standard fields of an operation whose producer
/// uses its own metadata type; without it, Google's shape is untouched.
#[tokio::test]
async fn the_longrun_view_shows_standard_fields_under_custom_metadata() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post(
            "projects/v/operations",
            json!({
                "operationId": "custom",
                "verb": "import",
                "metadata": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"phase": "reading"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, _) = server
        .post(
            "projects/v/operations/custom:update",
            json!({"progressPercent": 40, "statusDetail": "row 400"}),
        )
        .await;
    assert_eq!(status, 200);

    let (_, plain) = server.get("projects/v/operations/custom").await;
    assert_eq!(plain["metadata"]["@type"], "type.googleapis.com/google.protobuf.Struct");
    assert!(plain.get("standard").is_none(), "{plain}");

    let (status, view) = server.get("projects/v/operations/custom?view=longrun").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["operation"], plain,
        "the view carries the operation as Google's clients get it"
    );
    assert_eq!(view["standard"]["state"], "RUNNING");
    assert_eq!(view["standard"]["progressPercent"], 40);
    assert_eq!(view["standard"]["statusDetail"], "row 400");
    assert_eq!(view["standard"]["verb"], "import");

    let (_, page) = server.get("projects/v/operations?view=longrun").await;
    assert_eq!(page["operations"][0]["standard"]["verb"], "import", "{page}");
    let (_, waited) = server
        .post(
            "projects/v/operations/custom:wait?view=longrun",
            json!({"timeout": "0s"}),
        )
        .await;
    assert_eq!(waited["standard"]["progressPercent"], 40, "{waited}");

    let (status, refused) = server.get("projects/v/operations/custom?view=full").await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["details"][0]["reason"], "INVALID_VIEW", "{refused}");
}

/// An invalid filter names its column in the error's metadata, for a
/// console to point at.
#[tokio::test]
async fn filter_errors_carry_their_column() {
    let server = TestServer::start().await;
    let (status, body) = server.get("projects/v/operations?filter=done%20%3D%20maybe").await;
    assert_eq!(status, 400);
    let info = &body["error"]["details"][0];
    assert_eq!(info["reason"], "INVALID_FILTER", "{body}");
    assert_eq!(info["metadata"]["column"], "8", "{body}");
}
