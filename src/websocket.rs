//! The per-connection context handed to every handler method, and the
//! cloneable [`WebSocketSender`] other tasks use to reach a connection.
//!
//! Neither touches the socket: writes go into the connection's send queue,
//! which the connection task (see `connection.rs`) drains into the socket,
//! combining writes. The queue is bounded twice, by messages and by bytes
//! (`room.rs`): a writer takes room before pushing and the connection gives
//! it back as each message reaches the socket. A waiting writer
//! (`write_message`) waits for room; a non-waiting one (`send`) fails with
//! [`WriteError::QueueFull`] instead.
//!
//! The queue itself is a `VecDeque` under a mutex that is only ever held for a
//! push or a pop, plus the connection task's waker: it allocates nothing
//! until used, which keeps an idle connection small.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::request::RequestExt;
use crate::room::{NoRoom, Room};
use crate::settings::OverflowPolicy;
use crate::{Message, Utf8Bytes, WriteError};

/// One queued write and the bytes of room it holds.
pub(crate) struct Outbound {
    pub message: tungstenite::Message,
    pub charge: u32,
}

/// A request to close. It never waits behind a full queue: it is kept beside
/// the queue, and the connection writes it after what is queued.
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
struct Queue {
    items: VecDeque<Outbound>,
    close_request: Option<CloseRequest>,
    closed: bool,
}

/// State shared by a connection task and every handle to it.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the connection task on a push or a close request.
    task: AtomicWaker,
    room: Room,
    closing: AtomicBool,
    close_requested: AtomicBool,
    overflow: OverflowPolicy,
}

impl Shared {
    pub fn new(max_messages: usize, max_bytes: usize, overflow: OverflowPolicy) -> Arc<Self> {
        Arc::new(Shared {
            queue: Mutex::default(),
            task: AtomicWaker::new(),
            room: Room::new(max_messages, max_bytes),
            closing: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            overflow,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; recover the data if it ever did.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection task registers its waker before looking at the queue.
    pub fn register(&self, waker: &std::task::Waker) {
        self.task.register(waker);
    }

    /// The next queued message; its room goes back to writers at once.
    pub fn pop(&self) -> Popped {
        if self.room.is_unused() && !self.is_closing() {
            // Nothing holds room, so nothing is queued: no lock needed.
            return Popped::Empty;
        }
        let mut queue = self.lock();
        match queue.items.pop_front() {
            Some(outbound) => {
                drop(queue);
                self.room.give_back(outbound.charge);
                Popped::Message(outbound)
            }
            None if queue.closed => Popped::Finished,
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
    pub fn close_queue(&self) {
        self.closing.store(true, Ordering::Release);
        self.lock().closed = true;
        self.room.close();
    }

    /// Drops whatever is still queued (the connection is gone).
    pub fn discard(&self) {
        let items = std::mem::take(&mut self.lock().items);
        drop(items);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn push(&self, message: tungstenite::Message, charge: u32) -> Result<(), WriteError> {
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            self.room.give_back(charge);
            return Err(WriteError::Closed);
        }
        queue.items.push_back(Outbound { message, charge });
        drop(queue);
        self.task.wake();
        Ok(())
    }

    async fn enqueue(&self, message: tungstenite::Message) -> Result<(), WriteError> {
        if self.is_closing() {
            return Err(WriteError::Closed);
        }
        let charge = self.room.charge(message.len());
        self.room
            .take(charge)
            .await
            .map_err(|_| WriteError::Closed)?;
        self.push(message, charge)
    }

    fn try_enqueue(&self, message: tungstenite::Message) -> Result<(), WriteError> {
        if self.is_closing() {
            return Err(WriteError::Closed);
        }
        let charge = self.room.charge(message.len());
        match self.room.try_take(charge) {
            Ok(()) => self.push(message, charge),
            Err(NoRoom::Closed) => Err(WriteError::Closed),
            Err(NoRoom::Full) => Err(self.overflowed()),
        }
    }

    fn overflowed(&self) -> WriteError {
        if let OverflowPolicy::Close(code) = self.overflow {
            tracing::warn!(code, "send queue full: closing the slow connection");
            self.request_close(code, Utf8Bytes::from_static("send queue full"));
        }
        WriteError::QueueFull
    }

    fn request_close(&self, code: u16, reason: Utf8Bytes) {
        let mut queue = self.lock();
        if queue.closed || queue.close_request.is_some() {
            // The first close asked for wins.
            return;
        }
        queue.close_request = Some(CloseRequest { code, reason });
        drop(queue);
        self.close_requested.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A cloneable handle to one connection, usable from any task: Tornado's
/// habit of keeping handler objects in a set to write to them later.
///
/// [`send`](Self::send) never waits: when the connection's send queue is full
/// it returns [`WriteError::QueueFull`] and applies the application's
/// [`OverflowPolicy`]. [`write_message`](Self::write_message) waits for room
/// instead. Both return [`WriteError::Closed`] once the connection is closing.
///
/// ```no_run
/// # async fn demo(ws: &squall::WebSocket) {
/// let sender = ws.sender();
/// tokio::spawn(async move {
///     sender.send("tick").ok();
/// });
/// # }
/// ```
#[derive(Clone)]
pub struct WebSocketSender {
    shared: Arc<Shared>,
}

impl WebSocketSender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WebSocketSender { shared }
    }

    /// Queues a message without waiting.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), WriteError> {
        self.shared.try_enqueue(message.into().into_tungstenite())
    }

    /// Queues a message already converted for the wire, shared with other
    /// receivers (broadcast).
    pub(crate) fn send_shared(&self, message: tungstenite::Message) -> Result<(), WriteError> {
        self.shared.try_enqueue(message)
    }

    /// Queues a message, waiting while the send queue is full.
    pub async fn write_message(&self, message: impl Into<Message>) -> Result<(), WriteError> {
        self.shared.enqueue(message.into().into_tungstenite()).await
    }

    /// Asks the connection to close with `code` and `reason`, after the
    /// messages already queued. Never waits.
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.request_close(code, reason.into());
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closing()
    }

    /// Whether two handles reach the same connection.
    pub fn same_connection(&self, other: &WebSocketSender) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The connection's identity in groups (stable while it lives).
    pub(crate) fn id(&self) -> crate::group::MemberId {
        Arc::as_ptr(&self.shared) as usize
    }
}

impl std::fmt::Debug for WebSocketSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// How the peer closed the connection, if it said.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerClose {
    pub code: Option<u16>,
    pub reason: Option<String>,
}

/// The per-connection context handed to every [`WebSocketHandler`](crate::WebSocketHandler)
/// method: Tornado's `self` for everything that is not the user's own state.
pub struct WebSocket {
    sender: WebSocketSender,
    request: http::Request<()>,
    subprotocol: Option<String>,
    peer_close: OnceLock<PeerClose>,
    membership: crate::group::Membership,
    app: crate::application::AppContext,
}

impl WebSocket {
    pub(crate) fn new(
        shared: Arc<Shared>,
        request: http::Request<()>,
        subprotocol: Option<String>,
        app: crate::application::AppContext,
    ) -> Self {
        WebSocket {
            sender: WebSocketSender::new(shared),
            request,
            subprotocol,
            peer_close: OnceLock::new(),
            membership: Default::default(),
            app,
        }
    }

    /// Queues a message: text (`&str`, `String`), binary (`Vec<u8>`,
    /// [`Bytes`]) or JSON ([`serde_json::Value`]). Waits while the send queue
    /// is full (backpressure); the connection keeps draining it meanwhile.
    /// Returns [`WriteError::Closed`] once the connection is closing.
    pub async fn write_message(&self, message: impl Into<Message>) -> Result<(), WriteError> {
        self.sender.write_message(message).await
    }

    /// Serialises `value` to JSON and queues it as a text message.
    pub async fn write_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), WriteError> {
        self.write_message(Message::json(value)?).await
    }

    /// Sends a ping with `data` (at most 125 bytes); the answer reaches
    /// [`on_pong`](crate::WebSocketHandler::on_pong).
    pub async fn ping(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
        let data = data.into();
        if data.len() > 125 {
            return Err(WriteError::PingTooLong);
        }
        self.sender
            .shared
            .enqueue(tungstenite::Message::Ping(data))
            .await
    }

    /// Closes the connection with `code` and `reason` once the messages
    /// already queued are written. Later writes return [`WriteError::Closed`].
    pub fn close(&self, code: u16, reason: &str) {
        self.sender.shared.closing.store(true, Ordering::Release);
        self.sender.close(code, reason);
    }

    /// The close code the peer sent, once the connection has closed; `None`
    /// if it sent none or vanished.
    pub fn close_code(&self) -> Option<u16> {
        self.peer_close.get().and_then(|close| close.code)
    }

    /// The close reason the peer sent, once the connection has closed.
    pub fn close_reason(&self) -> Option<&str> {
        self.peer_close
            .get()
            .and_then(|close| close.reason.as_deref())
    }

    pub(crate) fn set_peer_close(&self, close: PeerClose) {
        let _ = self.peer_close.set(close);
    }

    /// The subprotocol chosen by
    /// [`select_subprotocol`](crate::WebSocketHandler::select_subprotocol).
    pub fn selected_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The upgrade request: method, URI, headers and extensions.
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// The user [`prepare`](crate::WebSocketHandler::prepare) stored as a
    /// [`CurrentUser<T>`](crate::CurrentUser) in the upgrade request's
    /// extensions (Tornado's `current_user`); `None` if it stored none of
    /// type `T`.
    ///
    /// ```
    /// # use squall::{CurrentUser, WebSocket};
    /// # #[derive(Clone)] struct User { name: String }
    /// # fn demo(ws: &WebSocket) {
    /// if let Some(user) = ws.current_user::<User>() {
    ///     println!("hello, {}", user.name);
    /// }
    /// # }
    /// ```
    pub fn current_user<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.request
            .extensions()
            .get::<crate::CurrentUser<T>>()
            .map(|user| &user.0)
    }

    /// The path parameter `name` (`/chat/{room}` → `room`).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.request.path_param(name)
    }

    /// The first query argument `name` of the upgrade request, percent-decoded.
    pub fn query_argument(&self, name: &str) -> Option<Cow<'_, str>> {
        self.request.query_argument(name)
    }

    /// The cookie `name` sent with the upgrade request.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.request.cookie(name)
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.request
            .remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// A cloneable handle other tasks can use to write to this connection.
    pub fn sender(&self) -> WebSocketSender {
        self.sender.clone()
    }

    /// Joins the group (room) `group`; returns `false` if already a member.
    /// The connection leaves every group when it closes.
    pub fn join(&self, group: &str) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        self.membership.add(group);
        self.app.groups().join(group, &self.sender)
    }

    /// Leaves `group`; returns `false` if not a member.
    pub fn leave(&self, group: &str) -> bool {
        self.membership.remove(group);
        self.app.groups().leave(group, &self.sender)
    }

    /// Sends `message` to every member of `group`, this connection included
    /// if it is one, here and (with a broker) in every other process. The
    /// message is serialised once and shared. Returns how many local members
    /// accepted it; see [`Handle::broadcast`](crate::Handle::broadcast).
    pub fn broadcast(&self, group: &str, message: impl Into<Message>) -> usize {
        self.app.broadcast(group, message.into(), None)
    }

    /// As [`broadcast`](Self::broadcast), but not to this connection.
    pub fn broadcast_others(&self, group: &str, message: impl Into<Message>) -> usize {
        self.app
            .broadcast(group, message.into(), Some(self.sender.id()))
    }

    /// Leaves every group (when the connection closes).
    pub(crate) fn leave_all(&self) {
        for group in self.membership.take() {
            self.app.groups().leave(&group, &self.sender);
        }
    }
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("uri", self.request.uri())
            .field("remote_addr", &self.remote_addr())
            .field("subprotocol", &self.subprotocol)
            .finish()
    }
}
