//! [`RedisBroker`]: groups shared by several server processes through Redis
//! pub/sub (feature `redis`).
//!
//! On the wire, a broadcast to group `G` is a `PUBLISH` on channel
//! `squall:group:G` whose payload is the publishing process's 8-byte instance
//! id, one kind byte (`t` text, `b` binary) and the message bytes. Each
//! process subscribes to the pattern `squall:group:*`, drops what carries its
//! own instance id (it has already delivered that locally), and delivers the
//! rest to its local members.
//!
//! Two tasks do the work, so that a broadcast never waits on Redis: a
//! publisher fed by a bounded queue, and a subscriber. Each reconnects on its
//! own with exponential backoff (50 ms doubling to 2 s); the subscriber
//! subscribes again on every new connection. While Redis is unreachable,
//! local delivery carries on; the outage is logged once (warn) and the
//! recovery once (info). Broadcasts made during an outage wait in the
//! publish queue (beyond its capacity they are dropped and counted) and are
//! published when Redis is back, so other processes may get them late, or
//! not at all if their own subscription is not back yet: pub/sub keeps no
//! history. The messages in flight when a connection fails are dropped.

use std::fmt::Display;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::{Broker, Delivery, Message, Utf8Bytes};

/// Channel name prefix; the group name follows it.
const CHANNEL_PREFIX: &str = "squall:group:";

/// The one pattern every process subscribes to.
///
/// One pattern subscription instead of a `SUBSCRIBE` per group: a process
/// would otherwise have to subscribe when a group gets its first local member
/// and unsubscribe when it loses its last, racing broadcasts made in between,
/// and resubscribe to the whole set after every reconnection. The price is
/// that every process receives every group's messages, and drops those for
/// groups with no local member (a hash lookup).
const CHANNEL_PATTERN: &str = "squall:group:*";

const KIND_TEXT: u8 = b't';
const KIND_BINARY: u8 = b'b';
const ID_LEN: usize = 8;
const HEADER_LEN: usize = ID_LEN + 1;

const DEFAULT_QUEUE: usize = 4096;
/// The most messages published in one round trip.
const MAX_BATCH: u64 = 256;
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Bound on connecting, subscribing, or one `PUBLISH` answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

const PUBLISHER: usize = 0;
const SUBSCRIBER: usize = 1;

/// A [`Broker`] over Redis pub/sub: several server processes (behind a load
/// balancer) deliver to each other's group members.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use squall::{Application, RedisBroker};
///
/// Application::new()
///     .broker(RedisBroker::new("redis://127.0.0.1:6379/")?)
///     .listen("127.0.0.1:8888")
///     .await?;
/// # Ok(()) }
/// ```
///
/// When the server starts, it waits until the broker is subscribed before
/// it accepts connections (up to
/// [`broker_ready_timeout`](crate::Application::broker_ready_timeout),
/// 5 s by default), so that what other processes broadcast from then on
/// reaches its clients. To wait yourself (say, before announcing the
/// process to a load balancer), keep a clone and await
/// [`ready`](Self::ready):
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use squall::{Application, RedisBroker};
///
/// let broker = RedisBroker::new("redis://127.0.0.1:6379/")?;
/// let server = Application::new().broker(broker.clone()).bind("127.0.0.1:0").await?;
/// let running = tokio::spawn(server.run_until_signal());
/// tokio::time::timeout(Duration::from_secs(10), broker.ready()).await?;
/// // subscribed: announce this process
/// running.await??;
/// # Ok(()) }
/// ```
///
/// A broker serves one application: give each its own. Clones share the
/// same queue and counters (keep one to read [`dropped`](Self::dropped)).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    instance: [u8; ID_LEN],
    queue: mpsc::Sender<Outgoing>,
    pending: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    dropped: AtomicU64,
    overflowing: AtomicBool,
    health: Health,
    /// Whether the subscriber is subscribed right now.
    subscribed: watch::Sender<bool>,
}

/// Why a [`RedisBroker`] could not be made: the URL is not a valid Redis URL.
///
/// squall's own type, so that naming it needs no dependency on the `redis`
/// crate; the underlying error is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct RedisBrokerError(#[source] redis::RedisError);

/// One message waiting to be published.
struct Outgoing {
    channel: String,
    payload: Vec<u8>,
}

impl RedisBroker {
    /// A broker for the Redis server at `url` (`redis://host:port/db`), with
    /// a publish queue of 4096 messages. Nothing connects until the
    /// application's server starts. Fails only on a malformed URL.
    pub fn new(url: &str) -> Result<Self, RedisBrokerError> {
        Self::with_queue(url, DEFAULT_QUEUE)
    }

    /// As [`new`](Self::new), with room for `capacity` messages waiting to
    /// be published. When it is full (Redis slower than the broadcasts, or
    /// unreachable), further messages are not published to the other
    /// processes: they are counted in [`dropped`](Self::dropped) and logged.
    pub fn with_queue(url: &str, capacity: usize) -> Result<Self, RedisBrokerError> {
        let client = redis::Client::open(url).map_err(RedisBrokerError)?;
        let (queue, pending) = mpsc::channel(capacity.max(1));
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                client,
                instance: instance_id(),
                queue,
                pending: Mutex::new(Some(pending)),
                dropped: AtomicU64::new(0),
                overflowing: AtomicBool::new(false),
                health: Health::default(),
                subscribed: watch::Sender::new(false),
            }),
        })
    }

    /// How many broadcasts were not published to the other processes (queue
    /// full, or lost with a failed connection).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Resolves once the broker is subscribed, so that what other processes
    /// broadcast reaches this one; at once if it is subscribed now. The
    /// broker connects when the application's server starts running, so
    /// await this after starting it, with a bound of your choosing (while
    /// Redis is unreachable it does not resolve).
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut subscribed = inner.subscribed.subscribe();
            // The sender lives in `inner`, held here: this cannot fail.
            let _ = subscribed.wait_for(|subscribed| *subscribed).await;
        }
    }

    /// Whether the broker is subscribed right now (false before the server
    /// starts, and during a Redis outage).
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Broker for RedisBroker {
    fn start(&self, delivery: Delivery) {
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(pending) = pending else {
            tracing::warn!("RedisBroker started twice: give each application its own broker");
            return;
        };
        tokio::spawn(publish_loop(self.inner.clone(), pending, delivery.clone()));
        let inner = self.inner.clone();
        tokio::spawn(async move {
            subscribe_loop(inner.clone(), delivery).await;
            inner.subscribed.send_replace(false);
        });
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(RedisBroker::ready(self))
    }

    fn publish(&self, group: &str, message: &Message) {
        let inner = &self.inner;
        let outgoing = Outgoing {
            channel: format!("{CHANNEL_PREFIX}{group}"),
            payload: encode(&inner.instance, message),
        };
        match inner.queue.try_send(outgoing) {
            Ok(()) => {
                if inner.overflowing.load(Ordering::Relaxed)
                    && inner.overflowing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(
                        dropped = inner.dropped.load(Ordering::Relaxed),
                        "Redis publish queue has room again"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if !inner.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dropped,
                        "Redis publish queue full: broadcasts reach local members only"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("Redis broker stopped: broadcast delivered locally only");
            }
        }
    }
}

/// Publishes queued messages, reconnecting with backoff when Redis fails.
async fn publish_loop(
    inner: Arc<Inner>,
    mut pending: mpsc::Receiver<Outgoing>,
    delivery: Delivery,
) {
    let mut backoff = Backoff::default();
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        let outgoing = tokio::select! {
            biased;
            () = delivery.closed() => return,
            outgoing = pending.recv() => match outgoing {
                Some(outgoing) => outgoing,
                None => return,
            },
        };
        // Connect first; the message waits (and the queue behind it fills)
        // meanwhile.
        let mut conn = loop {
            if let Some(conn) = connection.take() {
                break conn;
            }
            let connect = inner.client.get_multiplexed_async_connection();
            match tokio::time::timeout(IO_TIMEOUT, connect).await {
                Ok(Ok(conn)) => {
                    inner.health.up(PUBLISHER);
                    connection = Some(conn);
                }
                Ok(Err(error)) => inner.health.down(PUBLISHER, &error),
                Err(_) => inner.health.down(PUBLISHER, &"connect timed out"),
            }
            if connection.is_none() && !backoff.wait(&delivery).await {
                return;
            }
        };
        // Everything queued meanwhile goes in the same round trip (a
        // pipeline), so a busy process does not pay one round trip per
        // broadcast.
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("PUBLISH")
            .arg(&outgoing.channel)
            .arg(&outgoing.payload)
            .ignore();
        let mut batch = 1u64;
        while batch < MAX_BATCH {
            let Ok(more) = pending.try_recv() else { break };
            pipeline
                .cmd("PUBLISH")
                .arg(&more.channel)
                .arg(&more.payload)
                .ignore();
            batch += 1;
        }
        let publish = pipeline.query_async::<()>(&mut conn);
        match tokio::time::timeout(IO_TIMEOUT, publish).await {
            Ok(Ok(())) => {
                backoff.reset();
                connection = Some(conn);
            }
            Ok(Err(error)) => {
                inner.dropped.fetch_add(batch, Ordering::Relaxed);
                inner.health.down(PUBLISHER, &error);
            }
            Err(_) => {
                inner.dropped.fetch_add(batch, Ordering::Relaxed);
                inner.health.down(PUBLISHER, &"PUBLISH timed out");
            }
        }
    }
}

/// Subscribes to every group channel and delivers what other processes
/// publish; subscribes again after every reconnection.
async fn subscribe_loop(inner: Arc<Inner>, delivery: Delivery) {
    let mut backoff = Backoff::default();
    loop {
        let subscribe = async {
            let mut pubsub = inner.client.get_async_pubsub().await?;
            pubsub.psubscribe(CHANNEL_PATTERN).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            biased;
            () = delivery.closed() => return,
            subscribed = tokio::time::timeout(IO_TIMEOUT, subscribe) => subscribed,
        };
        match subscribed {
            Ok(Ok(pubsub)) => {
                inner.health.up(SUBSCRIBER);
                inner.subscribed.send_replace(true);
                backoff.reset();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        biased;
                        () = delivery.closed() => return,
                        message = messages.next() => match message {
                            Some(message) => inner.receive(&message, &delivery),
                            None => break,
                        },
                    }
                }
                inner.subscribed.send_replace(false);
                inner
                    .health
                    .down(SUBSCRIBER, &"subscription connection closed");
            }
            Ok(Err(error)) => inner.health.down(SUBSCRIBER, &error),
            Err(_) => inner.health.down(SUBSCRIBER, &"subscribe timed out"),
        }
        if !backoff.wait(&delivery).await {
            return;
        }
    }
}

impl Inner {
    fn receive(&self, message: &redis::Msg, delivery: &Delivery) {
        let Some(group) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        let payload = message.get_payload_bytes();
        if payload.get(..ID_LEN) == Some(&self.instance[..]) {
            return; // our own broadcast, already delivered locally
        }
        match decode(payload) {
            Some(decoded) => {
                delivery.deliver(group, decoded);
            }
            None => tracing::debug!(group, "ignoring a malformed message from Redis"),
        }
    }
}

/// Instance id, kind byte, message bytes.
fn encode(instance: &[u8; ID_LEN], message: &Message) -> Vec<u8> {
    let (kind, bytes): (u8, &[u8]) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, data),
    };
    let mut payload = Vec::with_capacity(HEADER_LEN + bytes.len());
    payload.extend_from_slice(instance);
    payload.push(kind);
    payload.extend_from_slice(bytes);
    payload
}

fn decode(payload: &[u8]) -> Option<Message> {
    let (&kind, bytes) = payload.get(ID_LEN..)?.split_first()?;
    let bytes = Bytes::copy_from_slice(bytes);
    match kind {
        KIND_TEXT => Utf8Bytes::try_from(bytes).ok().map(Message::Text),
        KIND_BINARY => Some(Message::Binary(bytes)),
        _ => None,
    }
}

/// A random id for this broker, so it recognises its own messages.
fn instance_id() -> [u8; ID_LEN] {
    // RandomState is seeded randomly per process and per instance; mixing in
    // the pid and the time keeps ids apart even if it were not.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish().to_be_bytes()
}

/// Exponential backoff between reconnection attempts.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_FIRST)
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }

    /// Sleeps for the current delay and doubles it; `false` if the
    /// application stopped meanwhile.
    async fn wait(&mut self, delivery: &Delivery) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_CAP);
        tokio::select! {
            biased;
            () = delivery.closed() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Which connections are down, so that an outage is logged once when it
/// starts and once when everything is back.
#[derive(Default)]
struct Health(Mutex<[bool; 2]>);

impl Health {
    fn down(&self, link: usize, error: &dyn Display) {
        let mut down = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if down[link] {
            tracing::debug!(%error, "Redis still unreachable");
            return;
        }
        let was_healthy = !down.iter().any(|d| *d);
        down[link] = true;
        if was_healthy {
            tracing::warn!(
                %error,
                "Redis unreachable: broadcasts reach local members only; reconnecting"
            );
        }
    }

    fn up(&self, link: usize) {
        let mut down = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !down[link] {
            return;
        }
        down[link] = false;
        if !down.iter().any(|d| *d) {
            tracing::info!("Redis reachable again: broadcasts reach other processes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_text_and_binary_apart() {
        let id = [7u8; ID_LEN];
        let text = encode(&id, &Message::text("héllo"));
        assert_eq!(&text[..ID_LEN], &id);
        assert_eq!(decode(&text), Some(Message::text("héllo")));
        let binary = encode(&id, &Message::binary(vec![0u8, 255]));
        assert_eq!(decode(&binary), Some(Message::binary(vec![0u8, 255])));
        assert_eq!(decode(&[1, 2, 3]), None);
        let mut bad = id.to_vec();
        bad.extend_from_slice(&[KIND_TEXT, 0xff]);
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(instance_id(), instance_id());
    }
}
