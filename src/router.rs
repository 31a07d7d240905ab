//! Path → route table: WebSocket endpoints and plain pages.
//!
//! Matching is `matchit`'s (`/chat/{room}`, `/files/{*rest}`); what a route
//! does is one of two kinds, erased behind a trait object once per route so
//! that each handler type keeps its own monomorphised connection loop.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::BoxFuture;
use crate::handler::WebSocketHandler;
use crate::handshake::{Endpoint, FactoryEndpoint};
use crate::request::PathParams;
use crate::response::text_response;
use crate::telemetry::RouteTelemetry;

/// A plain HTTP GET/HEAD handler.
pub(crate) type PageHandler =
    Arc<dyn Fn(http::Request<()>) -> BoxFuture<http::Response<Bytes>> + Send + Sync>;

/// Runs a page route: GET and HEAD reach the handler, other methods get 405
/// with `Allow: GET, HEAD`. Both HTTP fronts answer pages through this.
pub(crate) async fn answer_page(
    page: &PageHandler,
    request: &http::Request<()>,
) -> http::Response<Bytes> {
    if matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        return page(request.clone()).await;
    }
    let mut response = text_response(http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD"),
    );
    response
}

/// What a path leads to.
#[derive(Clone)]
pub(crate) enum Route {
    WebSocket(Arc<dyn Endpoint>),
    Page(PageHandler),
}

impl Route {
    /// A WebSocket route; `path` is its pattern, which labels its metrics
    /// and its connections' spans.
    pub fn websocket<F, H>(path: &str, factory: F) -> Self
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: WebSocketHandler,
    {
        Route::WebSocket(Arc::new(FactoryEndpoint {
            factory,
            route: RouteTelemetry::new(path),
        }))
    }

    pub fn page<F, Fut, B>(handler: F) -> Self
    where
        F: Fn(http::Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<B>> + Send + 'static,
        B: Into<Bytes>,
    {
        let handler = Arc::new(handler);
        Route::Page(Arc::new(move |request| {
            let response = handler(request);
            Box::pin(async move { response.await.map(Into::into) })
        }))
    }
}

/// The route table.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: matchit::Router<Route>,
}

impl Router {
    /// Adds a route. Panics on an invalid or conflicting path, as a
    /// programming error found at start-up.
    pub fn insert(&mut self, path: &str, route: Route) {
        if let Err(error) = self.routes.insert(path, route) {
            panic!("squall: cannot add route {path:?}: {error}");
        }
    }

    /// The route for `path` and the parameters it captured.
    pub fn at(&self, path: &str) -> Option<(&Route, PathParams)> {
        let matched = self.routes.at(path).ok()?;
        let params = matched
            .params
            .iter()
            .map(|(k, v)| {
                let value = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                (k.to_owned(), value.into_owned())
            })
            .collect();
        Some((matched.value, PathParams(params)))
    }
}
