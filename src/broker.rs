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

use crate::group::Groups;
use crate::message::Message;

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
}

/// The way a [`Broker`] hands messages from other processes to this
/// application's local group members. Cheap to clone; it does not keep the
/// application alive.
#[derive(Clone)]
pub struct Delivery {
    groups: Weak<Groups>,
    stopped: CancellationToken,
}

impl Delivery {
    pub(crate) fn new(groups: &Arc<Groups>, stopped: CancellationToken) -> Self {
        Delivery {
            groups: Arc::downgrade(groups),
            stopped,
        }
    }

    /// Sends `message` to every local member of `group` (each with a
    /// non-waiting send, as a local broadcast) without publishing it again.
    /// Returns how many accepted it; 0 once the application is gone.
    pub fn deliver(&self, group: &str, message: Message) -> usize {
        match self.groups.upgrade() {
            Some(groups) => groups.deliver(group, message, None),
            None => 0,
        }
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
