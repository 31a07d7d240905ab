//! squall's benchmark echo (`examples/bench_echo.rs`) built with the
//! `metrics` feature and a Prometheus recorder installed, as a production
//! server would run it: every message is counted (messages, bytes, handler
//! time) and `/metrics` renders them. `benches/run_matrix.sh` runs it beside
//! `bench_echo` to measure what the metrics cost.
//!
//! ```text
//! cargo run --release --features metrics --example bench_echo_metrics -- 127.0.0.1:9001
//! ```

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
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
            let prometheus = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("squall_handler_seconds".into()),
                    &squall::HANDLER_SECONDS_BUCKETS,
                )
                .expect("buckets given")
                .install_recorder()
                .expect("the only recorder");
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
            Application::new()
                .get("/metrics", move |_request| {
                    let body = prometheus.render();
                    async move { http::Response::new(body) }
                })
                .websocket("/", || Echo)
                .websocket("/{*path}", || Echo)
                .listen(addr)
                .await
        })
}
