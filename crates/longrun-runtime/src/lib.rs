//! In-process workers: typed handlers registered per queue, run against a
//! [`Store`] in the same process as the API that creates the operations.
//!
//! ```no_run
//! use std::sync::Arc;
//! use longrun_runtime::{Context, Error, Handler, Runtime, Struct};
//!
//! struct Echo;
//!
//! #[longrun_runtime::async_trait]
//! impl Handler for Echo {
//!     type Input = Struct;
//!     type Output = Struct;
//!     type Metadata = Struct;
//!
//!     async fn run(&self, ctx: Context<Struct>, input: Struct) -> Result<Struct, Error> {
//!         ctx.progress(50, "halfway").await?;
//!         if ctx.is_cancelled() {
//!             return Err(Error::cancelled());
//!         }
//!         Ok(input)
//!     }
//! }
//!
//! # async fn example(store: Arc<dyn longrun_store::Store>) {
//! let runtime = Runtime::new(store).handle("echo", Echo);
//! runtime.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```
//!
//! What the runtime does for each handler:
//! - claims from its queue (long-poll, woken by the creating write), at most
//!   [`Runtime::concurrency`] handlers running at a time across all queues
//!   (a finished handler's slot is handed on while its outcome is written,
//!   with at most as many outcomes waiting to be written);
//! - heartbeats every third of the lease, and reads the operation at once
//!   when it changes, so cancellation reaches [`Context::cancelled`]
//!   promptly;
//! - completes with the handler's output, or its error: [`Error::retryable`]
//!   re-queues with backoff while attempts remain, [`Error::fatal`] ends it;
//! - stops the handler (through the same token) when the operation is
//!   deleted or its lease is lost, and reports nothing then;
//! - on shutdown, asks handlers to stop and hands unfinished operations back
//!   to their queue without using up an attempt.

mod context;
mod runtime;
mod structs;

pub use async_trait::async_trait;
pub use context::Context;
pub use runtime::Runtime;
pub use structs::Struct;

use longrun_types::{Code, Status};

/// The `Any` type URL of a message type, in Google's form. (`prost::Name`'s
/// own `type_url()` defaults to `/full.name`, which Google's clients reject.)
pub(crate) fn type_url<M: prost::Name>() -> String {
    format!("type.googleapis.com/{}", M::full_name())
}

/// Work for one queue: decode the input, do the work, report progress.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The operation's input; an operation without one gets `Default`.
    type Input: prost::Message + prost::Name + Default;
    /// The operation's response.
    type Output: prost::Message + prost::Name;
    /// Metadata the handler may publish with [`Context::set_metadata`].
    type Metadata: prost::Message + prost::Name;

    async fn run(&self, ctx: Context<Self::Metadata>, input: Self::Input) -> Result<Self::Output, Error>;
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Transient: the operation runs again after a backoff while attempts remain.
    #[error("retryable: {}", .0.message)]
    Retryable(Status),
    /// Final: the operation ends with this error.
    #[error("{}", .0.message)]
    Fatal(Status),
    /// The operation was deleted or its lease taken over; nothing can be reported.
    #[error("lost the operation: {0}")]
    Lost(String),
}

impl Error {
    pub fn retryable(code: Code, message: impl Into<String>) -> Self {
        Error::Retryable(Status::new(code, message))
    }

    pub fn fatal(code: Code, message: impl Into<String>) -> Self {
        Error::Fatal(Status::new(code, message))
    }

    /// The handler stopped because cancellation was requested (code 1).
    pub fn cancelled() -> Self {
        Error::fatal(Code::Cancelled, "cancelled at the caller's request")
    }
}
