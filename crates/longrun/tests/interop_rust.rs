//! Google's Rust clients against the real server: `google-cloud-longrunning`
//! (the standalone Operations client, REST) and `google-cloud-lro` (the
//! poller Google's generated Rust clients return), from crates.io and
//! unmodified. The standalone client reaches only `operations/**` names on
//! `/v1/{name=operations/**}`, so these operations are top-level.

use std::sync::Arc;
use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::polling_error_policy::Aip194Strict;
use google_cloud_longrunning::client::Operations;
use google_cloud_longrunning::model::operation;
use google_cloud_lro::internal::{Operation, new_poller};
use google_cloud_lro::{Poller, PollingResult};
use google_cloud_wkt::Struct;
use google_cloud_wkt::message::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{Server, call, workspace_root};

/// `longrun.v1.OperationMetadata` as a Rust user declares it for the
/// poller: the JSON fields they read, under the type's name. The clients
/// ask for `enum-encoding=int`, so `state` is the enum's number.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct OperationMetadata {
    state: i32,
    progress_percent: i32,
    verb: String,
    attempt: i32,
}

/// `longrun.v1.State.RUNNING`.
const RUNNING: i32 = 2;

impl Message for OperationMetadata {
    fn typename() -> &'static str {
        "type.googleapis.com/longrun.v1.OperationMetadata"
    }
}

async fn client(server: &Server) -> Operations {
    // The clients are built without their default TLS provider (aws-lc);
    // they use the ring provider the server already links.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Operations::builder()
        .with_endpoint(&server.endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap()
}

/// The poller of a generated client, started on an operation that
/// already exists and polled through the standalone client's Get.
fn poller(client: &Operations, name: &str) -> impl Poller<Struct, OperationMetadata> {
    let get = {
        let client = client.clone();
        move |name: String| {
            let client = client.clone();
            async move {
                let operation = client.get_operation().set_name(name).send().await?;
                Ok(Operation::new(operation))
            }
        }
    };
    let start = {
        let get = get.clone();
        let name = name.to_owned();
        move || get(name)
    };
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(50))
        .with_maximum_delay(Duration::from_millis(200))
        .build()
        .unwrap();
    new_poller(Arc::new(Aip194Strict), Arc::new(backoff), start, get)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn google_cloud_lro_polls_a_worker_operation_to_its_response() {
    let server = Server::start(&[]);
    let (status, created) = call(
        &server.endpoint,
        "POST",
        "/v1/operations",
        Some(&json!({"operationId": "rust-import", "queue": "rust", "verb": "import"})),
    );
    assert_eq!(status, 200, "{created}");

    // A worker elsewhere claims it, reports progress, then succeeds.
    let endpoint = server.endpoint.clone();
    let worker = std::thread::spawn(move || {
        let (_, claimed) = call(
            &endpoint,
            "POST",
            "/v1/operations:claim",
            Some(&json!({"queue": "rust", "worker": "w1", "wait": "5s"})),
        );
        let token = claimed["leaseToken"].as_str().unwrap().to_owned();
        let update = json!({"leaseToken": token, "progressPercent": 40});
        call(&endpoint, "POST", "/v1/operations/rust-import:update", Some(&update));
        std::thread::sleep(Duration::from_millis(300));
        let done = json!({"leaseToken": token, "response": {"rows": 3, "table": "cities"}});
        let (status, body) = call(&endpoint, "POST", "/v1/operations/rust-import:complete", Some(&done));
        assert_eq!(status, 200, "{body}");
    });

    runtime().block_on(async {
        let client = client(&server).await;
        let mut poller = poller(&client, "operations/rust-import");
        let mut progress = Vec::new();
        let response = loop {
            match poller
                .poll()
                .await
                .expect("the poller stopped before the operation was done")
            {
                PollingResult::InProgress(metadata) => {
                    let metadata = metadata.expect("an operation in progress carries its metadata");
                    assert_eq!(metadata.verb, "import");
                    progress.push((metadata.state, metadata.progress_percent));
                }
                PollingResult::Completed(result) => break result.unwrap(),
                PollingResult::PollingError(err) => panic!("polling failed: {err}"),
            }
        };
        assert_eq!(response.get("rows"), Some(&json!(3)));
        assert_eq!(response.get("table"), Some(&json!("cities")));
        assert!(
            progress.contains(&(RUNNING, 40)),
            "the poller saw the worker's progress: {progress:?}"
        );
    });
    worker.join().unwrap();
}

#[test]
fn google_cloud_longrunning_gets_lists_cancels_and_deletes() {
    let server = Server::start(&[]);
    for id in ["rust-a", "rust-b"] {
        let (status, body) = call(
            &server.endpoint,
            "POST",
            "/v1/operations",
            Some(&json!({"operationId": id, "verb": "export"})),
        );
        assert_eq!(status, 200, "{body}");
    }
    runtime().block_on(async {
        let client = client(&server).await;

        let got = client
            .get_operation()
            .set_name("operations/rust-a")
            .send()
            .await
            .unwrap();
        assert_eq!(got.name, "operations/rust-a");
        assert!(!got.done);
        let metadata = got.metadata.as_ref().unwrap().to_msg::<OperationMetadata>().unwrap();
        assert_eq!((metadata.state, metadata.verb.as_str()), (RUNNING, "export"));

        let listed = client
            .list_operations()
            .set_name("operations")
            .set_filter("metadata.verb = \"export\" AND done = false")
            .set_page_size(1)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.operations.len(), 1);
        assert!(!listed.next_page_token.is_empty(), "a second page is promised");
        let rest = client
            .list_operations()
            .set_name("operations")
            .set_filter("metadata.verb = \"export\" AND done = false")
            .set_page_token(listed.next_page_token)
            .send()
            .await
            .unwrap();
        let mut names: Vec<_> = listed
            .operations
            .iter()
            .chain(&rest.operations)
            .map(|op| op.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["operations/rust-a", "operations/rust-b"]);

        // Cancel an external operation; its producer acknowledges, and the
        // poller reports the cancellation as the operation's error.
        client
            .cancel_operation()
            .set_name("operations/rust-a")
            .send()
            .await
            .unwrap();
        let ack = json!({"error": {"code": 1, "message": "stopped by request"}});
        let (status, body) = call(&server.endpoint, "POST", "/v1/operations/rust-a:complete", Some(&ack));
        assert_eq!(status, 200, "{body}");
        let err = poller(&client, "operations/rust-a").until_done().await.unwrap_err();
        assert_eq!(err.status().map(|status| status.code), Some(Code::Cancelled), "{err}");
        let cancelled = client
            .get_operation()
            .set_name("operations/rust-a")
            .send()
            .await
            .unwrap();
        assert!(cancelled.done);
        assert!(matches!(cancelled.result, Some(operation::Result::Error(ref status)) if status.code == 1));

        client
            .delete_operation()
            .set_name("operations/rust-a")
            .send()
            .await
            .unwrap();
        let err = client
            .get_operation()
            .set_name("operations/rust-a")
            .send()
            .await
            .unwrap_err();
        let status = err.status().expect("a service error carries its status");
        assert_eq!(status.code, Code::NotFound, "{err}");
        assert!(status.message.contains("operations/rust-a"), "{}", status.message);

        let err = client
            .list_operations()
            .set_name("operations")
            .set_filter("done = maybe")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.status().map(|status| status.code),
            Some(Code::InvalidArgument),
            "{err}"
        );
    });
}

/// The README's Rust recipe, run. Between the markers is the README's
/// block as written there, but for the address.
async fn readme_recipe(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    // README begin
    use google_cloud_auth::credentials::anonymous;
    use google_cloud_longrunning::client::Operations;

    let client = Operations::builder()
        .with_endpoint(endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await?;
    let op = client.get_operation().set_name("operations/export-1").send().await?;
    println!("{} done={}", op.name, op.done);
    // README end
    Ok(())
}

#[test]
fn the_readme_recipe_runs_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = readme
        .split_once("## Using Google's Rust clients")
        .and_then(|(_, section)| section.split_once("```rust\n"))
        .and_then(|(_, block)| block.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README has a Rust recipe");
    let source = std::fs::read_to_string(workspace_root().join("crates/longrun/tests/interop_rust.rs")).unwrap();
    let recipe: String = source
        .split_once("    // README begin\n")
        .and_then(|(_, rest)| rest.split_once("    // README end"))
        .map(|(recipe, _)| {
            recipe
                .lines()
                .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        })
        .expect("markers around the recipe")
        .collect();
    assert_eq!(
        block,
        recipe.replace(".with_endpoint(endpoint)", ".with_endpoint(\"http://127.0.0.1:8080\")"),
        "the README's Rust recipe and the code this test runs differ"
    );

    let server = Server::start(&[]);
    let (status, body) = call(
        &server.endpoint,
        "POST",
        "/v1/operations",
        Some(&json!({"operationId": "export-1"})),
    );
    assert_eq!(status, 200, "{body}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime().block_on(readme_recipe(&server.endpoint)).unwrap();
}
