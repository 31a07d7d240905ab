//! The server's shutdown signal, and one connection's watch of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use tokio_util::sync::CancellationToken;

use crate::slots::Slots;

/// The server's shutdown signal: a cancellation token for the tasks that
/// wait for it (accept loops, the shutdown's own steps), and for the
/// connections, which are many and long-lived, something lighter: a flag
/// read on every round of a connection's loop without a lock, and a table of
/// the connections' wakers, which the shutdown wakes.
///
/// A connection's watch costs one waker in the table (no allocation of its
/// own, no intrusive wait list, no clone of the token), taken on its first
/// round and given back when it ends.
#[derive(Clone, Default)]
pub(crate) struct ShutdownSignal {
    token: CancellationToken,
    watchers: Arc<Watchers>,
}

#[derive(Default)]
struct Watchers {
    /// Set (under the table's lock) before any waker is woken.
    flag: AtomicBool,
    wakers: Mutex<Slots<Waker>>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, Slots<Waker>> {
        // Nothing panics while holding the lock; a poisoned table is intact.
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ShutdownSignal {
    /// Starts the shutdown: the flag, then every watching connection is
    /// woken, then the token is cancelled.
    pub fn cancel(&self) {
        {
            let wakers = self.watchers.lock();
            self.watchers.flag.store(true, Ordering::Release);
            // Waking only schedules a task: nothing runs under the lock.
            for waker in wakers.iter() {
                waker.wake_by_ref();
            }
        }
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.watchers.flag.load(Ordering::Acquire)
    }

    /// The token, for tasks that wait for the shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// One connection's watch: its waker goes into the signal's table on the
/// first round (a task's waker wakes that task for its whole life, so once
/// is enough); after that the flag tells whether the shutdown began.
pub(super) struct Shutdown {
    watchers: Arc<Watchers>,
    /// Where this connection's waker is in the table, once registered.
    slot: Option<usize>,
}

impl Shutdown {
    pub fn new(signal: &ShutdownSignal) -> Self {
        Shutdown {
            watchers: signal.watchers.clone(),
            slot: None,
        }
    }

    pub fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.watchers.flag.load(Ordering::Acquire) {
            return true;
        }
        if self.slot.is_none() {
            let mut wakers = self.watchers.lock();
            // Checked again under the lock: a shutdown that began since
            // has woken the table already, without this waker.
            if self.watchers.flag.load(Ordering::Acquire) {
                return true;
            }
            self.slot = Some(wakers.insert(cx.waker().clone()));
        }
        false
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.watchers.lock().remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_shutdown_wakes_each_watching_connection_once() {
        let signal = ShutdownSignal::default();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = Shutdown::new(&signal);
        let mut second = Shutdown::new(&signal);
        let mut ended = Shutdown::new(&signal);
        assert!(!first.poll_cancelled(&mut cx));
        assert!(!first.poll_cancelled(&mut cx), "registered once");
        assert!(!second.poll_cancelled(&mut cx));
        assert!(!ended.poll_cancelled(&mut cx));
        drop(ended);
        assert_eq!(signal.watchers.lock().iter().count(), 2);

        signal.cancel();
        assert_eq!(woken.0.load(Ordering::SeqCst), 2, "the ended one is gone");
        assert!(first.poll_cancelled(&mut cx));
        assert!(signal.token().is_cancelled());
        // A connection that starts watching after the shutdown sees it at
        // once, and takes no slot.
        let mut late = Shutdown::new(&signal);
        assert!(late.poll_cancelled(&mut cx));
        assert!(late.slot.is_none());
        drop((first, second));
        assert_eq!(signal.watchers.lock().iter().count(), 0);
    }
}
