//! The server's shutdown signal, and one connection's watch of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Context;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The server's shutdown signal: a cancellation token for the tasks that
/// wait for it, and a flag set just before the token is cancelled, which a
/// connection reads on every round of its loop without a lock (the token's
/// `is_cancelled` takes the lock that every connection's wait shares).
#[derive(Clone, Default)]
pub(crate) struct ShutdownSignal {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl ShutdownSignal {
    /// Starts the shutdown: the flag first, so that a task the token wakes
    /// finds it set.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// The token, for tasks that wait for the shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// One connection's watch: the wait is registered once (it wakes the task
/// when the shutdown starts); after that the flag tells whether it has.
pub(super) struct Shutdown {
    flag: Arc<AtomicBool>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Shutdown {
    pub fn new(signal: &ShutdownSignal) -> Self {
        Shutdown {
            wait: Box::pin(signal.token.clone().cancelled_owned()),
            flag: signal.flag.clone(),
            registered: false,
        }
    }

    pub fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.registered {
            return self.flag.load(Ordering::Acquire);
        }
        // A task's waker stays valid for the task's life: this one
        // registration is enough to be woken by the cancellation.
        self.registered = true;
        self.wait.as_mut().poll(cx).is_ready()
    }
}
