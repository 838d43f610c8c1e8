//! A fresh database per test, on the PostgreSQL server that
//! `LONGRUN_TEST_POSTGRES` names (by default the local one,
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards.

use tokio_postgres::NoTls;

/// The server's address, as an admin URL (a database to connect to while
/// creating others).
pub fn admin_url() -> String {
    std::env::var("LONGRUN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test; dropped (connections and all) when
/// this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    /// The database's URL, for `PostgresStore::connect` or `--store`.
    pub url: String,
}

impl TestDatabase {
    /// Creates `longrun_test_<random>`. Panics with what to do when the
    /// server cannot be reached: these tests need a real PostgreSQL.
    pub fn create() -> Self {
        let name = format!("longrun_test_{}", uuid::Uuid::now_v7().simple());
        admin(&format!("CREATE DATABASE {name}"));
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the database away from its nodes (new connections refused,
    /// open ones closed), as an outage would, until [`TestDatabase::restore`].
    pub fn cut_off(&self) {
        admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name));
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ));
    }

    /// Lets nodes connect again after [`TestDatabase::cut_off`].
    pub fn restore(&self) {
        admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// Runs one statement on the admin connection, on its own thread and
/// runtime (callable from sync code, async tests and `Drop` alike).
#[allow(clippy::expect_used)] // Test support: a panic is the failure report.
fn admin(statement: &str) {
    let statement = statement.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let url = admin_url();
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap_or_else(|err| {
                panic!(
                    "PostgreSQL is not reachable at {url} ({err}). These tests need it: start it \
                     (`pg_ctlcluster 15 main start`, or .ci/run does it), or point LONGRUN_TEST_POSTGRES \
                     at a server where this user may create databases."
                )
            });
            tokio::spawn(connection);
            client
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|err| panic!("{statement}: {err}"));
        });
    })
    .join()
    .expect("the admin statement's thread");
}
