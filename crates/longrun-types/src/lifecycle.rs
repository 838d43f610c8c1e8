//! The lifecycle rules, decided once for every store.
//!
//! A store reads an operation, asks one of these functions what may happen
//! to it, and writes the answer as one statement fenced by what it read. It
//! decides nothing itself: which state an operation starts in, who may
//! change it, whether a failure runs again and when, and what a cancel, an
//! expired lease or a passed deadline does all live here, and are tested
//! here. Every change of state goes through [`State::check`].

use std::time::{Duration, SystemTime};

use crate::{Code, Operation, Outcome, State, Status};

/// The error of an operation cancelled while it was queued.
pub const CANCELLED_QUEUED: &str = "Operation was cancelled before it started.";
/// The error of an operation whose `timeout` passed.
pub const TIMED_OUT: &str = "the operation's timeout passed before it finished";
/// The error of a claimed operation whose worker ignored a cancel.
pub const GRACE_PASSED: &str = "the worker did not stop within the cancel grace";
/// The error of an external operation whose producer ignored a cancel.
pub const GRACE_PASSED_EXTERNAL: &str = "the producer did not finish the operation within the cancel grace";
/// The error of a cancelled operation whose worker stopped without saying so.
pub const CANCEL_EXPIRED: &str = "the worker stopped before acknowledging the cancel";
/// The error of an operation whose worker stopped on the last attempt.
pub const LAST_ATTEMPT: &str = "the worker stopped reporting on the last attempt (lease expired)";
/// The status detail of an operation re-queued after its lease expired.
pub const REQUEUED_AFTER_EXPIRY: &str = "re-queued: the previous worker's lease expired";

/// The state a new operation starts in: a queued one waits for a worker;
/// an external one is RUNNING at once, since its producer is working on it.
pub fn initial_state(queued: bool) -> State {
    if queued { State::Queued } else { State::Running }
}

/// Exponential backoff between attempts: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `finished + 1`, after attempt `finished` failed.
    pub fn delay(&self, finished: i32) -> Duration {
        let doublings = u32::try_from(finished.saturating_sub(1)).unwrap_or(0).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Why a change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The operation is done, and its outcome never changes.
    Done(State),
    /// A claimed operation was changed without a lease token.
    LeaseRequired { queue: String },
    /// The token is not the operation's current, unexpired lease: it
    /// expired, was taken over, or the operation was handed back.
    LeaseLost,
    /// Only claimed operations have a lease to hand back.
    NotClaimed,
    /// A lease token was given for an external operation, which has none:
    /// the caller has the wrong operation in mind.
    External,
    /// The lifecycle has no such edge (a bug in a rule, not a caller's
    /// mistake; kept so that [`State::check`] guards every change).
    Transition { from: State, to: State },
}

impl Refusal {
    /// What the caller is told, for the operation `name`.
    pub fn message(&self, name: &str) -> String {
        match self {
            Refusal::Done(state) => format!("operation {name:?} is already done ({state})"),
            Refusal::LeaseRequired { queue } => {
                format!("operation {name:?} is claimed through queue {queue:?}; pass the lease token from Claim")
            }
            Refusal::LeaseLost => {
                format!("the lease token is not the current lease of {name:?}; it expired or was taken over")
            }
            Refusal::NotClaimed => {
                format!("operation {name:?} is not claimed by a worker; there is no lease to release")
            }
            Refusal::External => {
                format!(
                    "operation {name:?} is external (created without a queue) and has no lease; pass no lease token"
                )
            }
            Refusal::Transition { from, to } => format!("operation {name:?} cannot go from {from} to {to}"),
        }
    }
}

/// What becomes of an operation whose state changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Back to its queue for attempt `attempt`, claimable from
    /// `available_time`; the lease ends.
    Requeue {
        attempt: i32,
        available_time: SystemTime,
        /// Replaces the status detail, when set.
        status_detail: Option<String>,
    },
    /// Done, with this outcome, at `end_time`.
    End {
        state: State,
        outcome: Outcome,
        end_time: SystemTime,
        /// The lease of the worker that finished it, kept so that the same
        /// worker repeating the same completion is recognised.
        finished_by: Option<String>,
        /// The end is a caller's cancel: cancellation counts as asked, at
        /// `end_time`.
        cancels: bool,
    },
}

/// The progress a done operation shows: 100 once it succeeded, whatever
/// its worker last reported; a failed or cancelled one keeps how far it
/// got.
pub fn final_progress(state: State) -> Option<i32> {
    (state == State::Succeeded).then_some(100)
}

impl Step {
    /// The state the operation is in afterwards.
    pub fn to(&self) -> State {
        match self {
            Step::Requeue { .. } => State::Queued,
            Step::End { state, .. } => *state,
        }
    }

    fn end(op: &Operation, outcome: Outcome, now: SystemTime, finished_by: Option<String>) -> Result<Self, Refusal> {
        let state = State::for_outcome(&outcome);
        checked(op, state)?;
        Ok(Step::End {
            state,
            outcome,
            end_time: now,
            finished_by,
            cancels: false,
        })
    }

    fn fail(op: &Operation, state: State, code: Code, message: &str, now: SystemTime) -> Result<Self, Refusal> {
        checked(op, state)?;
        Ok(Step::End {
            state,
            outcome: Outcome::Error(Status::new(code, message)),
            end_time: now,
            finished_by: None,
            cancels: false,
        })
    }

    fn requeue(
        op: &Operation,
        attempt: i32,
        available_time: SystemTime,
        status_detail: Option<String>,
    ) -> Result<Self, Refusal> {
        checked(op, State::Queued)?;
        Ok(Step::Requeue {
            attempt,
            available_time,
            status_detail,
        })
    }
}

fn checked(op: &Operation, to: State) -> Result<(), Refusal> {
    match op.state.check(to) {
        Ok(_) => Ok(()),
        Err(_) if op.done() => Err(Refusal::Done(op.state)),
        Err(_) => Err(Refusal::Transition { from: op.state, to }),
    }
}

impl Operation {
    /// Checks that a caller holding `token` may change this operation at
    /// `now`: nobody may change a done one; an external one (it has no
    /// lease) takes no token; a claimed one needs its current, unexpired
    /// lease.
    pub fn check_lease(&self, token: Option<&str>, now: SystemTime) -> Result<(), Refusal> {
        if self.done() {
            return Err(Refusal::Done(self.state));
        }
        let Some(queue) = &self.queue else {
            return match token {
                None => Ok(()),
                Some(_) => Err(Refusal::External),
            };
        };
        match (token, &self.lease) {
            (None, _) => Err(Refusal::LeaseRequired { queue: queue.clone() }),
            (Some(token), Some(lease)) if lease.token == token && lease.expire_time > now => Ok(()),
            (Some(_), _) => Err(Refusal::LeaseLost),
        }
    }
}

/// A producer or worker finishing `op` with `outcome`.
///
/// A retryable error (`retry` set) on a claimed operation with attempts
/// left goes back to the queue after the backoff, unless cancellation was
/// asked. Repeating the completion that finished the operation, with the
/// same lease and the same outcome, is `Ok(None)`: nothing to change, and
/// the caller is answered as the first time (its acknowledgement may have
/// been lost).
pub fn complete(
    op: &Operation,
    token: Option<&str>,
    outcome: Outcome,
    retry: Option<Backoff>,
    now: SystemTime,
) -> Result<Option<Step>, Refusal> {
    if op.done() {
        // External operations have no lease: only the outcome must match.
        let same_lease = op.queue.is_none() || (token.is_some() && op.finished_by.as_deref() == token);
        return if same_lease && op.outcome.as_ref() == Some(&outcome) {
            Ok(None)
        } else {
            Err(Refusal::Done(op.state))
        };
    }
    op.check_lease(token, now)?;
    if let (Some(backoff), Outcome::Error(status)) = (retry, &outcome)
        && op.queue.is_some()
        && op.attempt < op.max_attempts
        && !op.cancel_requested
    {
        let detail = format!("retrying after: {}", status.message);
        let available = now + backoff.delay(op.attempt);
        return Step::requeue(op, op.attempt + 1, available, Some(detail)).map(Some);
    }
    let finished_by = token.filter(|_| op.queue.is_some()).map(str::to_owned);
    Step::end(op, outcome, now, finished_by).map(Some)
}

/// What a cancel does.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// A queued operation ends at once, CANCELLED with code 1.
    End(Step),
    /// A running one is asked to stop: its worker learns of it on its next
    /// report, and the sweep ends it after the cancel grace.
    Request,
    /// Done, or already asked: nothing changes.
    Unchanged,
}

/// Cancelling `op` at `now` (SPEC §4).
pub fn cancel(op: &Operation, now: SystemTime) -> Cancel {
    match op.state {
        State::Queued => match Step::fail(op, State::Cancelled, Code::Cancelled, CANCELLED_QUEUED, now) {
            Ok(Step::End {
                state,
                outcome,
                end_time,
                finished_by,
                cancels: _,
            }) => Cancel::End(Step::End {
                state,
                outcome,
                end_time,
                finished_by,
                cancels: true,
            }),
            Ok(_) | Err(_) => Cancel::Unchanged,
        },
        State::Running if !op.cancel_requested => Cancel::Request,
        _ => Cancel::Unchanged,
    }
}

/// A progress report or heartbeat by a caller holding `token`: allowed
/// under [`Operation::check_lease`]. Returns the lease's new expiry: a
/// heartbeat renews the lease for the duration it was taken for.
pub fn report(op: &Operation, token: Option<&str>, now: SystemTime) -> Result<Option<SystemTime>, Refusal> {
    op.check_lease(token, now)?;
    Ok(op.lease.as_ref().map(|lease| now + lease.duration))
}

/// A worker handing back a claimed operation (it is shutting down, not
/// failing): back to the queue at once, with the same attempt.
pub fn release(op: &Operation, token: &str, now: SystemTime) -> Result<Step, Refusal> {
    if op.done() {
        return Err(Refusal::Done(op.state));
    }
    if op.queue.is_none() {
        return Err(Refusal::NotClaimed);
    }
    op.check_lease(Some(token), now)?;
    Step::requeue(op, op.attempt, now, None)
}

/// What the background sweep did to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Swept {
    /// The lease expired with attempts left: back to the queue, attempt + 1.
    Requeued,
    /// The lease expired on the last attempt: FAILED with UNAVAILABLE.
    LeaseExpired,
    /// The operation's `timeout` passed: FAILED with DEADLINE_EXCEEDED.
    TimedOut,
    /// The cancel grace passed after a cancel, or the worker of a cancelled
    /// operation stopped: CANCELLED.
    CancelForced,
    /// Deleted after the retention period.
    Purged,
}

/// What the sweep does to `op` at `now`, if anything: a passed deadline
/// ends it whatever else is pending; then a cancel whose grace passed;
/// then an expired lease, which cancels a cancelled operation, re-queues
/// while attempts remain, and otherwise fails it.
pub fn sweep(op: &Operation, now: SystemTime, cancel_grace: Duration) -> Option<(Swept, Step)> {
    if op.done() {
        return None;
    }
    let decided = if op.deadline.is_some_and(|deadline| deadline <= now) {
        (
            Swept::TimedOut,
            Step::fail(op, State::Failed, Code::DeadlineExceeded, TIMED_OUT, now),
        )
    } else if op.state == State::Running
        && op.cancel_requested
        && op.cancel_time.is_some_and(|asked| asked + cancel_grace <= now)
    {
        (
            Swept::CancelForced,
            Step::fail(
                op,
                State::Cancelled,
                Code::Cancelled,
                if op.queue.is_some() {
                    GRACE_PASSED
                } else {
                    GRACE_PASSED_EXTERNAL
                },
                now,
            ),
        )
    } else if op.state == State::Running
        && let Some(lease) = &op.lease
        && lease.expire_time <= now
    {
        if op.cancel_requested {
            (
                Swept::CancelForced,
                Step::fail(op, State::Cancelled, Code::Cancelled, CANCEL_EXPIRED, now),
            )
        } else if op.attempt < op.max_attempts {
            let detail = Some(REQUEUED_AFTER_EXPIRY.to_owned());
            (Swept::Requeued, Step::requeue(op, op.attempt + 1, now, detail))
        } else {
            (
                Swept::LeaseExpired,
                Step::fail(op, State::Failed, Code::Unavailable, LAST_ATTEMPT, now),
            )
        }
    } else {
        return None;
    };
    let (kind, step) = decided;
    step.ok().map(|step| (kind, step))
}

/// The sweep deletes done operations that ended before this time:
/// `retention` before `now`.
pub fn purge_before(now: SystemTime, retention: Duration) -> SystemTime {
    now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
