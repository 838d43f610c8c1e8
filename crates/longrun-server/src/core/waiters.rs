//! Bounds on calls that block (Wait, Claim long-polls, watch streams).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::Error;
use longrun_types::Code;

/// Wait and Claim calls that block: each holds a task, a connection and
/// their buffers for up to `--max-wait`, so their number is bounded in all
/// and per principal.
#[derive(Debug)]
pub(crate) struct Waiters {
    total: usize,
    per_principal: usize,
    /// Blocked now: in all, and by principal. A std mutex: held to count.
    blocked: Mutex<(usize, HashMap<String, usize>)>,
}

/// One blocked call; counted until dropped.
pub(crate) struct Waiting {
    waiters: Arc<Waiters>,
    who: String,
}

impl Waiters {
    pub(crate) fn new(total: usize, per_principal: usize) -> Self {
        Self {
            total,
            per_principal,
            blocked: Mutex::new((0, HashMap::new())),
        }
    }

    /// Counts one more blocked call of `who`, or `RESOURCE_EXHAUSTED`.
    pub(crate) fn enter(waiters: &Arc<Self>, who: &str) -> Result<Waiting, Error> {
        let mut blocked = waiters.blocked.lock().unwrap_or_else(|poison| poison.into_inner());
        let (all, by_principal) = &mut *blocked;
        let mine = by_principal.get(who).copied().unwrap_or(0);
        if *all >= waiters.total || mine >= waiters.per_principal {
            let limit = if *all >= waiters.total {
                waiters.total
            } else {
                waiters.per_principal
            };
            return Err(Error::new(
                Code::ResourceExhausted,
                "TOO_MANY_WAITERS",
                format!("too many Wait and Claim calls are blocked (the limit is {limit}); retry later"),
            ));
        }
        *all += 1;
        by_principal.insert(who.to_owned(), mine + 1);
        Ok(Waiting {
            waiters: waiters.clone(),
            who: who.to_owned(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut blocked = self.waiters.blocked.lock().unwrap_or_else(|poison| poison.into_inner());
        let (all, by_principal) = &mut *blocked;
        *all = all.saturating_sub(1);
        if let Some(mine) = by_principal.get_mut(&self.who) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                by_principal.remove(&self.who);
            }
        }
    }
}
