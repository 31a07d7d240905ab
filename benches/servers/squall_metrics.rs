//! squall's benchmark echo (`examples/bench_echo.rs`) built with the
//! `metrics` feature and a Prometheus recorder installed, as a production
//! server would run it: every message is counted (messages, bytes, handler
//! time) and `/metrics` renders them. `benches/run_matrix.sh` runs it beside
//! `bench_echo` to measure what the metrics cost.
//!
//! ```text
//! cargo run --release --features metrics --example bench_echo_metrics -- 127.0.0.1:9001
//! ```
//!
//! With `SQUALL_BENCH_NO_HISTOGRAM=1` in its environment it records every
//! metric but `squall_handler_seconds` (filtered out), to tell what the
//! recorder's per-sample work costs from what squall's own counting does.
//! `SQUALL_BENCH_HANDLER_SAMPLING=N` sets `handler_time_sampling(N)` (one
//! message in every N timed; default: squall's default).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::layers::{FilterLayer, Layer};
use squall::{Application, Message, WebSocket, WebSocketHandler};

struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("squall_handler_seconds".into()),
                    &squall::HANDLER_SECONDS_BUCKETS,
                )
                .expect("buckets given")
                .build_recorder();
            let prometheus = recorder.handle();
            if std::env::var_os("SQUALL_BENCH_NO_HISTOGRAM").is_some() {
                // Every metric but the per-message histogram, which the
                // filter turns into a no-op handle: what the counters and
                // squall's own timing cost, without the recorder's
                // per-sample work.
                let filtered =
                    FilterLayer::from_patterns(["squall_handler_seconds"]).layer(recorder);
                metrics::set_global_recorder(filtered).expect("the only recorder");
            } else {
                metrics::set_global_recorder(recorder).expect("the only recorder");
            }
            // As a deployment would: handler times in buckets, and samples
            // folded into them every few seconds (a scrape does it too).
            let upkeep = prometheus.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let mut app = Application::new();
            if let Some(n) = std::env::var("SQUALL_BENCH_HANDLER_SAMPLING")
                .ok()
                .and_then(|n| n.parse().ok())
            {
                app = app.handler_time_sampling(n);
            }
            app.get("/metrics", move |_request| {
                let body = prometheus.render();
                async move { http::Response::new(body) }
            })
            .websocket("/", || Echo)
            .websocket("/{*path}", || Echo)
            .listen(addr)
            .await
        })
}
