//! Where the time comes from.
//!
//! Leases, deadlines, backoff and the cancel grace are all measured against
//! a clock that callers pass in (`now`), so stores never read one and tests
//! control time. One node reads the system clock ([`SystemClock`]). Several
//! nodes on one database must agree, whatever their own wall clocks say:
//! [`StoreClock`] reads the database's clock and carries it forward on the
//! node's monotonic clock, so a node whose wall clock is off by minutes
//! still expires leases when every other node does.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{Result, Store};

/// Where the server and the runtime read the time; tests substitute their own.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The store's clock ([`Store::time`]), read every `refresh` and carried
/// forward in between by the monotonic clock.
///
/// A reading is taken as the midpoint of the round trip, so it is off by
/// at most half the round trip (logged when it exceeds 50 ms); between
/// readings only the drift of the local oscillator adds, microseconds over
/// the default 10 s. Readings over a slow round trip (more than
/// [`StoreClock::MAX_ROUND_TRIP`]) are dropped rather than trusted.
#[derive(Debug)]
pub struct StoreClock {
    /// A reading of the store's clock and the local instant it belongs to.
    /// A std mutex: held to copy two words, never across an `.await`.
    anchor: Mutex<(Instant, SystemTime)>,
    round_trip: Mutex<Duration>,
}

impl StoreClock {
    /// Readings slower than this are not used.
    pub const MAX_ROUND_TRIP: Duration = Duration::from_secs(1);
    /// How often the store's clock is read.
    pub const REFRESH: Duration = Duration::from_secs(10);

    /// Reads the store's clock once (failing if it cannot), then keeps
    /// reading it every `refresh` in the background for as long as the
    /// clock is in use.
    pub async fn start(store: Arc<dyn Store>, refresh: Duration) -> Result<Arc<Self>> {
        let (anchor, round_trip) = read(store.as_ref()).await?;
        let clock = Arc::new(Self {
            anchor: Mutex::new(anchor),
            round_trip: Mutex::new(round_trip),
        });
        let skew = match SystemTime::now().duration_since(clock.now()) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        tracing::info!(
            round_trip_ms = round_trip.as_secs_f64() * 1e3,
            local_minus_store_s = skew,
            "reading time from the store's clock"
        );
        tokio::spawn(refresh_until_dropped(Arc::downgrade(&clock), store, refresh));
        Ok(clock)
    }

    /// The round trip of the reading in use: twice the most the clock can
    /// be off from the store's.
    pub fn round_trip(&self) -> Duration {
        *self.round_trip.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Clock for StoreClock {
    fn now(&self) -> SystemTime {
        let (at, time) = *self.anchor.lock().unwrap_or_else(|poison| poison.into_inner());
        time + at.elapsed()
    }
}

/// One reading: the store's time at the midpoint of the round trip.
async fn read(store: &dyn Store) -> Result<((Instant, SystemTime), Duration)> {
    let sent = Instant::now();
    let time = store.time().await?;
    let round_trip = sent.elapsed();
    Ok(((sent + round_trip / 2, time), round_trip))
}

async fn refresh_until_dropped(clock: Weak<StoreClock>, store: Arc<dyn Store>, refresh: Duration) {
    loop {
        tokio::time::sleep(refresh).await;
        let reading = read(store.as_ref()).await;
        let Some(clock) = clock.upgrade() else { return };
        match reading {
            Ok((anchor, round_trip)) if round_trip <= StoreClock::MAX_ROUND_TRIP => {
                if round_trip > Duration::from_millis(50) {
                    tracing::warn!(
                        round_trip_ms = round_trip.as_secs_f64() * 1e3,
                        "slow read of the store's clock"
                    );
                }
                *clock.anchor.lock().unwrap_or_else(|poison| poison.into_inner()) = anchor;
                *clock.round_trip.lock().unwrap_or_else(|poison| poison.into_inner()) = round_trip;
            }
            Ok((_, round_trip)) => {
                tracing::warn!(
                    round_trip_ms = round_trip.as_secs_f64() * 1e3,
                    "ignoring a reading of the store's clock over a slow round trip"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the store's clock; carrying the last reading forward")
            }
        }
    }
}
