//! Metrics (feature `metrics`): what squall records through the `metrics`
//! facade crate, and where each handle is resolved.
//!
//! The application installs a recorder (for Prometheus,
//! `metrics-exporter-prometheus`); without one the facade hands out no-op
//! handles and nothing is recorded. Without the feature, every type here is
//! empty and every method an empty inline function, so the engine calls them
//! unconditionally.
//!
//! Cost: a per-message metric must not look its name up per message. Each
//! route resolves its per-connection handles (messages, bytes, handler
//! time…) once, on its first connection (so a recorder installed after the
//! application was built is still found), and every connection of the route
//! shares them through an `Arc`. A connection counts its messages and bytes
//! in plain fields and adds them to the shared counters once per round of
//! its poll loop (when it runs out of work, and when it ends), so a burst of
//! pipelined messages costs one atomic add per counter, not one per message,
//! and a scrape never lags behind an idle connection. Rare events (a close,
//! a refused handshake, an overflow) look their handle up when they happen.
//!
//! Handler time is sampled: each connection times its first `on_message`
//! and then one in every `handler_time_sampling` (a countdown of its own,
//! no shared state, no randomness), because a histogram sample costs the
//! Prometheus recorder about 50 ns, several percent of an echo at a million
//! messages a second. An untimed message costs a decrement and a branch.
//!
//! The names, with their labels, are listed in README.md ("Metrics").

use std::sync::Arc;

/// Which side started a connection's close handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// squall sent the first close frame (handler, overflow, shutdown,
    /// ping timeout, protocol error, rate limit).
    Server,
    /// The peer sent the first close frame.
    Client,
    /// Nobody: the connection dropped without a close handshake (1006).
    Neither,
}

impl Side {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
            Side::Neither => "none",
        }
    }
}

pub(crate) use imp::*;

/// Bucket bounds, in seconds, for the `squall_handler_seconds` histogram
/// that the `metrics` feature records: 10 µs to 10 s, about three per
/// decade. (Defined with or without the feature, so that code setting up a
/// recorder compiles either way.)
///
/// Give them to the recorder. Prometheus's recorder otherwise keeps a
/// summary, whose quantile sketch costs several times more CPU per sample
/// when samples are folded in (on every scrape and upkeep) and cannot be
/// aggregated across processes:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
///
/// let prometheus = PrometheusBuilder::new()
///     .set_buckets_for_metric(
///         Matcher::Full("squall_handler_seconds".into()),
///         &squall::HANDLER_SECONDS_BUCKETS,
///     )?
///     .install_recorder()?;
/// # drop(prometheus);
/// # Ok(())
/// # }
/// ```
pub const HANDLER_SECONDS_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[cfg(feature = "metrics")]
mod imp {
    use std::num::NonZeroU64;
    use std::sync::{Arc, OnceLock};

    // The handler-time clock: the TSC through `quanta` costs about a fifth
    // of a `clock_gettime` in a VM, and it is read twice per timed message.
    // The raw counter is read and only the difference is scaled:
    // `quanta::Instant::now` would look up a thread-local mock clock and a
    // global one, and scale, on every read.
    use quanta::Clock;

    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    use super::Side;
    use crate::settings::OverflowPolicy;

    /// The metrics of one WebSocket route, labelled `route="/chat/{room}"`.
    pub(crate) struct RouteMetrics {
        route: Arc<str>,
        handles: OnceLock<Arc<Handles>>,
    }

    /// The handles every connection of a route shares.
    struct Handles {
        route: Arc<str>,
        open: Gauge,
        received: Counter,
        received_bytes: Counter,
        sent: Counter,
        sent_bytes: Counter,
        handler_seconds: Histogram,
        clock: Clock,
        panics: Counter,
        ping_timeouts: Counter,
    }

    impl RouteMetrics {
        pub fn new(route: &str) -> Self {
            RouteMetrics {
                route: Arc::from(route),
                handles: OnceLock::new(),
            }
        }

        fn handles(&self) -> &Arc<Handles> {
            self.handles.get_or_init(|| {
                let route = self.route.clone();
                Arc::new(Handles {
                    open: gauge!("squall_connections_open", "route" => route.clone()),
                    received: counter!("squall_messages_received_total", "route" => route.clone()),
                    received_bytes: counter!("squall_received_bytes_total", "route" => route.clone()),
                    sent: counter!("squall_messages_sent_total", "route" => route.clone()),
                    sent_bytes: counter!("squall_sent_bytes_total", "route" => route.clone()),
                    handler_seconds: histogram!("squall_handler_seconds", "route" => route.clone()),
                    // Calibrated once per process (on the first route's first
                    // connection), not on some connection's first message.
                    clock: Clock::new(),
                    panics: counter!("squall_handler_panics_total", "route" => route.clone()),
                    ping_timeouts: counter!("squall_ping_timeouts_total", "route" => route.clone()),
                    route,
                })
            })
        }

        /// A handshake on this route answered with `status` (101 when
        /// accepted).
        pub fn handshake(&self, status: u16) {
            counter!(
                "squall_handshakes_total",
                "route" => self.route.clone(),
                "status" => status_label(status)
            )
            .increment(1);
        }

        /// `prepare` answered with a refusal (any status of its own).
        pub fn prepare_refused(&self) {
            counter!("squall_prepare_refusals_total", "route" => self.route.clone()).increment(1);
        }

        /// `prepare` did not finish within `prepare_timeout` (503).
        pub fn prepare_timed_out(&self) {
            counter!("squall_prepare_timeouts_total", "route" => self.route.clone()).increment(1);
        }

        /// A connection opens: counted open until the value is dropped.
        /// It times its first `on_message`, then one in every
        /// `sample_every` (at least 1).
        pub fn connection(&self, sample_every: u32) -> ConnectionMetrics {
            let handles = self.handles().clone();
            handles.open.increment(1.0);
            ConnectionMetrics {
                handles,
                unflushed: Unflushed::default(),
                sample_every: sample_every.max(1),
                countdown: 0,
            }
        }
    }

    /// A status code as a label value; the common ones without allocating.
    fn status_label(status: u16) -> metrics::SharedString {
        let known = match status {
            101 => "101",
            200 => "200",
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            405 => "405",
            426 => "426",
            429 => "429",
            500 => "500",
            503 => "503",
            _ => return status.to_string().into(),
        };
        known.into()
    }

    /// One open connection's metrics; counts it open until dropped.
    pub(crate) struct ConnectionMetrics {
        handles: Arc<Handles>,
        unflushed: Unflushed,
        /// One `on_message` in every this many is timed.
        sample_every: u32,
        /// Messages to let pass untimed before the next timed one.
        countdown: u32,
    }

    /// Counts not yet added to the shared counters.
    #[derive(Default)]
    struct Unflushed {
        received: u64,
        received_bytes: u64,
        sent: u64,
        sent_bytes: u64,
    }

    impl Drop for ConnectionMetrics {
        fn drop(&mut self) {
            self.flush();
            self.handles.open.decrement(1.0);
        }
    }

    /// When a handler method started (the clock's raw count), for
    /// `squall_handler_seconds`; `None` when this message is not timed.
    /// Non-zero, so that the option takes no more room than the count in
    /// the connection's future, which holds it while `on_message` runs.
    pub(crate) struct Timer(Option<NonZeroU64>);

    impl ConnectionMetrics {
        /// A message of `len` payload bytes came in (counted at the next
        /// [`flush`](Self::flush)).
        #[inline]
        pub fn received(&mut self, len: usize) {
            self.unflushed.received += 1;
            self.unflushed.received_bytes += len as u64;
        }

        /// A message of `len` payload bytes went out (into the socket's
        /// write buffer; counted at the next [`flush`](Self::flush)).
        #[inline]
        pub fn sent(&mut self, len: usize) {
            self.unflushed.sent += 1;
            self.unflushed.sent_bytes += len as u64;
        }

        /// Adds the messages and bytes counted since the last flush to the
        /// shared counters.
        #[inline]
        pub fn flush(&mut self) {
            let unflushed = &mut self.unflushed;
            if unflushed.received != 0 {
                self.handles.received.increment(unflushed.received);
                self.handles
                    .received_bytes
                    .increment(unflushed.received_bytes);
                unflushed.received = 0;
                unflushed.received_bytes = 0;
            }
            if unflushed.sent != 0 {
                self.handles.sent.increment(unflushed.sent);
                self.handles.sent_bytes.increment(unflushed.sent_bytes);
                unflushed.sent = 0;
                unflushed.sent_bytes = 0;
            }
        }

        /// `on_message` is about to run: reads the clock if this message
        /// is one of those timed (the first, then one in every
        /// `sample_every`), else only counts down.
        #[inline]
        pub fn start_timer(&mut self) -> Timer {
            if self.countdown != 0 {
                self.countdown -= 1;
                return Timer(None);
            }
            self.countdown = self.sample_every - 1;
            // A raw count of 0 (never seen after boot) is read as 1 tick.
            let start = NonZeroU64::new(self.handles.clock.raw()).unwrap_or(NonZeroU64::MIN);
            Timer(Some(start))
        }

        /// `on_message` that started at `timer` has returned: records its
        /// time if it was timed.
        #[inline]
        pub fn handler_done(&self, timer: Timer) {
            if let Timer(Some(start)) = timer {
                let clock = &self.handles.clock;
                let nanos = clock.delta_as_nanos(start.get(), clock.raw());
                self.handles.handler_seconds.record(nanos as f64 * 1e-9);
            }
        }

        pub fn panicked(&self) {
            self.handles.panics.increment(1);
        }

        pub fn ping_timed_out(&self) {
            self.handles.ping_timeouts.increment(1);
        }

        /// The input rate limit closed the connection or paused its reading.
        pub fn rate_limited(&self, action: &'static str) {
            counter!(
                "squall_rate_limited_total",
                "route" => self.handles.route.clone(),
                "action" => action
            )
            .increment(1);
        }

        /// The connection is over: `code` is the close code it ended with
        /// (1006 without a close handshake), `side` who started the close.
        pub fn closed(&self, code: u16, side: Side) {
            counter!(
                "squall_closes_total",
                "route" => self.handles.route.clone(),
                "code" => code.to_string(),
                "side" => side.as_str()
            )
            .increment(1);
        }
    }

    /// A non-waiting send found a queue full.
    pub(crate) fn queue_overflow(policy: OverflowPolicy) {
        let policy = match policy {
            OverflowPolicy::Reject => "reject",
            OverflowPolicy::Close(_) => "close",
        };
        counter!("squall_send_queue_overflows_total", "policy" => policy).increment(1);
    }

    /// A connection was refused before its request was read or routed:
    /// `reason` is `max_connections` or `max_connections_per_ip`.
    pub(crate) fn connection_refused(reason: &'static str) {
        counter!("squall_connections_refused_total", "reason" => reason).increment(1);
    }

    /// A broadcast was handed to the broker.
    pub(crate) fn broker_published() {
        counter!("squall_broker_publishes_total").increment(1);
    }

    /// A broadcast from another process was delivered here.
    pub(crate) fn broker_delivered() {
        counter!("squall_broker_deliveries_total").increment(1);
    }

    /// The broker lost its backend (counted once per outage).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn broker_outage() {
        counter!("squall_broker_outages_total").increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    //! Without the feature: the same API, recording nothing.
    #![allow(clippy::unused_self)]

    use super::Side;
    use crate::settings::OverflowPolicy;

    pub(crate) struct RouteMetrics;
    pub(crate) struct ConnectionMetrics;
    pub(crate) struct Timer;

    impl RouteMetrics {
        #[inline(always)]
        pub fn new(_route: &str) -> Self {
            RouteMetrics
        }
        #[inline(always)]
        pub fn handshake(&self, _status: u16) {}
        #[inline(always)]
        pub fn prepare_refused(&self) {}
        #[inline(always)]
        pub fn prepare_timed_out(&self) {}
        #[inline(always)]
        pub fn connection(&self, _sample_every: u32) -> ConnectionMetrics {
            ConnectionMetrics
        }
    }

    impl ConnectionMetrics {
        #[inline(always)]
        pub fn received(&mut self, _len: usize) {}
        #[inline(always)]
        pub fn sent(&mut self, _len: usize) {}
        #[inline(always)]
        pub fn flush(&mut self) {}
        #[inline(always)]
        pub fn start_timer(&mut self) -> Timer {
            Timer
        }
        #[inline(always)]
        pub fn handler_done(&self, _timer: Timer) {}
        #[inline(always)]
        pub fn panicked(&self) {}
        #[inline(always)]
        pub fn ping_timed_out(&self) {}
        #[inline(always)]
        pub fn rate_limited(&self, _action: &'static str) {}
        #[inline(always)]
        pub fn closed(&self, _code: u16, _side: Side) {}
    }

    #[inline(always)]
    pub(crate) fn queue_overflow(_policy: OverflowPolicy) {}
    #[inline(always)]
    pub(crate) fn connection_refused(_reason: &'static str) {}
    #[inline(always)]
    pub(crate) fn broker_published() {}
    #[inline(always)]
    pub(crate) fn broker_delivered() {}
    #[allow(dead_code)]
    #[inline(always)]
    pub(crate) fn broker_outage() {}
}

/// What a connection knows of the WebSocket route it came through: its
/// pattern (for the connection's span) and its metrics.
pub(crate) struct RouteTelemetry {
    /// The route as registered, `/chat/{room}`: a bounded label, unlike the
    /// request path.
    pub path: Arc<str>,
    pub metrics: RouteMetrics,
}

impl RouteTelemetry {
    pub fn new(path: &str) -> Arc<Self> {
        Arc::new(RouteTelemetry {
            path: Arc::from(path),
            metrics: RouteMetrics::new(path),
        })
    }
}
