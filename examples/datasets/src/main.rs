//! An API that embeds longrun the way a real service would, in the spirit of
//! Vertex AI's "import data into a dataset":
//!
//! - `POST /v1/projects/{p}/locations/{l}/datasets:import` with
//!   `{"datasetId": "d", "sourcePath": "/data/cities.csv"}` answers at once
//!   with an Operation;
//! - an in-process handler reads and summarises the CSV, reporting progress
//!   and typed metadata, honouring cancellation, and finishes with a typed
//!   `example.datasets.v1.Dataset`;
//! - the standard Operations API (REST and gRPC) on the same port serves the
//!   operation to any client; the example's types are registered so both
//!   protocols decode them.

mod api;
mod import;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Generated from `proto/example/datasets/v1/datasets.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/example.datasets.v1.rs"));
}

/// The encoded descriptor set of the example's types.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/datasets.bin"));

/// The queue imports wait in.
pub const QUEUE: &str = "dataset-imports";

#[derive(Debug, Parser)]
#[command(about = "Example API: dataset imports as long-running operations")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// SQLite file for operations.
    #[arg(long, default_value = "datasets.db")]
    store: std::path::PathBuf,
    /// Slow imports down to this many rows per second (0: as fast as possible),
    /// to watch progress and try cancellation.
    #[arg(long, default_value_t = 0)]
    throttle: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let store: Arc<dyn longrun_store::Store> =
        Arc::new(longrun_store_sqlite::SqliteStore::open(&args.store).context("cannot open the store")?);
    let mut registry = longrun_proto::Registry::new();
    registry.load_descriptor_set(DESCRIPTORS)?;
    let mut config = longrun_server::Config::new(store);
    config.registry = registry.clone();
    // Imports started by our route and finished by the runtime count in
    // the server's metrics like any API call's.
    let store = config.counted_store();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // Tests and scripts read the address from the first line.
    println!("listening on http://{}", listener.local_addr()?);

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        }
    });
    let routes = api::routes(api::Api {
        store: store.clone(),
        registry: registry.clone(),
    });
    let runtime = longrun_runtime::Runtime::new(store)
        .worker("datasets-example")
        .registry(registry)
        .handle(
            QUEUE,
            import::Import {
                throttle: args.throttle,
            },
        );
    let (served, ()) = tokio::join!(
        longrun_server::run_with(listener, config, routes, stop.clone().cancelled_owned()),
        runtime.run(stop.clone().cancelled_owned()),
    );
    served?;
    Ok(())
}
