//! The client's address behind a reverse proxy: `Forwarded` (RFC 7239) or
//! `X-Forwarded-For`, read only when the TCP peer is a proxy the application
//! trusts ([`trusted_proxies`](crate::Application::trusted_proxies); none by
//! default, so a client can never choose its own address).
//!
//! Each proxy appends the address it received the request from, so the list
//! is read from the right: the rightmost entry came from the trusted peer,
//! and entries are skipped for as long as they are trusted proxies
//! themselves (a chain of proxies). The first untrusted address is the
//! client. An entry that is not an IP address (`unknown`, an obfuscated
//! `_name`, garbage) stops the walk: the address to its right, the last one
//! a trusted proxy vouched for, is used. `Forwarded` wins over
//! `X-Forwarded-For` when both are present. A forwarded address without a
//! port gets port 0.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The client's address for a request that came from `peer`.
pub(crate) fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(&peer.ip()) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(forwarded_for)
        .collect();
    let hops: Vec<&str> = if forwarded.is_empty() {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect()
    } else {
        forwarded
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = parse_node(hop) else {
            break;
        };
        client = addr;
        if !trusted.contains(&addr.ip()) {
            break;
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<SocketAddr> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = node
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(node);
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "10.0.0.1:5000";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn resolve(pairs: &[(&str, &str)], trusted: &[&str]) -> String {
        let trusted: Vec<IpAddr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_addr(PROXY.parse().unwrap(), &headers(pairs), &trusted).to_string()
    }

    #[test]
    fn never_trusted_by_default() {
        let h = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(resolve(&h, &[]), PROXY);
        assert_eq!(
            resolve(&h, &["10.9.9.9"]),
            PROXY,
            "peer is not a trusted proxy"
        );
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right() {
        let h = [("x-forwarded-for", "6.6.6.6, 203.0.113.9")];
        assert_eq!(resolve(&h, &["10.0.0.1"]), "203.0.113.9:0");
        // A chain of trusted proxies is skipped.
        let h = [("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")];
        assert_eq!(resolve(&h, &["10.0.0.1", "10.0.0.2"]), "203.0.113.9:0");
    }

    #[test]
    fn forwarded_wins_and_takes_ports_and_ipv6() {
        let h = [
            ("x-forwarded-for", "1.1.1.1"),
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
            ),
        ];
        assert_eq!(resolve(&h, &["10.0.0.1"]), "[2001:db8::7]:4711");
    }

    #[test]
    fn garbage_stops_at_the_last_vouched_address() {
        let h = [("x-forwarded-for", "203.0.113.9, unknown")];
        assert_eq!(resolve(&h, &["10.0.0.1"]), PROXY);
        let h = [("forwarded", "for=_hidden, for=198.51.100.4")];
        assert_eq!(resolve(&h, &["10.0.0.1"]), "198.51.100.4:0");
    }
}
