//! Several `longrun serve` processes on one fresh PostgreSQL database
//! behave as one service: what one node commits, the others serve, wait
//! on, claim and page through.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, binary, call};
use longrun_store_postgres::testing::TestDatabase;

const PARENT: &str = "/v1/projects/demo/locations/us/operations";

fn nodes(database: &TestDatabase, count: usize) -> Vec<Server> {
    (0..count).map(|_| Server::start_on(&database.url, &[])).collect()
}

fn create(node: &Server, id: &str, body: Value) -> Value {
    let mut body = body;
    body["operationId"] = json!(id);
    let (status, created) = call(&node.endpoint, "POST", PARENT, Some(&body));
    assert_eq!(status, 200, "{created}");
    created
}

fn path(id: &str) -> String {
    format!("{PARENT}/{id}")
}

fn claim(node: &Server, queue: &str, wait: &str, lease: &str) -> Value {
    let (status, claimed) = call(
        &node.endpoint,
        "POST",
        "/v1/projects/demo/operations:claim",
        Some(&json!({"queue": queue, "worker": "test", "wait": wait, "leaseDuration": lease})),
    );
    assert_eq!(status, 200, "{claimed}");
    claimed
}

fn complete(node: &Server, claimed: &Value) -> (u16, Value) {
    let name = claimed["operation"]["name"].as_str().unwrap();
    call(
        &node.endpoint,
        "POST",
        &format!("/v1/{name}:complete"),
        Some(&json!({"leaseToken": claimed["leaseToken"], "response": {"ok": true}})),
    )
}

#[test]
fn what_one_node_creates_every_node_serves() {
    let database = TestDatabase::create();
    let [a, b, c] = <[Server; 3]>::try_from(nodes(&database, 3)).unwrap();
    let created = create(&a, "shared", json!({"verb": "import"}));
    for node in [&b, &c] {
        let (status, got) = call(&node.endpoint, "GET", &path("shared"), None);
        assert_eq!((status, &got), (200, &created));
    }
    let (_, listed) = call(&c.endpoint, "GET", PARENT, None);
    assert_eq!(listed["operations"][0]["name"], created["name"]);
    // An operation id taken on one node is taken on all.
    let (status, refused) = call(&b.endpoint, "POST", PARENT, Some(&json!({"operationId": "shared"})));
    assert_eq!(status, 409, "{refused}");
    // And a request id answers with the same operation on any node.
    let first = create(&a, "r1", json!({"requestId": "import-7"}));
    let again = create(&b, "r2", json!({"requestId": "import-7"}));
    assert_eq!(again["name"], first["name"]);
}

/// Wait on B returns within 50 ms of the completion on A: the change
/// reaches B by NOTIFY, not by polling. Five rounds; the median must be
/// under 50 ms and none may be slow enough to look like polling.
#[test]
fn wait_on_one_node_returns_when_another_completes() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    let mut lags = Vec::new();
    for round in 0..5 {
        let id = format!("wait-{round}");
        create(&a, &id, json!({}));
        let endpoint = b.endpoint.clone();
        let wait_path = format!("{}:wait", path(&id));
        let waiter = std::thread::spawn(move || {
            let answer = call(&endpoint, "POST", &wait_path, Some(&json!({"timeout": "20s"})));
            (answer, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        let (status, done) = call(
            &a.endpoint,
            "POST",
            &format!("{}:complete", path(&id)),
            Some(&json!({"response": {"round": round}})),
        );
        let completed = Instant::now();
        assert_eq!(status, 200, "{done}");
        let ((status, waited), returned) = waiter.join().unwrap();
        assert_eq!(status, 200, "{waited}");
        assert_eq!(waited["done"], true, "{waited}");
        lags.push(returned.saturating_duration_since(completed));
    }
    lags.sort();
    assert!(
        lags[2] < Duration::from_millis(50),
        "median lag {:?} ({lags:?})",
        lags[2]
    );
    assert!(
        lags[4] < Duration::from_millis(500),
        "slowest lag {:?} ({lags:?})",
        lags[4]
    );
}

#[test]
fn a_claim_waiting_on_one_node_wakes_for_a_create_on_another() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    let endpoint = b.endpoint.clone();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let (status, claimed) = call(
            &endpoint,
            "POST",
            "/v1/projects/demo/operations:claim",
            Some(&json!({"queue": "wake", "worker": "w", "wait": "20s"})),
        );
        (status, claimed, Instant::now(), started)
    });
    std::thread::sleep(Duration::from_millis(500));
    create(&a, "work", json!({"queue": "wake"}));
    let created = Instant::now();
    let (status, claimed, returned, started) = waiting.join().unwrap();
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(
        claimed["operation"]["name"],
        "projects/demo/locations/us/operations/work"
    );
    let lag = returned.saturating_duration_since(created);
    assert!(lag < Duration::from_millis(500), "woken {lag:?} after the create");
    assert!(returned - started < Duration::from_secs(5));
}

#[test]
fn four_workers_on_two_nodes_drain_sixty_operations_each_once() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    for i in 0..60 {
        let node = if i % 2 == 0 { &a } else { &b };
        create(node, &format!("job-{i}"), json!({"queue": "drain"}));
    }
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let endpoints = [a.endpoint.clone(), b.endpoint.clone()];
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (endpoint, claimed) = (endpoints[w % 2].clone(), claimed.clone());
            std::thread::spawn(move || {
                loop {
                    let (status, got) = call(
                        &endpoint,
                        "POST",
                        "/v1/projects/demo/operations:claim",
                        Some(&json!({"queue": "drain", "worker": format!("w{w}"), "wait": "1s"})),
                    );
                    assert_eq!(status, 200, "{got}");
                    let Some(name) = got["operation"]["name"].as_str() else {
                        return;
                    };
                    claimed.lock().unwrap().push(name.to_owned());
                    let (status, done) = call(
                        &endpoint,
                        "POST",
                        &format!("/v1/{name}:complete"),
                        Some(&json!({"leaseToken": got["leaseToken"], "response": {"worker": w}})),
                    );
                    assert_eq!(status, 200, "{done}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let claimed = claimed.lock().unwrap();
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(distinct.len(), claimed.len(), "an operation was claimed twice");
    assert_eq!(claimed.len(), 60);
    let (_, listed) = call(
        &a.endpoint,
        "GET",
        &format!("{PARENT}?pageSize=100&filter=metadata.state%3DSUCCEEDED%20AND%20metadata.attempt%3D1"),
        None,
    );
    assert_eq!(listed["operations"].as_array().unwrap().len(), 60, "{listed}");
}

#[test]
fn a_page_token_from_one_node_works_on_another() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    for i in 0..7 {
        create(&a, &format!("page-{i}"), json!({}));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    for page in 0.. {
        let node = if page % 2 == 0 { &a } else { &b };
        let (status, listed) = call(
            &node.endpoint,
            "GET",
            &format!("{PARENT}?pageSize=3&pageToken={token}"),
            None,
        );
        assert_eq!(status, 200, "{listed}");
        for op in listed["operations"].as_array().unwrap() {
            seen.push(op["name"].as_str().unwrap().rsplit('/').next().unwrap().to_owned());
        }
        token = listed["nextPageToken"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("page-{i}")).collect();
    assert_eq!(seen, expected);
}

/// A node dies holding a worker's lease (kill -9): when the lease expires,
/// another node's sweep puts the operation back, and a worker on that node
/// gets it with attempt 2; the first worker's token is dead.
#[test]
fn a_lease_from_a_killed_node_passes_to_a_worker_on_another() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    create(&a, "orphan", json!({"queue": "crash"}));
    let first = claim(&a, "crash", "0s", "2s");
    assert_eq!(first["attempt"], 1);
    drop(a.kill());
    let second = claim(&b, "crash", "20s", "30s");
    assert_eq!(
        second["operation"]["name"],
        "projects/demo/locations/us/operations/orphan"
    );
    assert_eq!(second["attempt"], 2);
    let (status, refused) = complete(&b, &first);
    assert_eq!(status, 409, "the dead worker's lease is fenced off: {refused}");
    let (status, done) = complete(&b, &second);
    assert_eq!((status, &done["done"]), (200, &json!(true)), "{done}");
}

/// A cancel on A reaches the worker that heartbeats through B, and a real
/// `longrun worker` connected to B stops its command.
#[test]
fn a_cancel_on_one_node_reaches_a_worker_heartbeating_through_another() {
    let database = TestDatabase::create();
    let [a, b] = <[Server; 2]>::try_from(nodes(&database, 2)).unwrap();
    create(&a, "long", json!({"queue": "cancel"}));
    let claimed = claim(&b, "cancel", "0s", "30s");
    let beat = |node: &Server| {
        call(
            &node.endpoint,
            "POST",
            &format!("{}:update", path("long")),
            Some(&json!({"leaseToken": claimed["leaseToken"], "progressPercent": 10})),
        )
    };
    let (_, before) = beat(&b);
    assert_ne!(before["cancelRequested"], json!(true), "{before}");
    let (status, _) = call(
        &a.endpoint,
        "POST",
        &format!("{}:cancel", path("long")),
        Some(&json!({})),
    );
    assert_eq!(status, 200);
    let (_, after) = beat(&b);
    assert_eq!(after["cancelRequested"], json!(true), "{after}");

    // The same through a real worker process on B.
    create(&a, "sleeper", json!({"queue": "sleepers"}));
    let mut worker = Command::new(binary())
        .args([
            "worker",
            "--endpoint",
            &b.endpoint,
            "--queue",
            "sleepers",
            "--lease",
            "5s",
        ])
        .args([
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            "echo 'progress: 5 started'; sleep 60; echo '{}'",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = wait_for(&a, "sleeper", |op| op["metadata"]["progressPercent"] == 5);
    assert_eq!(running["metadata"]["state"], "RUNNING");
    let cancelled_at = Instant::now();
    call(
        &a.endpoint,
        "POST",
        &format!("{}:cancel", path("sleeper")),
        Some(&json!({})),
    );
    let done = wait_for(&a, "sleeper", |op| op["done"] == true);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(done["error"]["code"], 1, "{done}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "the worker stopped its command, well before the cancel grace"
    );
}

/// A node whose wall clock is two minutes ahead (libfaketime) measures
/// leases by the database's clock like the others: it neither expires a
/// live lease early nor refuses its heartbeats.
#[test]
fn a_node_with_a_skewed_clock_keeps_leases() {
    if Command::new("faketime").arg("--version").output().is_err() {
        panic!("this test needs faketime (apt install faketime; .ci/run installs it)");
    }
    let database = TestDatabase::create();
    let a = Server::start_on(&database.url, &[]);
    let mut skewed = Command::new("faketime");
    skewed
        .args(["-f", "+120s", binary()])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let b = Server::spawn(skewed, &database.url, &[]);
    create(&a, "leased", json!({"queue": "skew"}));
    let claimed = claim(&a, "skew", "0s", "30s");
    // B's sweeper runs every 500 ms; by its wall clock the lease is long
    // gone.
    std::thread::sleep(Duration::from_secs(2));
    let (_, op) = call(&b.endpoint, "GET", &path("leased"), None);
    assert_eq!(op["metadata"]["state"], "RUNNING", "{op}");
    assert_eq!(op["metadata"]["attempt"], 1, "{op}");
    let (status, beat) = call(
        &b.endpoint,
        "POST",
        &format!("{}:update", path("leased")),
        Some(&json!({"leaseToken": claimed["leaseToken"]})),
    );
    assert_eq!(status, 200, "a heartbeat through the skewed node holds: {beat}");
    let time = |value: &Value| humantime::parse_rfc3339(value.as_str().unwrap()).unwrap();
    let ahead = time(&beat["leaseExpireTime"])
        .duration_since(time(&op["metadata"]["createTime"]))
        .unwrap();
    assert!(
        ahead < Duration::from_secs(60),
        "the lease runs 30 s from the database's now, not from the node's: {ahead:?}"
    );
    assert_eq!(complete(&b, &claimed).0, 200);
}

/// The database goes away under a node: calls are `UNAVAILABLE` (which
/// Google's clients retry) with nothing of the database's text, each fault
/// is logged with its request id and cause, readiness fails, and all of it
/// recovers when the database is back.
#[test]
fn a_lost_database_is_unavailable_logged_and_recovered() {
    let database = TestDatabase::create();
    let node = Server::start_on(&database.url, &[]);
    create(&node, "kept", json!({}));
    database.cut_off();
    let (status, refused) = call(&node.endpoint, "GET", &path("kept"), None);
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["status"], "UNAVAILABLE", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("accepting") && !message.contains(database.name()),
        "{message}"
    );
    let request_id = refused["error"]["details"][0]["metadata"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    let logged = |line: &str| {
        // The cause is the database's (`db error: FATAL: terminating
        // connection…`) or the driver's (`connection closed`), as the
        // connection happened to see it go.
        line.contains(&request_id)
            && line.contains("server fault")
            && (line.contains("\"cause\":\"db error: FATAL") || line.contains("\"cause\":\"connection closed"))
    };
    // The log is read from the server's stderr by another thread.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.log.lock().unwrap().iter().any(|line| logged(line)) {
        assert!(
            Instant::now() < deadline,
            "the fault is logged with request id {request_id} and its cause: {:?}",
            node.log
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(&request_id))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = call(&node.endpoint, "GET", "/readyz", None);
    assert_eq!(status, 503, "not ready without its database");
    database.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, got) = call(&node.endpoint, "GET", &path("kept"), None);
        if status == 200 {
            assert_eq!(got["name"], "projects/demo/locations/us/operations/kept");
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {status} {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(call(&node.endpoint, "GET", "/readyz", None).0, 200);
}

fn wait_for(node: &Server, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, op) = call(&node.endpoint, "GET", &path(id), None);
        if until(&op) {
            return op;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {op}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A watch on one node shows what another commits, and a client resumes
/// on a third node from the last event it read on the first.
#[test]
fn a_watch_on_one_node_follows_writes_on_another_and_resumes_on_a_third() {
    let database = TestDatabase::create();
    let [a, b, c]: [Server; 3] = nodes(&database, 3).try_into().ok().unwrap();
    let watch_path = "/v1/projects/demo/locations/us/operations:watch";
    create(&a, "before", json!({}));
    let mut watch = crate::support::Watch::open(&b.endpoint, watch_path, None);
    let snapshot = watch.next_change();
    assert_eq!(
        snapshot.data["operation"]["name"],
        "projects/demo/locations/us/operations/before"
    );
    assert_eq!(watch.next_change().kind, "synced");

    let started = Instant::now();
    create(&a, "live", json!({"verb": "import"}));
    // The creation before may come again (a node announces what committed
    // just before a stream began); an event is the operation as it is.
    let live = loop {
        let event = watch.next_change();
        if event.data["operation"]["name"] != "projects/demo/locations/us/operations/before" {
            break event;
        }
    };
    assert_eq!(live.data["operation"]["name"], path("live").trim_start_matches("/v1/"));
    assert_eq!(live.data["standard"]["verb"], "import");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "pushed, not polled late: {:?}",
        started.elapsed()
    );
    let resume_at = watch.last_id.clone().expect("a live event carries an id");
    drop(watch);

    // Written on A while the client is away; it comes back through C.
    let (status, _) = call(
        &a.endpoint,
        "POST",
        &format!("{}:complete", path("live")),
        Some(&json!({"response": {}})),
    );
    assert_eq!(status, 200);
    create(&a, "missed", json!({}));
    let mut watch = crate::support::Watch::open(&c.endpoint, watch_path, Some(&resume_at));
    // C replays what its feed has, then `synced`; a change it has yet to
    // hear of (committed on A a moment ago) follows as a live event.
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let event = watch.next_change();
        if event.kind == "synced" {
            continue;
        }
        replayed.push((
            event.kind,
            event.data["operation"]["name"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
            event.data["operation"]["done"] == json!(true),
        ));
    }
    assert_eq!(
        replayed,
        [
            ("operation".to_owned(), "live".to_owned(), true),
            ("operation".to_owned(), "missed".to_owned(), false)
        ],
        "only what changed after the last event read, not the snapshot again"
    );
}

/// The gRPC watch on one node streams what another node writes.
#[test]
fn a_grpc_watch_on_one_node_follows_writes_on_another() {
    use longrun_proto::longrun::v1::WatchOperationsRequest;
    use longrun_proto::longrun::v1::watch_client::WatchClient;
    use longrun_proto::longrun::v1::watch_operations_response::Event;

    let database = TestDatabase::create();
    let [a, b]: [Server; 2] = nodes(&database, 2).try_into().ok().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = WatchClient::connect(b.endpoint.clone()).await.unwrap();
        let mut stream = client
            .watch_operations(WatchOperationsRequest {
                name: "projects/demo/locations/us".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(matches!(first.event, Some(Event::Synced(_))), "{first:?}");
        let started = Instant::now();
        create(&a, "over-grpc", json!({"verb": "export"}));
        let event = loop {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            if let Some(Event::Operation(view)) = message.event {
                break (view, message.resume_token);
            }
        };
        let (view, resume_token) = event;
        assert_eq!(
            view.operation.unwrap().name,
            "projects/demo/locations/us/operations/over-grpc"
        );
        assert_eq!(view.standard.unwrap().verb, "export");
        assert!(!resume_token.is_empty(), "a live event can be resumed from");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    });
}
