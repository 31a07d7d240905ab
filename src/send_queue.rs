//! A connection's send queue: what handlers and other tasks have asked to
//! write, waiting for the connection task to put it on the socket.
//!
//! The queue is bounded twice, by messages and by bytes, in one atomic
//! capacity word (`capacity.rs`): a writer takes room before pushing and the
//! connection gives it back as each message reaches the socket. A waiting
//! writer ([`SendQueue::enqueue`]) waits for room; a non-waiting one
//! ([`SendQueue::try_enqueue`]) fails with [`WriteError::QueueFull`] and
//! applies the [`OverflowPolicy`] instead.
//!
//! The items are a `VecDeque` under a mutex that is only ever held for a
//! push or a pop, plus the connection task's waker: the queue allocates
//! nothing until used, which keeps an idle connection small. A close request
//! never waits behind a full queue: it is kept beside the items, and the
//! connection writes it after what is queued.

mod capacity;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use futures_util::task::AtomicWaker;

use crate::deflate::SharedKey;
use crate::error::WriteError;
use crate::message::Utf8Bytes;
use crate::settings::OverflowPolicy;
use crate::wire::Wire;
use capacity::{Capacity, NoRoom};

/// The connection task's poll, as [`SendQueue::wake_task`] sees it.
const IDLE: u8 = 0;
const POLLING: u8 = 1;
/// Polling, and something came in that did not wake it.
const MISSED: u8 = 2;

/// One queued write and the bytes of room it holds.
pub(crate) struct Outbound {
    pub message: Wire,
    pub charge: u32,
}

/// A request to close, kept beside the queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    pub code: u16,
    pub reason: Utf8Bytes,
}

/// What the connection finds when it looks at its queue.
pub(crate) enum Popped {
    Message(Outbound),
    Empty,
    /// Closed to writers and empty.
    Finished,
}

#[derive(Default)]
struct Items {
    queue: VecDeque<Outbound>,
    close_request: Option<CloseRequest>,
    closed: bool,
}

/// The send queue shared by a connection task and every handle to it.
pub(crate) struct SendQueue {
    items: Mutex<Items>,
    /// Wakes the connection task on a push or a close request.
    task: AtomicWaker,
    /// Whether the connection task is being polled now ([`enter`](Self::enter)
    /// to [`leave`](Self::leave)): a push meanwhile does not wake it, as
    /// it looks at the queue again before it sleeps. A handler's reply,
    /// pushed from inside the connection's own poll, then costs no wake-up
    /// (on a multi-thread runtime, a second poll of the task).
    owner: AtomicU8,
    capacity: Capacity,
    closing: AtomicBool,
    close_requested: AtomicBool,
    overflow: OverflowPolicy,
    /// permessage-deflate without context takeover: broadcasts to this
    /// connection can share a frame compressed under this key (two bytes,
    /// which fit in the struct's padding).
    shared_deflate: Option<SharedKey>,
}

impl SendQueue {
    /// A queue bounded by `max_messages` and `max_bytes`.
    pub fn new(max_messages: usize, max_bytes: usize, overflow: OverflowPolicy) -> Self {
        SendQueue {
            // No room until the first push (`push` reserves it): a
            // connection that never sends allocates nothing here.
            items: Mutex::new(Items::default()),
            task: AtomicWaker::new(),
            owner: AtomicU8::new(IDLE),
            capacity: Capacity::new(max_messages, max_bytes),
            closing: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            overflow,
            shared_deflate: None,
        }
    }

    /// Sets the key broadcasts may share compressed frames under.
    pub fn set_shared_deflate(&mut self, key: Option<SharedKey>) {
        self.shared_deflate = key;
    }

    /// The key broadcasts may share compressed frames under, if any.
    pub fn shared_deflate(&self) -> Option<SharedKey> {
        self.shared_deflate
    }

    fn lock(&self) -> MutexGuard<'_, Items> {
        // Nothing panics while holding the lock; recover the data if it ever did.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection task registers its waker before looking at the queue.
    pub fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// The connection task's poll begins: pushes from now on leave waking
    /// it to [`leave`](Self::leave).
    pub fn enter(&self) {
        self.owner.store(POLLING, Ordering::SeqCst);
    }

    /// The connection task's poll is over. `true` if a push or a close
    /// request came in during it without waking the task and may not have
    /// been seen: the task must then wake itself.
    pub fn leave(&self) -> bool {
        self.owner.swap(IDLE, Ordering::SeqCst) == MISSED
            && (!self.capacity.is_unused() || self.close_requested.load(Ordering::SeqCst))
    }

    /// Tells the connection task there is something new: wakes it, unless
    /// it is being polled (then `leave` sees to it).
    fn wake_task(&self) {
        // All `SeqCst`, with the capacity word and `close_requested`: a push
        // that finds the task polling is ordered before the `leave` that
        // reads `MISSED`, so that `leave` sees what was pushed.
        let mut owner = self.owner.load(Ordering::SeqCst);
        loop {
            match owner {
                IDLE => return self.task.wake(),
                MISSED => return,
                _ => match self.owner.compare_exchange_weak(
                    POLLING,
                    MISSED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return,
                    Err(now) => owner = now,
                },
            }
        }
    }

    /// The next queued message; its room goes back to writers at once.
    pub fn pop(&self) -> Popped {
        if self.capacity.is_unused() && !self.is_closing() {
            // Nothing holds room, so nothing is queued: no lock needed.
            return Popped::Empty;
        }
        let mut items = self.lock();
        match items.queue.pop_front() {
            Some(outbound) => {
                drop(items);
                self.capacity.give_back(outbound.charge);
                Popped::Message(outbound)
            }
            None if items.closed => Popped::Finished,
            None => Popped::Empty,
        }
    }

    /// A pending close request, if one was made.
    pub fn take_close_request(&self) -> Option<CloseRequest> {
        if !self.close_requested.load(Ordering::Acquire) {
            return None;
        }
        self.lock().close_request.take()
    }

    /// Closes the queue to writers: every later write, and every writer
    /// waiting for room, gets [`WriteError::Closed`]. What is queued stays
    /// for the connection to drain.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.lock().closed = true;
        self.capacity.close();
    }

    /// Drops whatever is still queued (the connection is gone).
    pub fn discard(&self) {
        let items = std::mem::take(&mut self.lock().queue);
        drop(items);
    }

    /// Counts a frame the connection writes on its own (a pong, a ping, a
    /// close frame) against the queue's bound until
    /// [`release_own`](Self::release_own): what squall writes by itself
    /// takes the same room as what handlers queue, so a peer that makes it
    /// write (a ping flood) cannot grow the outgoing side past the bound.
    pub fn hold_own(&self, frame_len: usize) {
        self.capacity
            .hold(1, u32::try_from(frame_len).unwrap_or(u32::MAX));
    }

    /// Gives back the room of `frames` own frames of `bytes` in all, once
    /// they have reached the socket.
    pub fn release_own(&self, frames: u32, bytes: u32) {
        self.capacity.release(frames, bytes);
    }

    /// Whether the outgoing side is at its bound (queued messages and own
    /// frames not yet written): the connection then stops reading, so the
    /// peer feels TCP backpressure instead of growing the server's buffers.
    pub fn is_full(&self) -> bool {
        self.capacity.is_full()
    }

    /// Whether the queue refuses writes (the connection is closing).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn push(&self, message: Wire, charge: u32) -> Result<(), WriteError> {
        let mut items = self.lock();
        if items.closed {
            drop(items);
            self.capacity.give_back(charge);
            return Err(WriteError::Closed);
        }
        if items.queue.capacity() == 0 {
            // Room for one message: most connections rarely hold more, and
            // a first push into an empty deque would allocate room for
            // four, kept for the connection's life.
            items.queue.reserve_exact(1);
        }
        items.queue.push_back(Outbound { message, charge });
        drop(items);
        self.wake_task();
        Ok(())
    }

    /// Queues `message`, waiting while the queue is full.
    pub async fn enqueue(&self, message: impl Into<Wire>) -> Result<(), WriteError> {
        let message = message.into();
        if self.is_closing() {
            return Err(WriteError::Closed);
        }
        let charge = self.capacity.charge(message.len());
        self.capacity
            .take(charge)
            .await
            .map_err(|_| WriteError::Closed)?;
        self.push(message, charge)
    }

    /// Queues `message` without waiting; a full queue applies the overflow
    /// policy.
    pub fn try_enqueue(&self, message: impl Into<Wire>) -> Result<(), WriteError> {
        let message = message.into();
        if self.is_closing() {
            return Err(WriteError::Closed);
        }
        let charge = self.capacity.charge(message.len());
        match self.capacity.try_take(charge) {
            Ok(()) => self.push(message, charge),
            Err(NoRoom::Closed) => Err(WriteError::Closed),
            Err(NoRoom::Full) => Err(self.overflowed(charge)),
        }
    }

    fn overflowed(&self, charge: u32) -> WriteError {
        crate::telemetry::queue_overflow(self.overflow);
        if let OverflowPolicy::Close(code) = self.overflow {
            // Name the bound that was hit, so the cause is plain in the log.
            let (limit, max, wanted) = self.capacity.full_because(charge);
            tracing::warn!(
                code,
                limit,
                max,
                wanted,
                "send queue full: closing the slow connection"
            );
            self.request_close(code, Utf8Bytes::from_static("send queue full"));
        }
        WriteError::QueueFull
    }

    /// Asks the connection to close after what is queued; the first request
    /// wins. Writes are still accepted until the connection acts on it,
    /// unless [`refuse_writes`](Self::refuse_writes) is called too.
    pub fn request_close(&self, code: u16, reason: Utf8Bytes) {
        let mut items = self.lock();
        if items.closed || items.close_request.is_some() {
            return;
        }
        items.close_request = Some(CloseRequest { code, reason });
        drop(items);
        self.close_requested.store(true, Ordering::SeqCst);
        self.wake_task();
    }

    /// Refuses later writes at once, before the connection acts on a close.
    pub fn refuse_writes(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> tungstenite::Message {
        tungstenite::Message::text(s)
    }

    fn popped_text(queue: &SendQueue) -> Option<String> {
        match queue.pop() {
            Popped::Message(Outbound {
                message: Wire::Message(message),
                ..
            }) => Some(message.into_text().unwrap().to_string()),
            _ => None,
        }
    }

    /// Counts the wake-ups of a task.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn registered(queue: &SendQueue) -> std::sync::Arc<Wakes> {
        let wakes = std::sync::Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
        queue.register(&Waker::from(wakes.clone()));
        wakes
    }

    #[test]
    fn a_push_during_the_tasks_poll_does_not_wake_it_and_leave_tells_if_it_waits() {
        let queue = SendQueue::new(8, 1024, OverflowPolicy::Reject);
        let wakes = registered(&queue);

        // Outside a poll, a push wakes the task.
        queue.try_enqueue(text("a")).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        popped_text(&queue);
        let wakes = registered(&queue);

        // The handler's reply, popped in the same poll: no wake, nothing left.
        queue.enter();
        queue.try_enqueue(text("b")).unwrap();
        assert_eq!(popped_text(&queue).as_deref(), Some("b"));
        assert!(!queue.leave());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);

        // Pushed during the poll and not taken: the task must wake itself.
        queue.enter();
        queue.try_enqueue(text("c")).unwrap();
        queue.try_enqueue(text("d")).unwrap();
        assert!(queue.leave());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert!(!queue.leave(), "told once");

        // A close request during the poll, likewise.
        popped_text(&queue);
        popped_text(&queue);
        queue.enter();
        queue.request_close(1000, Utf8Bytes::from_static(""));
        assert!(queue.leave());

        // A poll with nothing new says nothing.
        queue.take_close_request();
        queue.enter();
        assert!(!queue.leave());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }

    /// Another thread pushes bursts of one to three messages, each burst
    /// only once the task has popped the one before, while the task polls
    /// and sleeps whenever `leave` does not tell it to go on. The last push
    /// of a burst has no later push to wake the task for it: it is seen in
    /// the poll it lands in, told by `leave`, or wakes the task.
    #[test]
    fn no_push_from_another_thread_goes_unseen() {
        use std::sync::atomic::AtomicUsize;
        use std::time::{Duration, Instant};
        const BURSTS: usize = 20_000;
        let total: usize = (0..BURSTS).map(|burst| 1 + burst % 3).sum();
        let queue = std::sync::Arc::new(SendQueue::new(64, 1 << 20, OverflowPolicy::Reject));
        let wakes = std::sync::Arc::new(Wakes(AtomicUsize::new(0)));
        let popped = std::sync::Arc::new(AtomicUsize::new(0));
        let writer = {
            let (queue, popped) = (queue.clone(), popped.clone());
            std::thread::spawn(move || {
                let mut pushed = 0;
                for burst in 0..BURSTS {
                    for _ in 0..1 + burst % 3 {
                        queue.try_enqueue(text("x")).unwrap();
                        pushed += 1;
                    }
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while popped.load(Ordering::SeqCst) < pushed && Instant::now() < deadline {
                        std::thread::yield_now();
                    }
                }
            })
        };
        while popped.load(Ordering::SeqCst) < total {
            // A wake-up from here on runs the task again (as a runtime
            // polls a task again that was woken while it ran).
            let woken_before = wakes.0.load(Ordering::SeqCst);
            queue.register(&Waker::from(wakes.clone()));
            queue.enter();
            while popped_text(&queue).is_some() {
                popped.fetch_add(1, Ordering::SeqCst);
            }
            // The rest of a poll (reading, writing) after the queue's last
            // look: a push now finds the task polling.
            for _ in 0..500 {
                std::hint::spin_loop();
            }
            if queue.leave() {
                continue;
            }
            // Asleep until woken; a lost wake-up would leave it here.
            let deadline = Instant::now() + Duration::from_secs(10);
            while wakes.0.load(Ordering::SeqCst) == woken_before
                && popped.load(Ordering::SeqCst) < total
            {
                assert!(
                    Instant::now() < deadline,
                    "a message waits and nothing woke the task"
                );
                std::thread::yield_now();
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn pops_in_order_and_frees_room() {
        let queue = SendQueue::new(2, 1024, OverflowPolicy::Reject);
        queue.try_enqueue(text("a")).unwrap();
        queue.try_enqueue(text("b")).unwrap();
        assert!(matches!(
            queue.try_enqueue(text("c")),
            Err(WriteError::QueueFull)
        ));
        assert_eq!(popped_text(&queue).as_deref(), Some("a"));
        queue.try_enqueue(text("c")).unwrap();
        assert_eq!(popped_text(&queue).as_deref(), Some("b"));
        assert_eq!(popped_text(&queue).as_deref(), Some("c"));
        assert!(matches!(queue.pop(), Popped::Empty));
    }

    #[test]
    fn reject_policy_keeps_the_connection() {
        let queue = SendQueue::new(1, 1024, OverflowPolicy::Reject);
        queue.try_enqueue(text("a")).unwrap();
        assert!(queue.try_enqueue(text("b")).unwrap_err().is_queue_full());
        assert_eq!(queue.take_close_request(), None);
    }

    #[test]
    fn close_policy_requests_a_close_once() {
        let queue = SendQueue::new(1, 1024, OverflowPolicy::Close(1013));
        queue.try_enqueue(text("a")).unwrap();
        assert!(queue.try_enqueue(text("b")).unwrap_err().is_queue_full());
        assert!(queue.try_enqueue(text("c")).unwrap_err().is_queue_full());
        let request = queue.take_close_request().expect("a close request");
        assert_eq!(request.code, 1013);
        assert_eq!(queue.take_close_request(), None);
    }

    #[test]
    fn the_first_close_request_wins() {
        let queue = SendQueue::new(4, 1024, OverflowPolicy::Reject);
        queue.request_close(1000, Utf8Bytes::from_static("first"));
        queue.request_close(1001, Utf8Bytes::from_static("second"));
        assert_eq!(queue.take_close_request().map(|r| r.code), Some(1000));
    }

    #[test]
    fn a_closed_queue_drains_then_finishes() {
        let queue = SendQueue::new(4, 1024, OverflowPolicy::Reject);
        queue.try_enqueue(text("a")).unwrap();
        queue.close();
        assert!(queue.try_enqueue(text("b")).unwrap_err().is_closed());
        assert_eq!(popped_text(&queue).as_deref(), Some("a"));
        assert!(matches!(queue.pop(), Popped::Finished));
    }

    #[test]
    fn discard_drops_what_is_queued() {
        let queue = SendQueue::new(4, 1024, OverflowPolicy::Reject);
        queue.try_enqueue(text("a")).unwrap();
        queue.close();
        queue.discard();
        assert!(matches!(queue.pop(), Popped::Finished));
    }

    #[tokio::test]
    async fn a_waiting_writer_is_released_by_a_pop_and_refused_by_a_close() {
        let queue = std::sync::Arc::new(SendQueue::new(1, 1024, OverflowPolicy::Reject));
        queue.try_enqueue(text("a")).unwrap();
        let writer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.enqueue(text("b")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(popped_text(&queue).as_deref(), Some("a"));
        writer.await.unwrap().unwrap();
        let writer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.enqueue(text("c")).await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(writer.await.unwrap().unwrap_err().is_closed());
    }
}
