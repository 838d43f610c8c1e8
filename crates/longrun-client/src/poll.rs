//! Waiting for an operation: server-side Wait where the server has it,
//! backoff polling of Get where it does not (most Google APIs).

use std::time::Duration;

use tokio::time::Instant;

use crate::{Client, Error, Operation};
use longrun_types::Code;

/// Poll intervals when falling back to Get: Google's client defaults.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.5,
            max: Duration::from_secs(20),
        }
    }
}

/// How long one Wait call blocks, so that progress is reported about once
/// a second.
const WAIT_SLICE: Duration = Duration::from_secs(1);

impl Client {
    /// Returns the operation once done, or its latest state after `timeout`.
    /// Calls `on_progress` with each state seen.
    pub async fn poll_until_done(
        &self,
        name: &str,
        timeout: Duration,
        mut on_progress: impl FnMut(&Operation),
    ) -> Result<Operation, Error> {
        let deadline = Instant::now() + timeout;
        let mut backoff: Option<Duration> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let operation = match backoff {
                None => match self.wait(name, left.min(WAIT_SLICE)).await {
                    Err(Error::Api {
                        code: Code::NotFound | Code::Unimplemented,
                        ..
                    }) if self.get(name).await.is_ok() => {
                        // The operation exists, so Wait itself is missing.
                        tracing::debug!("server has no Wait; polling Get with backoff");
                        backoff = Some(Backoff::default().initial);
                        self.get(name).await?
                    }
                    other => other?,
                },
                Some(delay) => {
                    tokio::time::sleep(delay.min(left)).await;
                    let defaults = Backoff::default();
                    backoff = Some(delay.mul_f64(defaults.multiplier).min(defaults.max));
                    self.get(name).await?
                }
            };
            on_progress(&operation);
            if operation.done || Instant::now() >= deadline {
                return Ok(operation);
            }
        }
    }
}
