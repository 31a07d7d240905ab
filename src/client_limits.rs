//! Caps per client address: at most
//! [`max_connections_per_ip`](crate::Application::max_connections_per_ip)
//! WebSocket connections from one IP address at a time.
//!
//! A front asks for a [`ClientSlot`] before it runs the handshake and keeps
//! it inside the connection's future, so the slot is given back however the
//! connection ends: a refused handshake, a failed upgrade write, a clean
//! close, a dropped socket, a panic, or the shutdown aborting the task. The
//! count lives in one map behind a mutex, touched twice per connection (never
//! per message); an address's entry is removed when its count is back to
//! zero, so the map holds only addresses with open connections.
//!
//! The address is the client's as the front resolved it: the TCP peer, or,
//! behind a trusted proxy, the one from `Forwarded` / `X-Forwarded-For`
//! (`forwarded.rs`). Over the cap, the request gets [`refusal`]: 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::response::text_response;

/// The seconds a refused client is told to wait (`Retry-After`).
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// The open-connection count of each client address.
pub(crate) struct ClientLimits {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientLimits {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(ClientLimits {
            max_per_ip: max_per_ip.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more connection from `ip`, or `None` if it already
    /// has the most allowed.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// How many connections `ip` holds now.
    #[allow(dead_code)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count; given back on drop.
pub(crate) struct ClientSlot {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer to a client over its cap: 429 Too Many Requests with
/// `Retry-After`.
pub(crate) fn refusal() -> Response<Bytes> {
    let mut response = text_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back_on_drop() {
        let limits = ClientLimits::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.try_acquire(a).unwrap();
        let second = limits.try_acquire(a).unwrap();
        assert!(limits.try_acquire(a).is_none());
        let other = limits.try_acquire(b).unwrap();
        assert_eq!(limits.open(a), 2);
        drop(first);
        assert_eq!(limits.open(a), 1);
        let third = limits.try_acquire(a).unwrap();
        drop((second, third, other));
        assert_eq!(limits.open(a), 0);
        assert!(limits.lock().is_empty(), "no entry left for idle addresses");
    }

    #[test]
    fn refusal_is_429_with_retry_after() {
        let response = refusal();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
