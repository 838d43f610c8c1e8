//! The example service as its users see it: start an import over REST, read
//! the typed result over REST and gRPC, cancel a slow import.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::{Value, json};

/// The example's own types, as a gRPC client generates them (only some are used here).
#[allow(dead_code)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/example.datasets.v1.rs"));
}

struct Example {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Example {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_longrun-example-datasets"))
            .args(["--listen", "127.0.0.1:0", "--store"])
            .arg(dir.path().join("datasets.db"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let endpoint = first.trim().strip_prefix("listening on ").unwrap().to_owned();
        Self { child, endpoint, dir }
    }

    /// Writes a CSV of `rows` cities and returns its path.
    fn cities(&self, rows: usize) -> String {
        let path = self.dir.path().join(format!("cities-{rows}.csv"));
        let mut text = String::from("city,population,area\n");
        for i in 0..rows {
            text.push_str(&format!("city{i},{},{}.5\n", 1000 + i, i % 10));
        }
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, payload) = response.split_once("\r\n\r\n").unwrap();
        (
            response[9..12].parse().unwrap(),
            serde_json::from_str(payload).unwrap_or(Value::Null),
        )
    }

    fn import(&self, source: &str) -> String {
        let body = json!({"datasetId": "cities", "sourcePath": source});
        let (status, op) = self.call("POST", "/v1/projects/demo/locations/us/datasets:import", Some(body));
        assert_eq!(status, 200, "{op}");
        assert_eq!(
            op["metadata"]["@type"],
            "type.googleapis.com/example.datasets.v1.ImportDatasetMetadata"
        );
        op["name"].as_str().unwrap().to_owned()
    }

    fn wait(&self, name: &str) -> Value {
        let (status, op) = self.call("POST", &format!("/v1/{name}:wait"), Some(json!({"timeout": "20s"})));
        assert_eq!(status, 200, "{op}");
        assert_eq!(op["done"], true, "{op}");
        op
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn import_summarises_the_csv_for_rest_and_grpc_clients() {
    let example = Example::start(&[]);
    let name = example.import(&example.cities(500));
    let op = example.wait(&name);
    let dataset = &op["response"];
    assert_eq!(dataset["@type"], "type.googleapis.com/example.datasets.v1.Dataset");
    assert_eq!(dataset["rowCount"], "500", "int64 is a string in proto3 JSON");
    assert_eq!(dataset["columns"][0], json!({"name": "city", "filled": "500"}));
    assert_eq!(dataset["columns"][1]["mean"], 1249.5);
    assert_eq!(op["metadata"]["phase"], "done");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let response = runtime.block_on(async {
        use longrun_proto::google::longrunning::{GetOperationRequest, operation, operations_client::OperationsClient};
        let mut client = OperationsClient::connect(example.endpoint.clone()).await.unwrap();
        let op = client
            .get_operation(GetOperationRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        match op.result {
            Some(operation::Result::Response(any)) => any,
            other => panic!("expected a response, got {other:?}"),
        }
    });
    assert_eq!(response.type_url, "type.googleapis.com/example.datasets.v1.Dataset");
    let dataset = proto::Dataset::decode(response.value.as_slice()).unwrap();
    assert_eq!((dataset.row_count, dataset.columns.len()), (500, 3));
    assert_eq!((dataset.columns[2].min, dataset.columns[2].max), (0.5, 9.5));
}

#[test]
fn cancel_stops_a_running_import() {
    let example = Example::start(&["--throttle", "500"]);
    let name = example.import(&example.cities(20_000));
    let started = Instant::now();
    loop {
        let (_, op) = example.call("GET", &format!("/v1/{name}"), None);
        if op["metadata"]["rowsRead"].as_str().is_some_and(|rows| rows != "0") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the import never started: {op}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = example.call("POST", &format!("/v1/{name}:cancel"), None);
    assert_eq!(status, 200);
    let asked = Instant::now();
    let op = example.wait(&name);
    assert_eq!(op["error"]["code"], 1, "{op}");
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());
}

#[test]
fn a_missing_file_fails_the_import_with_not_found() {
    let example = Example::start(&[]);
    let name = example.import("/nonexistent/cities.csv");
    let op = example.wait(&name);
    assert_eq!(op["error"]["code"], 5, "{op}");
    assert!(op["error"]["message"].as_str().unwrap().contains("does not exist"));
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[test]
fn lists_filter_on_the_registered_metadata_and_response_fields() {
    let example = Example::start(&[]);
    let big = example.import(&example.cities(500));
    let small = example.import(&example.cities(3));
    example.wait(&big);
    example.wait(&small);
    let list = |filter: &str| {
        let path = format!("/v1/projects/demo/locations/us/operations?filter={}", encode(filter));
        example.call("GET", &path, None)
    };
    let names = |filter: &str| -> Vec<String> {
        let (status, page) = list(filter);
        assert_eq!(status, 200, "{filter}: {page}");
        let operations = page["operations"].as_array().cloned().unwrap_or_default();
        operations
            .iter()
            .map(|op| op["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Proto3 JSON names, typed from the example's descriptors.
    assert_eq!(names("response.rowCount > 100"), [big.as_str()]);
    assert_eq!(names("response.rowCount <= 100"), [small.as_str()]);
    assert_eq!(
        names("metadata.phase = done AND metadata.rowsRead >= 500"),
        [big.as_str()]
    );
    assert_eq!(names("metadata.rowsRead > 1 response.rowCount < 10"), [small.as_str()]);
    assert_eq!(
        names("metadata.dataset = \"*/datasets/cities\""),
        [small.as_str(), big.as_str()]
    );
    // Mistakes are INVALID_ARGUMENT, saying what is wrong and where.
    let (status, error) = list("metadata.rowsRed > 1");
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no registered metadata or response type"), "{message}");
    let (status, error) = list("response.columns.name = city");
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("repeated"),
        "{error}"
    );
    let (status, error) = list("response.rowCount > many");
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("integer"),
        "{error}"
    );
}

/// Imports started by the example's own route and finished by its runtime
/// count in the server's metrics, like operations of the API.
#[test]
fn the_runtimes_work_is_counted_in_the_metrics() {
    let example = Example::start(&[]);
    let name = example.import(&example.cities(10));
    example.wait(&name);
    let address = example.endpoint.trim_start_matches("http://");
    let scrape = || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut metrics = String::new();
        stream.read_to_string(&mut metrics).unwrap();
        metrics
    };
    let lines = [
        "longrun_operations_created_total{queue=\"dataset-imports\"} 1",
        "longrun_operations_finished_total{queue=\"dataset-imports\",outcome=\"SUCCEEDED\"} 1",
    ];
    // A Wait answers at the completion's commit; the runtime counts it
    // when its write returns, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut metrics = scrape();
    while !lines.iter().all(|line| metrics.contains(line)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        metrics = scrape();
    }
    for line in lines {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}
