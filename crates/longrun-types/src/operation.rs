//! The operation record and its lifecycle.
//!
//! ```text
//!            claim                 complete(response)
//!   QUEUED ─────────▶ RUNNING ─────────────────────────▶ SUCCEEDED
//!     │  ▲             │  │      complete(error)
//!     │  └─────────────┘  ├─────────────────────────────▶ FAILED
//!     │  retry / lease    │      complete(code 1), cancel grace
//!     │  expiry           └─────────────────────────────▶ CANCELLED
//!     └──────────────────────────── cancel ─────────────▶ CANCELLED
//! ```
//!
//! External operations (created without a queue) start RUNNING.
//! `done` holds exactly in the terminal states, and a done operation carries
//! exactly one [`Outcome`].

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{Code, Error, OperationName, Status};

/// A protobuf `Any`: a type URL and the message's binary encoding. Stored and
/// moved around opaquely; only the wire adapters look inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub type_url: String,
    pub value: Bytes,
}

impl Payload {
    /// The fully-qualified message name, e.g. `google.protobuf.Struct`.
    pub fn type_name(&self) -> &str {
        self.type_url.rsplit_once('/').map_or(&self.type_url, |(_, name)| name)
    }
}

/// Where an operation is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
    ];

    /// Terminal states are exactly those where the operation is done.
    pub fn is_done(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }

    /// The `longrun.v1.State` number.
    pub fn as_i32(self) -> i32 {
        match self {
            State::Queued => 1,
            State::Running => 2,
            State::Succeeded => 3,
            State::Failed => 4,
            State::Cancelled => 5,
        }
    }

    pub fn from_i32(number: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_i32() == number)
    }

    /// The enum value's name, e.g. `QUEUED`.
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "QUEUED",
            State::Running => "RUNNING",
            State::Succeeded => "SUCCEEDED",
            State::Failed => "FAILED",
            State::Cancelled => "CANCELLED",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.name() == name)
    }

    /// The terminal state an outcome puts an operation in: code 1 is a
    /// cancellation, any other error a failure.
    pub fn for_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Response(_) => State::Succeeded,
            Outcome::Error(status) if status.code == Code::Cancelled.as_i32() => State::Cancelled,
            Outcome::Error(_) => State::Failed,
        }
    }

    /// Checks that the lifecycle allows `self → to`.
    pub fn check(self, to: State) -> Result<Transition, Error> {
        use State::*;
        let allowed = match (self, to) {
            (Queued, Running) => true, // claimed
            (Running, Queued) => true, // retry or lease expiry
            (Queued | Running, Cancelled) => true,
            (Running, Succeeded | Failed) => true,
            // A queued operation whose deadline passes ends without running.
            (Queued, Failed) => true,
            _ => false,
        };
        if allowed {
            Ok(Transition { from: self, to })
        } else {
            Err(Error::InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked state change; obtained only from [`State::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

/// How a done operation ended: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Payload),
    Error(Status),
}

/// A worker's hold on a claimed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Fences completions: only the holder of the current token may finish.
    pub token: String,
    pub worker: String,
    pub expire_time: SystemTime,
    /// How long the lease was taken for: each heartbeat renews it by this.
    pub duration: Duration,
}

/// Everything longrun knows about one operation. The wire Operation is a
/// view of this: `metadata` is the producer's own, or the standard
/// `longrun.v1.OperationMetadata` built from the other fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: OperationName,
    pub state: State,
    /// Set exactly when `state` is terminal.
    pub outcome: Option<Outcome>,
    /// Producer-defined metadata; `None` means "serve the standard one".
    pub metadata: Option<Payload>,
    pub input: Option<Payload>,
    /// The queue workers claim it from; `None` for an external operation.
    pub queue: Option<String>,
    pub verb: String,
    pub target: String,
    pub api_version: String,
    pub status_detail: String,
    pub progress_percent: i32,
    pub cancel_requested: bool,
    /// When cancellation was asked: the cancel grace runs from here.
    pub cancel_time: Option<SystemTime>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub request_id: Option<String>,
    pub create_time: SystemTime,
    pub update_time: SystemTime,
    pub end_time: Option<SystemTime>,
    /// When the operation ends with DEADLINE_EXCEEDED if still not done.
    pub deadline: Option<SystemTime>,
    /// The current lease of a claimed, running operation.
    pub lease: Option<Lease>,
    /// The lease token of the worker that completed a done operation, so
    /// that the same worker repeating the same completion is recognised.
    pub finished_by: Option<String>,
}

impl Operation {
    pub fn done(&self) -> bool {
        self.state.is_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_is_exactly_the_terminal_states() {
        let done: Vec<_> = State::ALL.into_iter().filter(|s| s.is_done()).collect();
        assert_eq!(done, [State::Succeeded, State::Failed, State::Cancelled]);
    }

    #[test]
    fn terminal_states_never_change() {
        for from in State::ALL.into_iter().filter(|s| s.is_done()) {
            for to in State::ALL {
                assert!(from.check(to).is_err(), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn lifecycle_edges() {
        assert!(State::Queued.check(State::Running).is_ok());
        assert!(State::Queued.check(State::Cancelled).is_ok());
        assert!(State::Running.check(State::Queued).is_ok());
        assert!(State::Running.check(State::Succeeded).is_ok());
        assert!(
            State::Queued.check(State::Succeeded).is_err(),
            "must run before it succeeds"
        );
        assert!(State::Running.check(State::Running).is_err());
    }

    #[test]
    fn outcome_decides_terminal_state() {
        let payload = Payload {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Bytes::new(),
        };
        assert_eq!(payload.type_name(), "google.protobuf.Empty");
        assert_eq!(State::for_outcome(&Outcome::Response(payload)), State::Succeeded);
        assert_eq!(
            State::for_outcome(&Outcome::Error(Status::new(Code::Cancelled, "x"))),
            State::Cancelled
        );
        assert_eq!(
            State::for_outcome(&Outcome::Error(Status::new(Code::Internal, "x"))),
            State::Failed
        );
        for state in State::ALL {
            assert_eq!(State::from_i32(state.as_i32()), Some(state));
            assert_eq!(State::from_name(state.name()), Some(state));
        }
    }
}
