//! The real server in-process on port 0.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use longrun_proto::google::longrunning::operations_client::OperationsClient;
use longrun_proto::longrun::v1::control_client::ControlClient;
use longrun_store_sqlite::SqliteStore;

pub struct TestServer {
    pub endpoint: String,
    pub http: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a config adjusted by `tune` (short leases, grace, ...).
    pub async fn start_with(tune: impl FnOnce(&mut longrun_server::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("longrun.db")).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = longrun_server::Config::new(store);
        config.max_wait = Duration::from_secs(30);
        config.sweep_interval = Duration::from_millis(50);
        tune(&mut config);
        let task = tokio::spawn(longrun_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            endpoint,
            http: {
                // reqwest's TLS comes without a crypto provider; longrun uses ring.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            },
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/{path}", self.endpoint))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/v1/{path}", self.endpoint))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn control(&self) -> ControlClient<tonic::transport::Channel> {
        ControlClient::connect(self.endpoint.clone()).await.unwrap()
    }

    pub async fn grpc(&self) -> OperationsClient<tonic::transport::Channel> {
        OperationsClient::connect(self.endpoint.clone()).await.unwrap()
    }
}
