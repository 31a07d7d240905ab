//! Brokers: how broadcasts reach group members in other server processes.
//!
//! By default an application has no broker and its groups live in this
//! process only. With one ([`Application::broker`](crate::Application::broker)),
//! every broadcast is delivered locally as before *and* handed to the broker,
//! which publishes it to the other processes; what they publish comes back
//! through the [`Delivery`] handle the broker gets when the server starts, and
//! is delivered to the local members only (never published again).
//!
//! Local delivery never waits on the broker: [`Broker::publish`] must return
//! at once (a broker queues the message for a task of its own, and counts and
//! logs what it has to drop when that queue is full).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use crate::group::Groups;
use crate::history::{History, HistoryHub, HistoryRead, HistoryUnavailable, Offset};
use crate::message::Message;
use crate::presence::{Member, PresenceDiff, PresenceError, PresenceHub, PresenceUpdate};
use crate::sender::ConnectionId as MemberId;

/// A publish/subscribe backend that carries broadcasts between server
/// processes, such as `RedisBroker` (feature `redis`).
///
/// The application calls [`start`](Self::start) once, from inside the tokio
/// runtime, when its server starts running, and [`publish`](Self::publish) on
/// every broadcast (from [`WebSocket::broadcast`](crate::WebSocket::broadcast),
/// [`WebSocket::broadcast_others`](crate::WebSocket::broadcast_others) and
/// [`Handle::broadcast`](crate::Handle::broadcast)).
///
/// Excluding the sender only applies to local delivery: the sender is not a
/// member anywhere else. A broker tags what it publishes so that it ignores
/// its own messages when they come back.
///
/// A minimal in-memory broker joining two applications in one process:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use squall::{Broker, Delivery, Message};
///
/// #[derive(Clone, Default)]
/// struct Pair(Arc<Mutex<Vec<Delivery>>>);
///
/// struct Side { pair: Pair, me: usize }
///
/// impl Broker for Side {
///     fn start(&self, delivery: Delivery) {
///         self.pair.0.lock().unwrap().push(delivery);
///     }
///     fn publish(&self, group: &str, message: &Message) {
///         for (i, other) in self.pair.0.lock().unwrap().iter().enumerate() {
///             if i != self.me {
///                 other.deliver(group, message.clone());
///             }
///         }
///     }
/// }
/// ```
pub trait Broker: Send + Sync + 'static {
    /// Starts the broker's own tasks (connect, subscribe); called once when
    /// the server starts. Messages from other processes go to
    /// [`Delivery::deliver`]; the tasks should end when
    /// [`Delivery::closed`] resolves.
    fn start(&self, delivery: Delivery);

    /// Publishes a broadcast to the other processes. Must not wait: queue the
    /// message (its buffers are shared, cloning it copies nothing) and return.
    fn publish(&self, group: &str, message: &Message);

    /// Resolves once the broker receives what other processes publish
    /// (`RedisBroker`: once it is subscribed). The server awaits it after
    /// [`start`](Self::start) and before it accepts connections, bounded by
    /// [`Application::broker_ready_timeout`](crate::Application::broker_ready_timeout),
    /// so that broadcasts made by other processes right after this one
    /// starts are not missed. The default is ready at once.
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::ready(()))
    }

    /// A change of this process's share of a group's presence (see
    /// [`Presence`](crate::Presence)). A broker that keeps presence stores
    /// `update.member` and sends `update.diff` to the other processes'
    /// watchers ([`Delivery::deliver_presence`]); like
    /// [`publish`](Self::publish), it must not wait. Called in the order the
    /// changes happen. Default: nothing, presence stays in this process.
    fn presence_update(&self, update: &PresenceUpdate<'_>) {
        let _ = update;
    }

    /// Lists the members of `group` in the *other* processes, if this broker
    /// keeps presence (the application adds its own). Default: `None`, the
    /// application lists its own members only.
    fn members(
        &self,
        group: &str,
    ) -> Option<BoxFuture<'static, Result<Vec<Member>, PresenceError>>> {
        let _ = group;
        None
    }

    /// Records `message` in the history of `group` (see
    /// [`History`](crate::History)) and delivers it to every process, this
    /// one included, through [`Delivery::deliver_history`] with the offset
    /// it got; `tag` goes back with it to this process. Returns `false` if
    /// it cannot (no history in this broker, or its backend unreachable):
    /// the application then keeps the message in its own history and
    /// [`publish`](Self::publish)es it as an ordinary broadcast. Must not
    /// wait. Default: `false`.
    fn publish_history(&self, group: &str, message: &Message, history: &History, tag: u64) -> bool {
        let _ = (group, message, history, tag);
        false
    }

    /// This process now wants the messages of `group` (its first local
    /// member joined, a member is catching up on its history, or a presence
    /// watcher started): a broker that subscribes per group subscribes.
    /// Calls to this and [`unsubscribe`](Self::unsubscribe) come in order;
    /// must not wait. Default: nothing (the broker receives every group).
    fn subscribe(&self, group: &str) {
        let _ = group;
    }

    /// This process no longer wants the messages of `group`. Default:
    /// nothing.
    fn unsubscribe(&self, group: &str) {
        let _ = group;
    }

    /// Resolves once the messages published to `group` from now on reach
    /// this process (its subscription is confirmed), after
    /// [`subscribe`](Self::subscribe). A member catching up on history waits
    /// for it before reading, so nothing falls between the history and the
    /// live messages. Default: at once.
    fn subscribed(&self, group: &str) -> BoxFuture<'static, ()> {
        let _ = group;
        Box::pin(std::future::ready(()))
    }

    /// Reads the history of `group` after `since` (see [`HistoryRead`]), if
    /// this broker keeps history. Default: `None`, the application reads its
    /// own.
    fn read_history(
        &self,
        group: &str,
        since: Option<&Offset>,
        history: &History,
    ) -> Option<BoxFuture<'static, Result<HistoryRead, HistoryUnavailable>>> {
        let _ = (group, since, history);
        None
    }
}

/// The way a [`Broker`] hands messages from other processes to this
/// application's local group members. Cheap to clone; it does not keep the
/// application alive.
#[derive(Clone)]
pub struct Delivery {
    groups: Weak<Groups>,
    presence: Weak<PresenceHub>,
    history: Weak<HistoryHub>,
    stopped: CancellationToken,
}

impl Delivery {
    pub(crate) fn new(
        groups: &Arc<Groups>,
        presence: &Arc<PresenceHub>,
        history: &Arc<HistoryHub>,
        stopped: CancellationToken,
    ) -> Self {
        Delivery {
            groups: Arc::downgrade(groups),
            presence: Arc::downgrade(presence),
            history: Arc::downgrade(history),
            stopped,
        }
    }

    /// Hands a presence diff from another process to this application's
    /// watchers ([`Handle::watch_presence`](crate::Handle::watch_presence)).
    pub fn deliver_presence(&self, diff: PresenceDiff) {
        if let Some(presence) = self.presence.upgrade() {
            presence.deliver(diff);
        }
    }

    /// Calls `f` with this process's whole share of presence, as
    /// `(group, member)` pairs, while no change can happen: what `f` queues
    /// comes before the [`Broker::presence_update`] of any later change (a
    /// broker rewrites its share this way after losing it, e.g. when Redis
    /// restarted). `None` once the application is gone.
    pub fn local_presence<R>(&self, f: impl FnOnce(Vec<(String, Member)>) -> R) -> Option<R> {
        self.presence
            .upgrade()
            .map(|presence| presence.snapshot_with(f))
    }

    /// Sends `message` to every local member of `group` (each with a
    /// non-waiting send, as a local broadcast) without publishing it again.
    /// Returns how many accepted it; 0 once the application is gone.
    ///
    /// In a group with history, the message goes out in the history
    /// envelope with no offset: it was not recorded.
    pub fn deliver(&self, group: &str, message: Message) -> usize {
        crate::telemetry::broker_delivered();
        let Some(groups) = self.groups.upgrade() else {
            return 0;
        };
        let history = self.history.upgrade();
        if history.is_some_and(|history| history.rule(group).is_some()) {
            let unrecorded = crate::history::envelope(group, None, &message);
            return groups.deliver(group, unrecorded, None);
        }
        groups.deliver(group, message, None)
    }

    /// Sends the message at `offset` of a group with history to its local
    /// members, in the history envelope, skipping those already sent it.
    /// Call it in offset order. `tag` is the one given to
    /// [`Broker::publish_history`] if this process published the message
    /// (its sender is then skipped for `broadcast_others`), 0 otherwise.
    pub fn deliver_history(
        &self,
        group: &str,
        offset: &Offset,
        message: &Message,
        tag: u64,
    ) -> usize {
        let (Some(groups), Some(history)) = (self.groups.upgrade(), self.history.upgrade()) else {
            return 0;
        };
        let exclude = (tag != 0).then_some(tag as MemberId);
        history.deliver(&groups, group, offset, message, exclude)
    }

    /// For a group with history: its rule and the offset of the last of its
    /// messages delivered here (`None` if none yet). A broker whose
    /// subscription was down reads the history after that offset and hands
    /// it to [`deliver_history`](Self::deliver_history), so live members see
    /// no gap (what they were already sent is skipped). `None` for a group
    /// without history.
    pub fn history_position(&self, group: &str) -> Option<(History, Option<Offset>)> {
        let history = self.history.upgrade()?;
        let rule = history.rule(group)?.clone();
        Some((rule, history.last_delivered(group)))
    }

    /// Resolves when the application's server has stopped: the broker's
    /// tasks should end then.
    pub async fn closed(&self) {
        self.stopped.cancelled().await;
    }

    /// Whether the application's server has stopped.
    pub fn is_closed(&self) -> bool {
        self.stopped.is_cancelled() || self.groups.strong_count() == 0
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("closed", &self.is_closed())
            .finish()
    }
}
