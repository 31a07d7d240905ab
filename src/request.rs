//! Reading what a client sent with its request: path parameters, query
//! arguments, cookies and the peer's address.
//!
//! squall hands requests around as plain [`http::Request<()>`] values (the
//! body of an upgrade or page request is never read); what squall knows about
//! a request beyond its head travels in the request's extensions and is read
//! through [`RequestExt`].

use std::borrow::Cow;
use std::net::SocketAddr;

/// Path parameters captured by a route such as `/chat/{room}`, stored in the
/// request's extensions when the route captured any (a route without
/// parameters stores none: [`RequestExt::path_param`] reads `None` either
/// way).
#[derive(Clone, Debug, Default)]
pub struct PathParams(pub(crate) Vec<(String, String)>);

impl PathParams {
    /// Stores these parameters in `request`'s extensions, unless there are
    /// none: the insert costs an allocation per request.
    pub(crate) fn store_in(self, request: &mut http::Request<()>) {
        if !self.0.is_empty() {
            request.extensions_mut().insert(self);
        }
    }

    /// The value of the parameter `name`, if the route captured it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every captured `(name, value)` pair, in route order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The address of the peer that sent a request, stored in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Accessors for what squall attaches to a request head. In scope with
/// `use squall::prelude::*;` (or `use squall::RequestExt;`).
///
/// ```
/// use squall::prelude::*;
///
/// let request = http::Request::get("/chat/?name=ada%20l&x=1")
///     .header("cookie", "session=abc; theme=dark")
///     .body(())
///     .unwrap();
/// assert_eq!(request.query_argument("name").as_deref(), Some("ada l"));
/// assert_eq!(request.cookie("theme"), Some("dark"));
/// assert_eq!(request.path_param("room"), None);
/// ```
pub trait RequestExt {
    /// The path parameter `name` captured by the route (`/chat/{room}` → `room`).
    fn path_param(&self, name: &str) -> Option<&str>;
    /// The first query argument `name`, percent-decoded (Tornado's
    /// `get_query_argument`).
    fn query_argument(&self, name: &str) -> Option<Cow<'_, str>>;
    /// Every query argument `name`, percent-decoded, in order.
    fn query_arguments(&self, name: &str) -> Vec<Cow<'_, str>>;
    /// The value of the cookie `name` from the `Cookie` headers.
    fn cookie(&self, name: &str) -> Option<&str>;
    /// The peer's address, when the request came through a squall server.
    fn remote_addr(&self) -> Option<SocketAddr>;
}

impl RequestExt for http::Request<()> {
    fn path_param(&self, name: &str) -> Option<&str> {
        self.extensions().get::<PathParams>()?.get(name)
    }

    fn query_argument(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.uri().query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    fn query_arguments(&self, name: &str) -> Vec<Cow<'_, str>> {
        let Some(query) = self.uri().query() else {
            return Vec::new();
        };
        form_urlencoded::parse(query.as_bytes())
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value)
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.extensions().get::<RemoteAddr>().map(|addr| addr.0)
    }
}

/// The origins that the default
/// [`WebSocketHandler::check_origin`](crate::WebSocketHandler::check_origin) accepts,
/// from [`Application::trusted_origins`](crate::Application::trusted_origins).
/// squall stores them in each upgrade request's extensions when any are set
/// (with none set, the request has no `TrustedOrigins`, which the default
/// `check_origin` reads as the empty list it is).
#[derive(Clone, Debug, Default)]
pub struct TrustedOrigins(pub(crate) std::sync::Arc<[String]>);

impl TrustedOrigins {
    /// Stores `origins` in `request`'s extensions, unless the list is empty:
    /// the insert costs an allocation per upgrade.
    pub(crate) fn store_in(origins: &std::sync::Arc<[String]>, request: &mut http::Request<()>) {
        if !origins.is_empty() {
            request
                .extensions_mut()
                .insert(TrustedOrigins(origins.clone()));
        }
    }

    /// Whether `origin` is listed (compared ASCII case-insensitively).
    pub fn contains(&self, origin: &str) -> bool {
        self.0
            .iter()
            .any(|trusted| trusted.eq_ignore_ascii_case(origin))
    }
}

/// The value [`WebSocketHandler::prepare`](crate::WebSocketHandler::prepare) settled on as the connection's
/// user (or session, or any other typed value), stored in the upgrade
/// request's extensions and read back with
/// [`WebSocket::current_user`](crate::WebSocket::current_user).
///
/// `prepare` inserts it: `request.extensions_mut().insert(CurrentUser(user))`.
/// One value per type `T`; a second insert of the same type replaces the
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentUser<T>(pub T);
