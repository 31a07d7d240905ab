//! The capacity word of a connection's send queue: how many messages and
//! bytes it may still take.
//!
//! Both counts live in one atomic word (messages in the high half, bytes in
//! the low half), so taking room for a message is one compare-and-swap and
//! giving it back is one subtraction: no lock on the path every message
//! takes. Only a writer that has to wait registers with a `Notify`, and a
//! release wakes waiters only when there are any.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use tokio::sync::Notify;

/// Why room could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoRoom {
    Full,
    Closed,
}

pub(crate) struct Capacity {
    /// Messages in use << 32 | bytes in use.
    used: AtomicU64,
    max_messages: u64,
    max_bytes: u64,
    closed: AtomicBool,
    waiters: AtomicUsize,
    freed: Notify,
}

const MESSAGE: u64 = 1 << 32;
const BYTES: u64 = MESSAGE - 1;

impl Capacity {
    /// Room for `max_messages` messages and `max_bytes` bytes (each at most
    /// `u32::MAX / 2`, so that room [`hold`](Self::hold) takes past the
    /// bound never carries from the byte half into the message half).
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        const LIMIT: usize = (u32::MAX / 2) as usize;
        Capacity {
            used: AtomicU64::new(0),
            max_messages: max_messages.clamp(1, LIMIT) as u64,
            max_bytes: max_bytes.clamp(1, LIMIT) as u64,
            closed: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// The bytes a message of `len` bytes counts for: a message larger than
    /// the whole budget counts as the whole budget, so it waits for an empty
    /// queue rather than being refused for ever.
    pub fn charge(&self, len: usize) -> u32 {
        (len as u64).min(self.max_bytes) as u32
    }

    /// Takes room for one message of `bytes` (from [`charge`](Self::charge)).
    pub fn try_take(&self, bytes: u32) -> Result<(), NoRoom> {
        let mut used = self.used.load(SeqCst);
        loop {
            if self.closed.load(SeqCst) {
                return Err(NoRoom::Closed);
            }
            let messages = used >> 32;
            let in_bytes = used & BYTES;
            if messages >= self.max_messages || in_bytes + u64::from(bytes) > self.max_bytes {
                return Err(NoRoom::Full);
            }
            match self.used.compare_exchange_weak(
                used,
                used + MESSAGE + u64::from(bytes),
                SeqCst,
                SeqCst,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Takes room, waiting while the queue is full; `Err` once closed.
    pub async fn take(&self, bytes: u32) -> Result<(), NoRoom> {
        loop {
            match self.try_take(bytes) {
                Err(NoRoom::Full) => {}
                done => return done,
            }
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            let _waiting = Waiting::new(&self.waiters);
            // Check again now that a release is sure to wake us.
            match self.try_take(bytes) {
                Err(NoRoom::Full) => freed.await,
                done => return done,
            }
        }
    }

    /// Gives back the room one message took.
    pub fn give_back(&self, bytes: u32) {
        self.used.fetch_sub(MESSAGE + u64::from(bytes), SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Which bound refuses one more message of `bytes` right now: the name
    /// of the setting, the bound, and what is in use against it (for logs).
    pub fn full_because(&self, bytes: u32) -> (&'static str, u64, u64) {
        let used = self.used.load(SeqCst);
        if used >> 32 >= self.max_messages {
            (
                "websocket_max_queued_messages",
                self.max_messages,
                used >> 32,
            )
        } else {
            let wanted = (used & BYTES) + u64::from(bytes);
            ("websocket_max_queued_bytes", self.max_bytes, wanted)
        }
    }

    /// Whether no message holds room (the queue is empty).
    pub fn is_unused(&self) -> bool {
        self.used.load(SeqCst) == 0
    }

    /// Takes room without asking: for frames the connection writes on its
    /// own (pongs, pings, close frames), which cannot wait. Usage may pass
    /// the bound by these; [`is_full`](Self::is_full) then says so.
    pub fn hold(&self, messages: u32, bytes: u32) {
        self.used
            .fetch_add(u64::from(messages) * MESSAGE + u64::from(bytes), SeqCst);
    }

    /// Gives back what [`hold`](Self::hold) took, and wakes waiting writers.
    pub fn release(&self, messages: u32, bytes: u32) {
        self.used
            .fetch_sub(u64::from(messages) * MESSAGE + u64::from(bytes), SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Whether the bound is reached, in messages or in bytes.
    pub fn is_full(&self) -> bool {
        let used = self.used.load(SeqCst);
        used >> 32 >= self.max_messages || used & BYTES >= self.max_bytes
    }

    /// Refuses all further takes and wakes every waiting writer. As for a
    /// release, only when there are any: a writer counts itself before its
    /// last look at `closed`, so one this does not see will see the close.
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// Counts a waiting writer for as long as it waits (also if its future is
/// dropped mid-wait).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_messages_and_bytes() {
        let capacity = Capacity::new(2, 10);
        assert_eq!(capacity.try_take(4), Ok(()));
        assert_eq!(capacity.try_take(7), Err(NoRoom::Full));
        assert_eq!(capacity.try_take(6), Ok(()));
        assert_eq!(capacity.try_take(0), Err(NoRoom::Full));
        capacity.give_back(4);
        capacity.give_back(6);
        assert!(capacity.is_unused());
        assert_eq!(capacity.try_take(capacity.charge(1_000)), Ok(()));
        assert_eq!(capacity.try_take(1), Err(NoRoom::Full));
    }

    #[test]
    fn held_room_counts_against_the_bound_until_released() {
        let capacity = Capacity::new(4, 100);
        capacity.hold(1, 90);
        assert!(!capacity.is_full());
        assert_eq!(capacity.try_take(20), Err(NoRoom::Full));
        capacity.hold(1, 20);
        assert!(capacity.is_full(), "held past the bound");
        capacity.release(2, 110);
        assert!(capacity.is_unused());
        capacity.hold(4, 0);
        assert!(capacity.is_full(), "full by message count");
        capacity.release(4, 0);
        assert_eq!(capacity.try_take(100), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_on_release_and_on_close() {
        let capacity = std::sync::Arc::new(Capacity::new(1, 100));
        capacity.try_take(1).unwrap();
        let waiter = tokio::spawn({
            let capacity = capacity.clone();
            async move { capacity.take(1).await }
        });
        tokio::task::yield_now().await;
        capacity.give_back(1);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        let waiter = tokio::spawn({
            let capacity = capacity.clone();
            async move { capacity.take(1).await }
        });
        tokio::task::yield_now().await;
        capacity.close();
        assert_eq!(waiter.await.unwrap(), Err(NoRoom::Closed));
    }
}
