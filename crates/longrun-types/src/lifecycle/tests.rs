use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::{Lease, OperationName, Payload};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn external() -> Operation {
    Operation {
        name: OperationName::parse("projects/p/operations/a").unwrap(),
        state: initial_state(false),
        outcome: None,
        metadata: None,
        input: None,
        queue: None,
        verb: String::new(),
        target: String::new(),
        api_version: String::new(),
        status_detail: String::new(),
        progress_percent: 0,
        cancel_requested: false,
        cancel_time: None,
        attempt: 1,
        max_attempts: 3,
        request_id: None,
        create_time: t0(),
        update_time: t0(),
        end_time: None,
        deadline: None,
        lease: None,
        finished_by: None,
    }
}

fn queued() -> Operation {
    Operation {
        state: initial_state(true),
        queue: Some("q".into()),
        ..external()
    }
}

/// Claimed at t0 with a 30 s lease, token "t1".
fn claimed() -> Operation {
    Operation {
        state: State::Running,
        lease: Some(Lease {
            token: "t1".into(),
            worker: "w".into(),
            expire_time: t0() + secs(30),
            duration: secs(30),
        }),
        ..queued()
    }
}

fn response() -> Outcome {
    Outcome::Response(Payload {
        type_url: "type.googleapis.com/google.protobuf.Empty".into(),
        value: Bytes::new(),
    })
}

fn failure(code: Code) -> Outcome {
    Outcome::Error(Status::new(code, "flaky"))
}

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// Applies a step as a store would.
fn apply(op: &Operation, step: &Step) -> Operation {
    let mut next = op.clone();
    match step.clone() {
        Step::Requeue {
            attempt,
            available_time: _,
            status_detail,
        } => {
            next.state = State::Queued;
            next.attempt = attempt;
            next.lease = None;
            if let Some(detail) = status_detail {
                next.status_detail = detail;
            }
        }
        Step::End {
            state,
            outcome,
            end_time,
            finished_by,
            cancels,
        } => {
            next.cancel_requested |= cancels;
            next.state = state;
            next.outcome = Some(outcome);
            next.end_time = Some(end_time);
            next.lease = None;
            next.finished_by = finished_by;
        }
    }
    next
}

#[test]
fn queued_operations_wait_and_external_ones_run() {
    assert_eq!(initial_state(true), State::Queued);
    assert_eq!(initial_state(false), State::Running);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let delays: Vec<u64> = (1..=8).map(|attempt| BACKOFF.delay(attempt).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(BACKOFF.delay(i32::MAX), secs(60), "no overflow");
    assert_eq!(BACKOFF.delay(0), secs(1));
}

#[test]
fn external_operations_need_no_lease() {
    assert_eq!(external().check_lease(None, t0()), Ok(()));
    assert_eq!(
        external().check_lease(Some("garbage"), t0()),
        Err(Refusal::External),
        "a token for an external operation is a mistake, not a key"
    );
}

#[test]
fn claimed_operations_need_the_current_unexpired_lease() {
    let op = claimed();
    assert_eq!(op.check_lease(Some("t1"), t0() + secs(29)), Ok(()));
    assert_eq!(
        op.check_lease(None, t0()),
        Err(Refusal::LeaseRequired { queue: "q".into() })
    );
    assert_eq!(op.check_lease(Some("t0"), t0()), Err(Refusal::LeaseLost));
    assert_eq!(
        op.check_lease(Some("t1"), t0() + secs(30)),
        Err(Refusal::LeaseLost),
        "a lease ends at its expiry"
    );
    assert_eq!(
        queued().check_lease(Some("t1"), t0()),
        Err(Refusal::LeaseLost),
        "a queued operation has no lease yet"
    );
}

#[test]
fn done_operations_never_change() {
    let done = apply(
        &external(),
        &complete(&external(), None, response(), None, t0()).unwrap().unwrap(),
    );
    assert_eq!(done.check_lease(None, t0()), Err(Refusal::Done(State::Succeeded)));
    assert_eq!(
        complete(&done, None, failure(Code::Internal), None, t0()),
        Err(Refusal::Done(State::Succeeded))
    );
    assert_eq!(cancel(&done, t0()), Cancel::Unchanged);
    assert_eq!(report(&done, None, t0()), Err(Refusal::Done(State::Succeeded)));
    assert_eq!(sweep(&done, t0() + secs(86_400), secs(30)), None);
}

#[test]
fn the_outcome_decides_the_end_state() {
    for (outcome, state) in [
        (response(), State::Succeeded),
        (failure(Code::Internal), State::Failed),
        (failure(Code::Cancelled), State::Cancelled),
    ] {
        let step = complete(&claimed(), Some("t1"), outcome, None, t0()).unwrap().unwrap();
        assert_eq!(step.to(), state);
        let Step::End { finished_by, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(finished_by.as_deref(), Some("t1"));
    }
}

#[test]
fn retryable_errors_requeue_while_attempts_remain() {
    let step = complete(&claimed(), Some("t1"), failure(Code::Unavailable), Some(BACKOFF), t0())
        .unwrap()
        .unwrap();
    assert_eq!(
        step,
        Step::Requeue {
            attempt: 2,
            available_time: t0() + secs(1),
            status_detail: Some("retrying after: flaky".into()),
        }
    );
    let last = Operation {
        attempt: 3,
        ..claimed()
    };
    let step = complete(&last, Some("t1"), failure(Code::Unavailable), Some(BACKOFF), t0())
        .unwrap()
        .unwrap();
    assert_eq!(step.to(), State::Failed, "no attempts left");
    let cancelling = Operation {
        cancel_requested: true,
        ..claimed()
    };
    let step = complete(&cancelling, Some("t1"), failure(Code::Unavailable), Some(BACKOFF), t0())
        .unwrap()
        .unwrap();
    assert_eq!(step.to(), State::Failed, "a cancelled operation does not run again");
    let step = complete(&external(), None, failure(Code::Unavailable), Some(BACKOFF), t0())
        .unwrap()
        .unwrap();
    assert_eq!(
        step.to(),
        State::Failed,
        "external operations have no queue to go back to"
    );
}

#[test]
fn repeating_the_same_completion_is_answered_not_refused() {
    let first = complete(&claimed(), Some("t1"), response(), None, t0())
        .unwrap()
        .unwrap();
    let done = apply(&claimed(), &first);
    assert_eq!(complete(&done, Some("t1"), response(), None, t0() + secs(99)), Ok(None));
    assert_eq!(
        complete(&done, Some("t1"), failure(Code::Internal), None, t0()),
        Err(Refusal::Done(State::Succeeded)),
        "a different outcome is refused"
    );
    assert_eq!(
        complete(&done, Some("t2"), response(), None, t0()),
        Err(Refusal::Done(State::Succeeded)),
        "another lease is refused"
    );
    assert_eq!(
        complete(&done, None, response(), None, t0()),
        Err(Refusal::Done(State::Succeeded)),
        "no lease is refused"
    );
    let external_done = apply(
        &external(),
        &complete(&external(), None, response(), None, t0()).unwrap().unwrap(),
    );
    assert_eq!(complete(&external_done, None, response(), None, t0()), Ok(None));
    // What the sweep ended was not finished by its worker.
    let (_, expired) = sweep(
        &Operation {
            attempt: 3,
            ..claimed()
        },
        t0() + secs(30),
        secs(30),
    )
    .unwrap();
    let swept = apply(&claimed(), &expired);
    let Some(Outcome::Error(status)) = swept.outcome.clone() else {
        panic!()
    };
    assert_eq!(
        complete(&swept, Some("t1"), Outcome::Error(status), None, t0()),
        Err(Refusal::Done(State::Failed))
    );
}

#[test]
fn cancel_ends_queued_asks_running_and_leaves_the_rest() {
    let Cancel::End(step) = cancel(&queued(), t0()) else {
        panic!()
    };
    assert_eq!(step.to(), State::Cancelled);
    let Step::End {
        outcome: Outcome::Error(status),
        ..
    } = step
    else {
        panic!()
    };
    assert_eq!(
        (status.code(), status.message.as_str()),
        (Code::Cancelled, CANCELLED_QUEUED)
    );
    let Cancel::End(step) = cancel(&queued(), t0()) else {
        panic!()
    };
    assert!(apply(&queued(), &step).cancel_requested, "a cancel counts as asked");
    assert_eq!(cancel(&claimed(), t0()), Cancel::Request);
    assert_eq!(cancel(&external(), t0()), Cancel::Request);
    let asked = Operation {
        cancel_requested: true,
        ..claimed()
    };
    assert_eq!(cancel(&asked, t0()), Cancel::Unchanged);
}

#[test]
fn heartbeats_renew_the_lease_for_its_duration() {
    assert_eq!(
        report(&claimed(), Some("t1"), t0() + secs(20)),
        Ok(Some(t0() + secs(50)))
    );
    assert_eq!(report(&external(), None, t0()), Ok(None));
    assert_eq!(report(&claimed(), Some("t9"), t0()), Err(Refusal::LeaseLost));
}

#[test]
fn release_hands_back_without_spending_an_attempt() {
    let step = release(&claimed(), "t1", t0()).unwrap();
    assert_eq!(
        step,
        Step::Requeue {
            attempt: 1,
            available_time: t0(),
            status_detail: None
        }
    );
    assert_eq!(release(&claimed(), "t9", t0()), Err(Refusal::LeaseLost));
    assert_eq!(
        release(&external(), "t1", t0()),
        Err(Refusal::NotClaimed),
        "an external operation has no queue to go back to"
    );
    assert_eq!(
        release(&queued(), "t1", t0()),
        Err(Refusal::LeaseLost),
        "released already: the token is stale"
    );
}

#[test]
fn sweep_expires_leases_by_attempt_and_cancellation() {
    let at_expiry = t0() + secs(30);
    assert_eq!(sweep(&claimed(), t0() + secs(29), secs(30)), None, "still leased");
    let (kind, step) = sweep(&claimed(), at_expiry, secs(30)).unwrap();
    assert_eq!(kind, Swept::Requeued);
    assert_eq!(
        step,
        Step::Requeue {
            attempt: 2,
            available_time: at_expiry,
            status_detail: Some(REQUEUED_AFTER_EXPIRY.into())
        }
    );
    let last = Operation {
        attempt: 3,
        ..claimed()
    };
    let (kind, step) = sweep(&last, at_expiry, secs(30)).unwrap();
    assert_eq!((kind, step.to()), (Swept::LeaseExpired, State::Failed));
    let cancelled = Operation {
        cancel_requested: true,
        cancel_time: Some(t0() + secs(10)),
        ..claimed()
    };
    let (kind, step) = sweep(&cancelled, at_expiry, secs(3600)).unwrap();
    assert_eq!((kind, step.to()), (Swept::CancelForced, State::Cancelled));
}

#[test]
fn sweep_forces_cancellation_after_the_grace() {
    let asked = Operation {
        cancel_requested: true,
        cancel_time: Some(t0()),
        ..external()
    };
    assert_eq!(sweep(&asked, t0() + secs(29), secs(30)), None);
    let (kind, step) = sweep(&asked, t0() + secs(30), secs(30)).unwrap();
    assert_eq!((kind, step.to()), (Swept::CancelForced, State::Cancelled));
}

#[test]
fn a_passed_deadline_ends_the_operation_first() {
    let timed = Operation {
        deadline: Some(t0() + secs(60)),
        cancel_requested: true,
        cancel_time: Some(t0()),
        ..claimed()
    };
    let (kind, step) = sweep(&timed, t0() + secs(60), secs(1)).unwrap();
    assert_eq!((kind, step.to()), (Swept::TimedOut, State::Failed));
    let waiting = Operation {
        deadline: Some(t0() + secs(60)),
        ..queued()
    };
    assert_eq!(sweep(&waiting, t0() + secs(59), secs(1)), None);
    let (kind, step) = sweep(&waiting, t0() + secs(60), secs(1)).unwrap();
    assert_eq!((kind, step.to()), (Swept::TimedOut, State::Failed));
}

#[test]
fn retention_counts_from_the_end() {
    assert_eq!(purge_before(t0() + secs(100), secs(40)), t0() + secs(60));
    assert_eq!(purge_before(t0(), Duration::MAX), SystemTime::UNIX_EPOCH);
}

fn any_operation() -> impl Strategy<Value = Operation> {
    (
        prop::sample::select(State::ALL.to_vec()),
        any::<bool>(),
        1i32..4,
        any::<bool>(),
        prop::option::of(0u64..100),
        prop::option::of(0u64..100),
        any::<bool>(),
    )
        .prop_map(|(state, claimed_by_queue, attempt, cancel, deadline, asked, leased)| {
            let mut op = if claimed_by_queue { claimed() } else { external() };
            op.state = state;
            op.attempt = attempt;
            op.cancel_requested = cancel;
            op.cancel_time = asked.filter(|_| cancel).map(|s| t0() + secs(s));
            op.deadline = deadline.map(|s| t0() + secs(s));
            if !(leased && claimed_by_queue && state == State::Running) {
                op.lease = None;
            }
            if state.is_done() {
                op.outcome = Some(if state == State::Succeeded {
                    response()
                } else {
                    failure(Code::Internal)
                });
            }
            op
        })
}

proptest! {
    /// Whatever the operation and whatever is asked of it, a decided step
    /// is an edge of the lifecycle, and a done operation stays as it is.
    #[test]
    fn every_decision_is_a_lifecycle_edge(op in any_operation(), at in 0u64..200, retry in any::<bool>()) {
        let now = t0() + secs(at);
        let mut steps = Vec::new();
        for outcome in [response(), failure(Code::Unavailable), failure(Code::Cancelled)] {
            for token in [None, Some("t1"), Some("t2")] {
                if let Ok(Some(step)) = complete(&op, token, outcome.clone(), retry.then_some(BACKOFF), now) {
                    steps.push(step);
                }
            }
        }
        if let Cancel::End(step) = cancel(&op, now) {
            steps.push(step);
        }
        steps.extend(release(&op, "t1", now).ok());
        steps.extend(sweep(&op, now, secs(30)).map(|(_, step)| step));
        for step in steps {
            prop_assert!(!op.done(), "{op:?} changed by {step:?}");
            prop_assert!(op.state.check(step.to()).is_ok(), "{} -> {}", op.state, step.to());
            if let Step::Requeue { attempt, .. } = step {
                prop_assert!(attempt <= op.max_attempts);
                prop_assert!(op.queue.is_some());
            }
        }
    }
}
