//! Prometheus metrics, served at `/metrics`. Owned by the server rather than
//! global, so several servers in one process (tests) keep separate counts.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use longrun_store::{QueueStats, SweepEvent, Swept};
use longrun_types::{Code, State};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    protocol: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: &'static str,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    queue: String,
    outcome: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    created: Family<QueueLabels, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    waiters: Gauge<i64, std::sync::atomic::AtomicI64>,
    retries: Family<QueueLabels, Counter>,
    lease_expiries: Family<QueueLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    active_leases: Family<QueueLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to ~110 s: Wait and Claim may block for up to `--max-wait`.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// The label for an operation's queue; external operations have none.
fn queue_label(queue: Option<&str>) -> String {
    queue.unwrap_or("external").to_owned()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("longrun");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let created = Family::<QueueLabels, Counter>::default();
        let finished = Family::<OutcomeLabels, Counter>::default();
        let waiters = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "requests",
            "API requests by method, protocol and canonical code",
            requests.clone(),
        );
        registry.register("request_duration_seconds", "API request latency", latency.clone());
        registry.register("operations_created", "Operations created, by queue", created.clone());
        registry.register(
            "operations_finished",
            "Operations that reached a terminal state, by queue and outcome",
            finished.clone(),
        );
        registry.register("waiters", "Wait calls blocked on an operation", waiters.clone());
        let retries = Family::<QueueLabels, Counter>::default();
        let lease_expiries = Family::<QueueLabels, Counter>::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let active_leases = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "retries",
            "Operations re-queued for another attempt, by queue",
            retries.clone(),
        );
        registry.register(
            "lease_expiries",
            "Leases that expired because a worker stopped reporting, by queue",
            lease_expiries.clone(),
        );
        registry.register(
            "queue_depth",
            "Operations waiting to be claimed, by queue",
            queue_depth.clone(),
        );
        registry.register(
            "active_leases",
            "Operations leased by a worker now, by queue",
            active_leases.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            created,
            finished,
            waiters,
            retries,
            lease_expiries,
            queue_depth,
            active_leases,
        })
    }

    pub fn request(&self, method: &'static str, protocol: &'static str, code: Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                protocol,
                code: code.name(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { method, protocol })
            .observe(elapsed.as_secs_f64());
    }

    pub fn created(&self, queue: Option<&str>) {
        self.created
            .get_or_create(&QueueLabels {
                queue: queue_label(queue),
            })
            .inc();
    }

    pub fn finished(&self, queue: Option<&str>, state: State) {
        self.finished
            .get_or_create(&OutcomeLabels {
                queue: queue_label(queue),
                outcome: state.name(),
            })
            .inc();
    }

    pub fn retried(&self, queue: Option<&str>) {
        self.retries
            .get_or_create(&QueueLabels {
                queue: queue_label(queue),
            })
            .inc();
    }

    /// Counts what the sweep did.
    pub fn swept(&self, event: &SweepEvent) {
        let queue = event.queue.as_deref();
        match event.kind {
            Swept::Requeued => {
                self.lease_expiries
                    .get_or_create(&QueueLabels {
                        queue: queue_label(queue),
                    })
                    .inc();
                self.retried(queue);
            }
            Swept::LeaseExpired => {
                self.lease_expiries
                    .get_or_create(&QueueLabels {
                        queue: queue_label(queue),
                    })
                    .inc();
                self.finished(queue, State::Failed);
            }
            Swept::TimedOut => self.finished(queue, State::Failed),
            Swept::CancelForced => self.finished(queue, State::Cancelled),
            Swept::Purged => {}
        }
    }

    /// Replaces the queue gauges with a fresh reading.
    pub fn set_queues(&self, stats: &[QueueStats]) {
        self.queue_depth.clear();
        self.active_leases.clear();
        for stat in stats {
            let labels = QueueLabels {
                queue: stat.queue.clone(),
            };
            self.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(stat.queued).unwrap_or(i64::MAX));
            self.active_leases
                .get_or_create(&labels)
                .set(i64::try_from(stat.leased).unwrap_or(i64::MAX));
        }
    }

    /// Counts a waiter until the guard drops.
    pub fn waiter(self: &Arc<Self>) -> WaiterGuard {
        self.waiters.inc();
        WaiterGuard(self.clone())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Debug)]
pub(crate) struct WaiterGuard(Arc<Metrics>);

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.waiters.dec();
    }
}
