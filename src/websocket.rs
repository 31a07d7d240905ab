//! The per-connection context handed to every handler method: Tornado's
//! `self` for everything that is not the user's own state.
//!
//! It never touches the socket: writes go into the connection's send queue
//! (`send_queue.rs`) through its [`WebSocketSender`], and the connection
//! task (`engine/`) drains the queue into the socket, combining writes.
//! Groups and broadcasts go through the application's hub (`hub.rs`).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::WriteError;
use crate::group::Membership;
use crate::hub::Hub;
use crate::message::Message;
use crate::request::{CurrentUser, RequestExt};
use crate::send_queue::SendQueue;
use crate::sender::WebSocketSender;

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
    membership: Membership,
    hub: Arc<Hub>,
}

impl WebSocket {
    pub(crate) fn new(
        queue: Arc<SendQueue>,
        request: http::Request<()>,
        subprotocol: Option<String>,
        hub: Arc<Hub>,
    ) -> Self {
        WebSocket {
            sender: WebSocketSender::new(queue),
            request,
            subprotocol,
            peer_close: OnceLock::new(),
            membership: Membership::default(),
            hub,
        }
    }

    /// Queues a message: text (`&str`, `String`), binary (`Vec<u8>`,
    /// [`Bytes`]) or JSON ([`serde_json::Value`]). Waits while the send queue
    /// is full (backpressure); the connection keeps draining it meanwhile.
    /// Returns [`WriteError::Closed`] once the connection is closing.
    ///
    /// (It returns the send queue's own future rather than being an
    /// `async fn` wrapping it, so the handler's future does not carry the
    /// message twice.)
    pub fn write_message(
        &self,
        message: impl Into<Message>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send + '_ {
        self.sender.write_message(message)
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
            .queue()
            .enqueue(tungstenite::Message::Ping(data))
            .await
    }

    /// Closes the connection with `code` and `reason` once the messages
    /// already queued are written. Later writes return [`WriteError::Closed`].
    pub fn close(&self, code: u16, reason: &str) {
        self.sender.queue().refuse_writes();
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
            .get::<CurrentUser<T>>()
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
        let joined = self.hub.groups().join(group, &self.sender);
        if joined {
            self.hub.interest().add(group);
        }
        joined
    }

    /// Joins `group` as `presence` (a user id and JSON metadata): other
    /// connections can then list this user among the group's
    /// [members](crate::Handle::members) and watch them come and go. Returns
    /// `false` (and changes nothing) if already a member.
    pub fn join_with_presence(&self, group: &str, presence: crate::Presence) -> bool {
        self.join(group) && self.set_presence(group, presence)
    }

    /// Gives this connection `presence` in `group`, which it has already
    /// joined (e.g. with [`join_with_history`](Self::join_with_history)).
    /// Returns `false` if it is not a member, or already has a presence
    /// there.
    pub fn set_presence(&self, group: &str, presence: crate::Presence) -> bool {
        if !self.hub.groups().contains(group, self.sender.id()) {
            return false;
        }
        self.hub.presence().track(group, self.sender.id(), presence)
    }

    /// Joins `group`, first sending this client what it missed since
    /// `since`, the last offset it saw (`None` for a fresh join): a
    /// `squall.recovery` message, then the missed messages in order, then
    /// the live ones, none twice. See [`History`](crate::History) for the
    /// protocol and [`Application::history`](crate::Application::history)
    /// to turn history on. With a broker, waits (at most 5 s) until this
    /// process is subscribed to the group before reading the history, so
    /// nothing falls between the two. In a group without history this is
    /// [`join`](Self::join). Fails if the connection closed meanwhile.
    pub async fn join_with_history(
        &self,
        group: &str,
        since: Option<&str>,
    ) -> Result<crate::Recovery, WriteError> {
        if self.sender.is_closed() {
            return Err(WriteError::Closed);
        }
        let parts = self.hub.recovery_parts();
        let recovery =
            crate::recovery::join_with_history(parts, &self.sender, group, since).await?;
        self.membership.add(group);
        Ok(recovery)
    }

    /// The members of `group`; see [`Handle::members`](crate::Handle::members).
    pub async fn members(&self, group: &str) -> Result<Vec<crate::Member>, crate::PresenceError> {
        self.hub.members(group).await
    }

    /// Follows the presence changes of `group`; see
    /// [`PresenceWatch`](crate::PresenceWatch).
    pub fn watch_presence(&self, group: &str) -> crate::PresenceWatch {
        let guard = crate::interest::InterestGuard::new(self.hub.interest(), group);
        self.hub.presence().watch(group).wanting(guard)
    }

    /// Leaves `group`; returns `false` if not a member.
    pub fn leave(&self, group: &str) -> bool {
        self.membership.remove(group);
        self.hub.presence().untrack(group, self.sender.id());
        let left = self.hub.groups().leave(group, &self.sender);
        if left {
            self.hub.interest().remove(group);
        }
        left
    }

    /// Sends `message` to every member of `group`, this connection included
    /// if it is one, here and (with a broker) in every other process. The
    /// message is serialised once and shared. Returns how many local members
    /// accepted it; see [`Handle::broadcast`](crate::Handle::broadcast).
    pub fn broadcast(&self, group: &str, message: impl Into<Message>) -> usize {
        self.hub.broadcast(group, message.into(), None)
    }

    /// As [`broadcast`](Self::broadcast), but not to this connection.
    pub fn broadcast_others(&self, group: &str, message: impl Into<Message>) -> usize {
        self.hub
            .broadcast(group, message.into(), Some(self.sender.id()))
    }

    /// Leaves every group (when the connection closes).
    pub(crate) fn leave_all(&self) {
        for group in self.membership.take() {
            self.hub.presence().untrack(&group, self.sender.id());
            if self.hub.groups().leave(&group, &self.sender) {
                self.hub.interest().remove(&group);
            }
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
