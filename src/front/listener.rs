//! Binding the listening socket with a backlog of squall's choosing.
//!
//! `TcpListener::bind` (tokio, after std) listens with a backlog of 128: a
//! burst of more connects than that, arriving while the accept loop is busy,
//! finds the accept queue full, and the kernel drops the SYNs. The clients
//! then wait for their SYN retransmission, one second or more, which reads
//! as a hung server. squall binds through `TcpSocket` instead, so the backlog
//! is a setting (`listen_backlog`, default 1024).

use std::io;

use tokio::net::{lookup_host, TcpListener, TcpSocket, ToSocketAddrs};

/// Where Linux states the largest backlog it grants.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// Binds the first address of `addr` that can be bound and listens with
/// `backlog` (clamped by the kernel's `somaxconn`).
pub(crate) async fn bind(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let backlog = clamp_backlog(backlog);
    let mut last_error = None;
    for addr in lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As tokio and std do: a restarted server can bind at once even
        // while connections of its previous run sit in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

/// `backlog`, or the kernel's limit if that is lower. The kernel clamps
/// silently anyway; clamping here makes the value in force the one logged.
fn clamp_backlog(backlog: u32) -> u32 {
    let limit = std::fs::read_to_string(SOMAXCONN)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match limit {
        Some(limit) if limit < backlog => {
            tracing::debug!(
                backlog,
                limit,
                "listen backlog clamped by net.core.somaxconn"
            );
            limit.max(1)
        }
        _ => backlog,
    }
}
