//! [`RedisBroker`]: groups shared by several server processes through Redis
//! pub/sub (feature `redis`).
//!
//! On the wire, a broadcast to group `G` is a `PUBLISH` on channel
//! `squall:group:G` whose payload is the publishing process's 8-byte instance
//! id, one kind byte (`t` text, `b` binary, `p` presence diff, `h` history
//! message) and the message bytes. Each process subscribes to the channel of
//! every group it has a local member in (or a member catching up, or a
//! presence watcher), and only those: a process pays for the traffic of the
//! groups it serves, not the whole cluster's. It drops what carries its own
//! instance id (it has already delivered that locally, except history
//! messages, which reach local members through Redis with their offset),
//! and delivers the rest to its local members.
//!
//! Subscriptions follow membership without racing it: joins and leaves
//! update a wanted set, in order, and the subscriber task brings its
//! subscriptions to that set whenever it changes, and again from scratch on
//! every new connection. A message published to a group before this
//! process's `SUBSCRIBE` for it is confirmed does not reach it: a member
//! that must not miss one joins with history, which waits for the
//! confirmation before reading the history.
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

use std::collections::HashSet;
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

use futures_util::future::BoxFuture;

use crate::broker::{Broker, Delivery};
use crate::history::{History, HistoryRead, HistoryUnavailable, Offset};
use crate::message::{Message, Utf8Bytes};
use crate::presence::{Member, PresenceDiff, PresenceError, PresenceUpdate};
use crate::redis_backend::{Backend, Conn};
use crate::{redis_history, redis_presence};

const KIND_TEXT: u8 = b't';
const KIND_BINARY: u8 = b'b';
/// A presence diff (JSON).
const KIND_PRESENCE: u8 = b'p';
/// A message recorded in a group's history: a tag (8 bytes, for the
/// publishing process), `epoch:seq `, then kind byte and bytes.
const KIND_HISTORY: u8 = b'h';
const TAG_LEN: usize = 8;
const ID_LEN: usize = 8;
const HEADER_LEN: usize = ID_LEN + 1;

const DEFAULT_QUEUE: usize = 4096;
/// The most messages published in one round trip.
const MAX_BATCH: u64 = 256;
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Bound on connecting, subscribing, or one `PUBLISH` answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(feature = "redis-cluster")]
#[path = "redis_cluster.rs"]
mod cluster;

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
    backend: Backend,
    instance: [u8; ID_LEN],
    /// The instance id in hex: this process's name in presence keys.
    node: String,
    /// A connection for requests that wait for an answer (listings,
    /// heartbeats), made on first use and again after a failure.
    requests: Mutex<Option<Conn>>,
    /// Set when presence writes may have been lost: the next heartbeat
    /// rewrites this process's whole share.
    resync: AtomicBool,
    /// The groups this process wants, and a wake-up for the subscriber when
    /// that changes.
    wanted: Mutex<HashSet<String>>,
    wanted_changed: tokio::sync::Notify,
    /// The groups whose subscription is confirmed on the current
    /// connection, and a wake-up for those waiting on one.
    active: Mutex<HashSet<String>>,
    active_changed: tokio::sync::Notify,
    queue: mpsc::Sender<Outgoing>,
    pending: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    dropped: AtomicU64,
    /// Messages received from Redis (any group, any kind).
    received: AtomicU64,
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

/// What waits in the publish queue: the commands of one broadcast (a
/// `PUBLISH`) or of one presence change, sent in order.
enum Outgoing {
    One(redis::Cmd),
    Many(Vec<redis::Cmd>),
    /// A message for a group with history: if it cannot be recorded, local
    /// members still get it (without an offset).
    History {
        cmd: redis::Cmd,
        group: String,
        message: Message,
    },
}

impl Outgoing {
    /// Adds the commands to `batch`; keeps what must be delivered locally if
    /// the batch fails.
    fn add_to(self, batch: &mut Vec<redis::Cmd>, unrecorded: &mut Vec<(String, Message)>) {
        match self {
            Outgoing::One(cmd) => batch.push(cmd),
            Outgoing::History {
                cmd,
                group,
                message,
            } => {
                batch.push(cmd);
                unrecorded.push((group, message));
            }
            Outgoing::Many(cmds) => batch.extend(cmds),
        }
    }
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
        Ok(Self::with_backend(Backend::Single(client), capacity))
    }

    /// A broker for the Redis Cluster reachable at `nodes` (any of its
    /// nodes' `redis://host:port/` URLs; the others are discovered), with
    /// sharded pub/sub (feature `redis-cluster`, Redis 7 or later): each
    /// group's channel, history and presence live on the shard that owns
    /// the group, and a message costs only that shard and the processes
    /// with members of its group. Fails only on a malformed URL.
    #[cfg(feature = "redis-cluster")]
    pub fn cluster<I, S>(nodes: I) -> Result<Self, RedisBrokerError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes
            .into_iter()
            .map(|url| redis::IntoConnectionInfo::into_connection_info(url.as_ref()))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(RedisBrokerError)?;
        Ok(Self::with_backend(Backend::Cluster(nodes), DEFAULT_QUEUE))
    }

    fn with_backend(backend: Backend, capacity: usize) -> Self {
        let (queue, pending) = mpsc::channel(capacity.max(1));
        let instance = instance_id();
        RedisBroker {
            inner: Arc::new(Inner {
                backend,
                instance,
                node: data_encoding::HEXLOWER.encode(&instance),
                requests: Mutex::new(None),
                resync: AtomicBool::new(false),
                wanted: Mutex::default(),
                wanted_changed: tokio::sync::Notify::new(),
                active: Mutex::default(),
                active_changed: tokio::sync::Notify::new(),
                queue,
                pending: Mutex::new(Some(pending)),
                dropped: AtomicU64::new(0),
                received: AtomicU64::new(0),
                overflowing: AtomicBool::new(false),
                health: Health::default(),
                subscribed: watch::Sender::new(false),
            }),
        }
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
    /// Redis is unreachable it does not resolve). With subscriptions per
    /// group, "subscribed" means its subscription connection is up and
    /// subscribed to every group wanted so far.
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

    /// How many messages this process has received from Redis: what its
    /// subscriptions cost it (its own messages coming back included).
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
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
        tokio::spawn(heartbeat_loop(self.inner.clone(), delivery.clone()));
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
        let (kind, bytes): (u8, &[u8]) = match message {
            Message::Text(text) => (KIND_TEXT, text.as_bytes()),
            Message::Binary(data) => (KIND_BINARY, data),
        };
        self.inner
            .enqueue(Outgoing::One(self.inner.publish_cmd(group, kind, bytes)));
    }

    fn presence_update(&self, update: &PresenceUpdate<'_>) {
        let inner = &self.inner;
        let mut cmds = redis_presence::share_commands(&inner.node, update.group, update.member);
        let diff = serde_json::to_vec(update.diff).unwrap_or_default();
        cmds.push(inner.publish_cmd(update.group, KIND_PRESENCE, &diff));
        if !inner.enqueue(Outgoing::Many(cmds)) {
            // This change never reaches Redis: rewrite the whole share.
            inner.resync.store(true, Ordering::Relaxed);
        }
    }

    fn subscribe(&self, group: &str) {
        let inner = &self.inner;
        lock(&inner.wanted).insert(group.to_owned());
        inner.wanted_changed.notify_one();
    }

    fn unsubscribe(&self, group: &str) {
        let inner = &self.inner;
        lock(&inner.wanted).remove(group);
        inner.wanted_changed.notify_one();
    }

    fn subscribed(&self, group: &str) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        let group = group.to_owned();
        Box::pin(async move {
            loop {
                let changed = inner.active_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if lock(&inner.active).contains(&group) {
                    return;
                }
                changed.await;
            }
        })
    }

    fn publish_history(&self, group: &str, message: &Message, history: &History, tag: u64) -> bool {
        let inner = &self.inner;
        // Only the publisher matters: while the subscriber reconnects, the
        // message is recorded, and reaches local members when the
        // subscription is back (the gap is filled from the history).
        if inner.health.is_down(PUBLISHER) {
            return false;
        }
        let (kind, bytes): (u8, &[u8]) = match message {
            Message::Text(text) => (KIND_TEXT, text.as_bytes()),
            Message::Binary(data) => (KIND_BINARY, data),
        };
        let mut head = Vec::with_capacity(HEADER_LEN + TAG_LEN);
        head.extend_from_slice(&inner.instance);
        head.push(KIND_HISTORY);
        head.extend_from_slice(&tag.to_be_bytes());
        let mut body = Vec::with_capacity(1 + bytes.len());
        body.push(kind);
        body.extend_from_slice(bytes);
        let cmd = redis_history::publish_cmd(
            group,
            history,
            inner.backend.channel(group),
            inner.backend.publish_command(),
            head,
            body,
        );
        inner.enqueue(Outgoing::History {
            cmd,
            group: group.to_owned(),
            message: message.clone(),
        })
    }

    fn read_history(
        &self,
        group: &str,
        since: Option<&Offset>,
        history: &History,
    ) -> Option<BoxFuture<'static, Result<HistoryRead, HistoryUnavailable>>> {
        let inner = self.inner.clone();
        let group = group.to_owned();
        let since = since.cloned();
        let history = history.clone();
        Some(Box::pin(async move {
            let reading = async {
                let mut conn = inner
                    .connection()
                    .await
                    .map_err(|e| HistoryUnavailable(e.to_string()))?;
                let read =
                    redis_history::read(&mut conn, &group, since.as_ref(), &history, decode_body)
                        .await;
                if read.is_err() {
                    inner.forget_connection();
                }
                read
            };
            tokio::time::timeout(IO_TIMEOUT, reading)
                .await
                .unwrap_or_else(|_| Err(HistoryUnavailable("Redis timed out".into())))
        }))
    }

    fn members(
        &self,
        group: &str,
    ) -> Option<BoxFuture<'static, Result<Vec<Member>, PresenceError>>> {
        let inner = self.inner.clone();
        let group = group.to_owned();
        Some(Box::pin(async move {
            let listing = async {
                let mut conn = inner
                    .connection()
                    .await
                    .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
                let listed = redis_presence::remote_members(&mut conn, &inner.node, &group).await;
                if listed.is_err() {
                    inner.forget_connection();
                }
                listed
            };
            tokio::time::timeout(IO_TIMEOUT, listing)
                .await
                .unwrap_or_else(|_| Err(PresenceError::Unavailable("Redis timed out".into())))
        }))
    }
}

impl Inner {
    /// `PUBLISH` (`SPUBLISH` on a cluster) to `group`'s channel of instance
    /// id, kind byte, bytes.
    fn publish_cmd(&self, group: &str, kind: u8, bytes: &[u8]) -> redis::Cmd {
        let mut payload = Vec::with_capacity(HEADER_LEN + bytes.len());
        payload.extend_from_slice(&self.instance);
        payload.push(kind);
        payload.extend_from_slice(bytes);
        redis::cmd(self.backend.publish_command())
            .arg(self.backend.channel(group))
            .arg(payload)
            .to_owned()
    }

    /// Queues without waiting; `false` if it had to be dropped.
    fn enqueue(&self, outgoing: Outgoing) -> bool {
        let inner = self;
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
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if !inner.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dropped,
                        "Redis publish queue full: broadcasts reach local members only"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("Redis broker stopped: broadcast delivered locally only");
                false
            }
        }
    }

    /// The shared request connection, connecting if there is none.
    async fn connection(&self) -> redis::RedisResult<Conn> {
        let cached = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(conn) = cached {
            return Ok(conn);
        }
        let conn = self.backend.connect().await?;
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// A batch was lost with its connection: presence must be rewritten,
    /// and history messages (maybe never recorded) go to local members
    /// without an offset.
    fn failed(&self, batch: u64, unrecorded: Vec<(String, Message)>, delivery: &Delivery) {
        self.dropped.fetch_add(batch, Ordering::Relaxed);
        self.resync.store(true, Ordering::Relaxed);
        for (group, message) in unrecorded {
            delivery.deliver(&group, message);
        }
    }

    /// For each subscribed group with history whose messages were delivered
    /// here before: reads the history after the last one delivered and
    /// delivers the rest in order (members skip what they already have).
    /// Same epoch only: a Redis that lost the history cannot fill the gap.
    async fn fill_gaps(&self, groups: &HashSet<String>, delivery: &Delivery) {
        for group in groups {
            let Some((history, Some(last))) = delivery.history_position(group) else {
                continue;
            };
            let read = async {
                let mut conn = self
                    .connection()
                    .await
                    .map_err(|e| HistoryUnavailable(e.to_string()))?;
                redis_history::read(&mut conn, group, Some(&last), &history, decode_body).await
            };
            match tokio::time::timeout(IO_TIMEOUT, read).await {
                Ok(Ok(read)) if read.epoch.as_deref() == Some(last.epoch.as_str()) => {
                    for (seq, message) in read.entries {
                        let offset = Offset {
                            epoch: last.epoch.clone(),
                            seq,
                        };
                        delivery.deliver_history(group, &offset, &message, 0);
                    }
                }
                Ok(Ok(_)) => tracing::info!(group, "history restarted: a gap for live members"),
                _ => {
                    self.forget_connection();
                    tracing::warn!(group, "could not read the history to fill a gap");
                }
            }
        }
    }

    /// Drops the request connection after a failure: the next request makes
    /// a new one.
    fn forget_connection(&self) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Publishes queued messages, reconnecting with backoff when Redis fails.
async fn publish_loop(
    inner: Arc<Inner>,
    mut pending: mpsc::Receiver<Outgoing>,
    delivery: Delivery,
) {
    let mut backoff = Backoff::default();
    let mut connection: Option<Conn> = None;
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
            let connect = inner.backend.connect();
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
        let mut commands = Vec::new();
        let mut unrecorded = Vec::new();
        outgoing.add_to(&mut commands, &mut unrecorded);
        let mut batch = 1u64;
        while batch < MAX_BATCH {
            let Ok(more) = pending.try_recv() else { break };
            more.add_to(&mut commands, &mut unrecorded);
            batch += 1;
        }
        let publish = conn.send_all(commands);
        match tokio::time::timeout(IO_TIMEOUT, publish).await {
            Ok(Ok(())) => {
                backoff.reset();
                connection = Some(conn);
            }
            Ok(Err(error)) => {
                inner.failed(batch, unrecorded, &delivery);
                inner.health.down(PUBLISHER, &error);
            }
            Err(_) => {
                inner.failed(batch, unrecorded, &delivery);
                inner.health.down(PUBLISHER, &"PUBLISH timed out");
            }
        }
    }
}

/// Keeps one subscription connection subscribed to the wanted groups and
/// delivers what other processes publish; starts over on every new
/// connection.
async fn subscribe_loop(inner: Arc<Inner>, delivery: Delivery) {
    #[cfg(feature = "redis-cluster")]
    if let Backend::Cluster(nodes) = &inner.backend {
        let nodes = nodes.clone();
        return cluster::subscribe_loop(inner, nodes, delivery).await;
    }
    let mut backoff = Backoff::default();
    loop {
        #[allow(irrefutable_let_patterns)]
        let Backend::Single(client) = &inner.backend
        else {
            return;
        };
        let connect = client.get_async_pubsub();
        let pubsub = match connect_subscriber(&inner, &delivery, &mut backoff, connect).await {
            Attempt::Connected(pubsub) => pubsub,
            Attempt::Retry => continue,
            Attempt::Stop => return,
        };
        let (mut sink, mut messages) = pubsub.split();
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut first = true;
        let failure: String = loop {
            if let Err(error) = inner.reconcile(&mut sink, &mut subscribed).await {
                break error;
            }
            if first {
                first = false;
                // What live members of history groups missed while the
                // subscription was down, before anything newer.
                inner.fill_gaps(&subscribed, &delivery).await;
                inner.health.up(SUBSCRIBER);
                inner.subscribed.send_replace(true);
                backoff.reset();
            }
            tokio::select! {
                biased;
                () = delivery.closed() => return,
                () = inner.wanted_changed.notified() => {}
                message = messages.next() => match message {
                    Some(message) => inner.receive(&message, &delivery),
                    None => break "subscription connection closed".to_owned(),
                },
            }
        };
        lock(&inner.active).clear();
        inner.subscribed.send_replace(false);
        inner.health.down(SUBSCRIBER, &failure);
        if !backoff.wait(&delivery).await {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Subscribes to the wanted groups not yet subscribed and unsubscribes
    /// from the others, in one command each.
    async fn reconcile(
        &self,
        sink: &mut redis::aio::PubSubSink,
        subscribed: &mut HashSet<String>,
    ) -> Result<(), String> {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let wanted = lock(&self.wanted);
            (
                wanted.difference(subscribed).cloned().collect(),
                subscribed.difference(&wanted).cloned().collect(),
            )
        };
        let channels = |groups: &[String]| -> Vec<String> {
            groups.iter().map(|g| self.backend.channel(g)).collect()
        };
        if !add.is_empty() {
            match tokio::time::timeout(IO_TIMEOUT, sink.subscribe(channels(&add))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("SUBSCRIBE timed out".to_owned()),
            }
            lock(&self.active).extend(add.iter().cloned());
            subscribed.extend(add);
            self.active_changed.notify_waiters();
        }
        if !remove.is_empty() {
            {
                let mut active = lock(&self.active);
                for group in &remove {
                    active.remove(group);
                    subscribed.remove(group);
                }
            }
            match tokio::time::timeout(IO_TIMEOUT, sink.unsubscribe(channels(&remove))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("UNSUBSCRIBE timed out".to_owned()),
            }
        }
        Ok(())
    }
}

impl Inner {
    fn receive(&self, message: &redis::Msg, delivery: &Delivery) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let Some(group) = self.backend.group(message.get_channel_name()) else {
            return;
        };
        let payload = message.get_payload_bytes();
        let mine = payload.get(..ID_LEN) == Some(&self.instance[..]);
        if payload.get(ID_LEN) == Some(&KIND_HISTORY) {
            // Delivered here too: local members get it with its offset.
            let rest = &payload[HEADER_LEN..];
            let decoded = rest.split_at_checked(TAG_LEN).and_then(|(tag, rest)| {
                let tag = u64::from_be_bytes(tag.try_into().ok()?);
                let (offset, body) = redis_history::split_published(rest)?;
                Some((if mine { tag } else { 0 }, offset, decode_body(body)?))
            });
            match decoded {
                Some((tag, offset, message)) => {
                    delivery.deliver_history(group, &offset, &message, tag);
                }
                None => tracing::debug!(group, "ignoring a malformed history message"),
            }
            return;
        }
        if mine {
            return; // our own broadcast, already delivered locally
        }
        if payload.get(ID_LEN) == Some(&KIND_PRESENCE) {
            match serde_json::from_slice::<PresenceDiff>(&payload[HEADER_LEN..]) {
                Ok(diff) => delivery.deliver_presence(diff),
                Err(_) => tracing::debug!(group, "ignoring a malformed presence diff"),
            }
            return;
        }
        match decode(payload) {
            Some(decoded) => {
                delivery.deliver(group, decoded);
            }
            None => tracing::debug!(group, "ignoring a malformed message from Redis"),
        }
    }
}

/// Heartbeats, reaps dead processes, and rewrites this process's presence
/// share when Redis lost it (see `redis_presence`).
async fn heartbeat_loop(inner: Arc<Inner>, delivery: Delivery) {
    let mut interval = tokio::time::interval(redis_presence::HEARTBEAT);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = delivery.closed() => return,
            _ = interval.tick() => {}
        }
        let beat = async {
            let mut conn = inner.connection().await?;
            let beat = redis_presence::heartbeat(&mut conn, &inner.node).await?;
            if beat.missing || inner.resync.swap(false, Ordering::Relaxed) {
                inner.rewrite_share(&delivery, beat.reaped);
            }
            for dead in &beat.dead {
                tracing::info!(node = %dead, "a squall process stopped heartbeating: removing its presence");
                for diff in redis_presence::reap(&mut conn, dead).await? {
                    let bytes = serde_json::to_vec(&diff).unwrap_or_default();
                    inner.enqueue(Outgoing::One(inner.publish_cmd(
                        &diff.group,
                        KIND_PRESENCE,
                        &bytes,
                    )));
                    delivery.deliver_presence(diff);
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(IO_TIMEOUT, beat).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "presence heartbeat failed");
                inner.forget_connection();
                inner.resync.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                tracing::debug!("presence heartbeat timed out");
                inner.forget_connection();
                inner.resync.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Inner {
    /// Queues this process's whole presence share (in order with later
    /// changes); with `announce`, also the joins, because the other
    /// processes saw it leave.
    fn rewrite_share(&self, delivery: &Delivery, announce: bool) {
        let queued = delivery.local_presence(|share| {
            let mut cmds = Vec::new();
            for (group, member) in &share {
                cmds.extend(redis_presence::share_commands(&self.node, group, member));
                if announce {
                    let diff = PresenceDiff {
                        group: group.clone(),
                        joins: vec![member.clone()],
                        leaves: Vec::new(),
                    };
                    let bytes = serde_json::to_vec(&diff).unwrap_or_default();
                    cmds.push(self.publish_cmd(group, KIND_PRESENCE, &bytes));
                }
            }
            cmds.is_empty() || self.enqueue(Outgoing::Many(cmds))
        });
        if queued == Some(false) {
            self.resync.store(true, Ordering::Relaxed);
        }
    }
}

/// Instance id, kind byte, message bytes.
#[cfg(test)]
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
    decode_body(payload.get(ID_LEN..)?)
}

/// Kind byte, message bytes.
fn decode_body(body: &[u8]) -> Option<Message> {
    let (&kind, bytes) = body.split_first()?;
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

/// How an attempt to connect the subscription ended.
enum Attempt<T> {
    Connected(T),
    /// It failed and the backoff has passed: try again.
    Retry,
    /// The application stopped.
    Stop,
}

/// Connects the subscription connection, bounded by `IO_TIMEOUT`; a failure
/// marks the subscriber down and waits out the backoff. Shared by the
/// single-server and the cluster subscription loops.
async fn connect_subscriber<T, E: Display>(
    inner: &Inner,
    delivery: &Delivery,
    backoff: &mut Backoff,
    connect: impl std::future::Future<Output = Result<T, E>>,
) -> Attempt<T> {
    let connected = tokio::select! {
        biased;
        () = delivery.closed() => return Attempt::Stop,
        connected = tokio::time::timeout(IO_TIMEOUT, connect) => connected,
    };
    match connected {
        Ok(Ok(connection)) => return Attempt::Connected(connection),
        Ok(Err(error)) => inner.health.down(SUBSCRIBER, &error),
        Err(_) => inner.health.down(SUBSCRIBER, &"connect timed out"),
    }
    if backoff.wait(delivery).await {
        Attempt::Retry
    } else {
        Attempt::Stop
    }
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
            crate::telemetry::broker_outage();
            tracing::warn!(
                %error,
                "Redis unreachable: broadcasts reach local members only; reconnecting"
            );
        }
    }

    /// Whether `link` is down (or was, at its last attempt).
    fn is_down(&self, link: usize) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[link]
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
