//! List latency at depth: one page of 100 with an indexed filter, first
//! page vs the 1000th, over a large store, through the real REST server.
//!
//! `cargo bench -p longrun --bench list -- [--operations N] [--samples K]`
//!
//! The store is built once (through the `Store` API, as the server writes
//! it) under `target/bench/` and reused by later runs. Figures go into
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A failing bench should stop loudly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use longrun_client::{Client, ListOptions};
use longrun_store::{Completion, ListQuery, NewOperation, Store};
use longrun_store_sqlite::SqliteStore;
use longrun_types::filter::Filter;
use longrun_types::{Code, OperationName, Outcome, Parent, Payload, Status};

const PARENT: &str = "projects/bench/locations/us";
const VERBS: [&str; 4] = ["import", "export", "train", "deploy"];
const PAGE: i32 = 100;
const DEPTH: usize = 1000;

/// Operation `i`: verb `VERBS[i % 4]`; every even one succeeded, every
/// tenth-plus-one failed with NOT_FOUND, the rest are running.
fn outcome(i: usize) -> Option<Outcome> {
    if i.is_multiple_of(2) {
        Some(Outcome::Response(Payload {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: Vec::new().into(),
        }))
    } else if i % 10 == 1 {
        Some(Outcome::Error(Status::new(Code::NotFound, "no such file")))
    } else {
        None
    }
}

async fn populate(store: Arc<SqliteStore>, operations: usize) {
    let parent = Parent::parse(PARENT).unwrap();
    let existing = store
        .list(&ListQuery {
            parent: parent.clone(),
            filter: Filter::default(),
            after: None,
            limit: 1,
            within: None,
        })
        .await
        .unwrap();
    if !existing.is_empty() {
        eprintln!("reusing the populated store");
        return;
    }
    let started = Instant::now();
    let t0 = SystemTime::now();
    const BATCH: usize = 2000;
    for first in (0..operations).step_by(BATCH) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in first..(first + BATCH).min(operations) {
            let store = store.clone();
            let parent = parent.clone();
            tasks.spawn(async move {
                let name = OperationName::new(parent, &format!("op-{i:07}")).unwrap();
                let now = t0 + Duration::from_millis(i as u64);
                let new = NewOperation {
                    verb: VERBS[i % VERBS.len()].into(),
                    target: format!("datasets/d{}", i % 1000),
                    ..NewOperation::new(name.clone(), now)
                };
                store.create(new).await.unwrap();
                if let Some(outcome) = outcome(i) {
                    store.complete(&name, Completion::new(outcome), now).await.unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        if (first + BATCH).is_multiple_of(100_000) {
            eprintln!("  {} operations in {:.0?}", first + BATCH, started.elapsed());
        }
    }
    eprintln!("populated {operations} operations in {:.1?}", started.elapsed());
}

/// The creation time of the newest operation.
async fn store_newest(path: &std::path::Path) -> SystemTime {
    let store = SqliteStore::open(path).unwrap();
    let query = ListQuery {
        parent: Parent::parse(PARENT).unwrap(),
        filter: Filter::default(),
        after: None,
        limit: 1,
        within: None,
    };
    store.list(&query).await.unwrap()[0].operation.create_time
}

struct Figures {
    median: Duration,
    p95: Duration,
}

async fn sample(client: &Client, options: &ListOptions, samples: usize) -> Figures {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let page = client.list(PARENT, options).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(
            page.operations.len(),
            PAGE as usize,
            "a full page for {:?}",
            options.filter
        );
    }
    times.sort();
    Figures {
        median: times[samples / 2],
        p95: times[(samples * 95 / 100).min(samples - 1)],
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut operations, mut samples) = (1_000_000usize, 50usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--operations" => operations = args.next().unwrap().parse().unwrap(),
            "--samples" => samples = args.next().unwrap().parse().unwrap(),
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("list-{operations}.db"));
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    populate(store.clone(), operations).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let config = longrun_server::Config::new(store);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(longrun_server::run(listener, config, stop.clone().cancelled_owned()));
    let client = Client::new(&endpoint, None).unwrap();

    println!("{operations} operations, page size {PAGE}, {samples} samples per figure, REST over loopback");
    println!();
    println!("| filter | matches | page 1 median | page 1 p95 | page {DEPTH} median | page {DEPTH} p95 |");
    println!("|---|---|---|---|---|---|");
    // Operation i was created at t0 + i ms: cut at the newest minus 150 s
    // and minus 500 s.
    let newest = store_newest(&path).await;
    let cut = |seconds: u64| humantime::format_rfc3339_micros(newest - Duration::from_secs(seconds)).to_string();
    let recent = format!("metadata.createTime > \"{}\"", cut(150));
    let older = format!("metadata.createTime <= \"{}\"", cut(500));
    let filters = [
        (String::new(), operations),
        ("metadata.state = SUCCEEDED".into(), operations / 2),
        ("done = false".into(), operations * 2 / 5),
        ("metadata.verb = import".into(), operations / 4),
        ("error.code = NOT_FOUND".into(), operations / 10),
        (recent, 150_000.min(operations)),
        (older, operations.saturating_sub(500_000)),
    ];
    for (filter, matches) in filters {
        let filter = filter.as_str();
        let mut options = ListOptions {
            filter: filter.into(),
            page_size: PAGE,
            page_token: String::new(),
        };
        let shown = if filter.is_empty() {
            "(none)".to_owned()
        } else {
            format!("`{filter}`")
        };
        let first = sample(&client, &options, samples).await;
        if matches < PAGE as usize * DEPTH {
            println!(
                "| {shown} | {matches} | {} | {} | (fewer than {DEPTH} pages) | |",
                millis(first.median),
                millis(first.p95)
            );
            continue;
        }
        for _ in 1..DEPTH {
            let page = client.list(PARENT, &options).await.unwrap();
            options.page_token = page.next_page_token;
        }
        let deep = sample(&client, &options, samples).await;
        println!(
            "| {shown} | {matches} | {} | {} | {} | {} |",
            millis(first.median),
            millis(first.p95),
            millis(deep.median),
            millis(deep.p95)
        );
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}
