//! Wait calls blocked on operations, woken by name.
//!
//! Ten thousand Waits must not each follow the store's change feed (every
//! change would wake them all): one dispatcher per node does, and wakes
//! only the Waits on the operation that changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

use longrun_store::{Change, Store};

/// The Waits blocked on this node, by operation name.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
    dispatcher: OnceLock<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Each watched name, its bell, and how many Waits listen to it.
    names: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// The store's change feed ended: nothing will ring again.
    closed: AtomicBool,
}

/// One Wait's interest in a name; dropping it ends the interest.
pub(crate) struct Listening {
    shared: Arc<Shared>,
    name: String,
    bell: Arc<Notify>,
}

impl Wakeups {
    /// Listens for changes of `name`. Call [`Listening::armed`] before each
    /// read of the operation, so that no change slips in between.
    pub(crate) fn listen(&self, store: &dyn Store, name: &str) -> Listening {
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(Arc::downgrade(&self.shared), store.changes()));
        });
        let bell = {
            let mut names = lock(&self.shared.names);
            let (bell, listeners) = names.entry(name.to_owned()).or_default();
            *listeners += 1;
            bell.clone()
        };
        Listening {
            shared: self.shared.clone(),
            name: name.to_owned(),
            bell,
        }
    }
}

impl Listening {
    /// A future that resolves at the next change of the name (or when the
    /// feed is lost), registered now: created before a read, it catches a
    /// change committed after that read began.
    pub(crate) fn armed(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.bell.notified());
        notified.as_mut().enable();
        notified
    }

    /// The change feed ended: waiting for a ring would be forever.
    pub(crate) fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut names = lock(&self.shared.names);
        if let Some((_, listeners)) = names.get_mut(&self.name) {
            *listeners -= 1;
            if *listeners == 0 {
                names.remove(&self.name);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it; a poisoned map is still consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn dispatch(shared: Weak<Shared>, mut changes: broadcast::Receiver<Change>) {
    loop {
        let change = changes.recv().await;
        let Some(shared) = shared.upgrade() else { return };
        let ring_all = |shared: &Shared| {
            for (bell, _) in lock(&shared.names).values() {
                bell.notify_waiters();
            }
        };
        match change {
            Ok(change) => {
                let bell = lock(&shared.names).get(&change.name).map(|(bell, _)| bell.clone());
                if let Some(bell) = bell {
                    bell.notify_waiters();
                }
            }
            // Missed some: every Wait looks again.
            Err(RecvError::Lagged(_)) => ring_all(&shared),
            Err(RecvError::Closed) => {
                shared.closed.store(true, Ordering::Release);
                ring_all(&shared);
                return;
            }
        }
    }
}
