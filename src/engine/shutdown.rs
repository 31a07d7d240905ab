//! The server's shutdown signal, as one connection watches it.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The wait is registered once; after that an atomic load tells whether the
/// server is shutting down. Polling the registered wait again would take the
/// lock that every connection's wait shares, on every wake-up.
pub(super) struct Shutdown {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Shutdown {
    pub fn new(token: CancellationToken) -> Self {
        Shutdown {
            wait: Box::pin(token.clone().cancelled_owned()),
            token,
            registered: false,
        }
    }

    pub fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.registered {
            return self.token.is_cancelled();
        }
        // A task's waker stays valid for the task's life: this one
        // registration is enough to be woken by the cancellation.
        self.registered = true;
        self.wait.as_mut().poll(cx).is_ready()
    }
}
