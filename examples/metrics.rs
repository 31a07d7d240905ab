//! Prometheus metrics: an echo socket at `/socket/` and its metrics at
//! `/metrics`, rendered by a squall page route from
//! `metrics-exporter-prometheus` (whose own HTTP listener is not used, so
//! there is one port to run and protect).
//!
//! ```text
//! cargo run --example metrics --features metrics      # http://127.0.0.1:8888/metrics
//! cargo run --example metrics --features metrics -- 0.0.0.0:9000
//! ```
//!
//! `tests/metrics_example.rs` runs [`app`] from this file and scrapes it.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use squall::{Application, Message, WebSocket, WebSocketHandler};

/// Echoes every message back unchanged.
pub struct Echo;

impl WebSocketHandler for Echo {
    async fn on_message(&mut self, ws: &WebSocket, message: Message) {
        ws.write_message(message).await.ok();
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder.
/// Call it once, before the application serves (a second call fails).
pub fn install_recorder() -> PrometheusHandle {
    // Handler times go into fixed buckets: a Prometheus histogram, cheap to
    // fold samples into and aggregatable across processes (without this
    // the recorder keeps a summary).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("squall_handler_seconds".into()),
            &squall::HANDLER_SECONDS_BUCKETS,
        )
        .expect("bucket bounds given")
        .install_recorder()
        .expect("no other metrics recorder installed");
    // Histograms collect raw samples until they are rendered; without a
    // scrape for a while, upkeep folds them into their buckets so memory
    // stays bounded.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    handle
}

/// The application: the echo socket and the `/metrics` page.
pub fn app(prometheus: PrometheusHandle) -> Application {
    Application::new()
        .websocket("/socket/", || Echo)
        .get("/metrics", move |_request| {
            let body = prometheus.render();
            async move {
                let mut response = http::Response::new(body);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        })
}

#[allow(dead_code)] // the test includes this file for `app` only
#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    app(install_recorder()).listen(addr).await
}
