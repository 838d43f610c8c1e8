//! longrun's resource model, free of I/O and wire formats.
//!
//! - [`OperationName`] and [`Parent`]: `<parent>/operations/<id>` names and
//!   their validation (SPEC §1).
//! - [`Operation`]: everything longrun knows about one operation; the wire
//!   `google.longrunning.Operation` is a view of it (see `longrun-proto`).
//! - [`State`] and the transitions between states; [`lifecycle`], the
//!   rules every store applies; [`Outcome`] and
//!   [`Status`]/[`Code`] for how an operation ended.
//! - [`filter`]: the List filter language, parsed into an AST that stores
//!   compile to SQL.

pub mod filter;
pub mod lifecycle;
mod name;
mod operation;
mod status;

pub use name::{MAX_NAME, OperationName, Parent, validate_id};
pub use operation::{Lease, Operation, Outcome, Payload, State, Transition};
pub use status::{Code, Status};

/// Why a name, state change or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A resource name does not follow SPEC §1.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// A state change the lifecycle does not allow.
    #[error("operation cannot go from {from} to {to}")]
    InvalidTransition { from: State, to: State },
    /// A List filter that does not parse or does not type-check.
    #[error("invalid filter at column {column}: {message}")]
    InvalidFilter { column: usize, message: String },
}
