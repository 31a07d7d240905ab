//! History and recovery: a group may keep its last messages, so that a
//! client that reconnects gets what it missed, in order and exactly once.
//!
//! Off by default; [`Application::history`](crate::Application::history)
//! turns it on for the groups whose names start with a prefix. Every message
//! broadcast to such a group gets an [`Offset`], `epoch:seq`: `seq` counts
//! the group's messages (1, 2, 3, …) and `epoch` names one run of that
//! count, so that a count that restarted (the history expired, or Redis
//! lost it) is never mistaken for the old one. With the Redis broker the
//! count and the messages live in Redis (a stream per group, trimmed with
//! `XADD … MAXLEN ~ N`), so offsets are monotonic per group across every
//! process; without a broker they live in this process.
//!
//! # The protocol (what a client sees)
//!
//! Each message of a group with history reaches its members as a JSON text
//! message (an envelope), in offset order:
//!
//! ```json
//! {"type":"squall.message","group":"lobby","offset":"3f2a…:42","data":"<the text>"}
//! ```
//!
//! A binary message has `"binary":true` and its bytes in `data` as base64.
//! `offset` is `null` for a message that could not be recorded (the broker
//! was unreachable: it reaches local members, without an offset, and cannot
//! be recovered).
//!
//! [`WebSocket::join_with_history`](crate::WebSocket::join_with_history)
//! joins with the last offset the client saw (or none), and first sends:
//!
//! ```json
//! {"type":"squall.recovery","group":"lobby","offset":"3f2a…:57","recovered":true,"missed":15}
//! ```
//!
//! then the `missed` messages after the client's offset, in order, then the
//! live messages, none twice. `recovered: false` says the client's offset is
//! older than the history (trimmed, expired, or another epoch): a gap the
//! server cannot fill, and the messages that follow are everything the
//! history still holds. `offset` is the newest offset at the time of the
//! join (`null` if the group has no history yet); a client stores the
//! offset of every message it handles and sends the last one when it
//! reconnects. `examples/chat/squall-history.js` is such a client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::group::Groups;
use crate::message::Message;
use crate::sender::ConnectionId as MemberId;

/// How much history a group keeps: its last `N` messages, and optionally
/// none older than `T` (see
/// [`Application::history`](crate::Application::history)).
///
/// Each message to such a group gets an offset `epoch:seq` ([`Offset`]) and
/// reaches members as a JSON envelope
/// `{"type":"squall.message","group":G,"offset":"epoch:seq","data":"<text>"}`
/// (binary: `"binary":true`, `data` in base64; `offset` is `null` for a
/// message that could not be recorded). A client that reconnects with the
/// last offset it saw, through
/// [`WebSocket::join_with_history`](crate::WebSocket::join_with_history),
/// first gets
/// `{"type":"squall.recovery","group":G,"offset":…,"recovered":true,"missed":n}`,
/// then the `n` missed messages in order, then live ones, none twice;
/// `"recovered":false` says its offset is older than the history (a gap the
/// server cannot fill), and what follows is everything the history holds.
///
/// ```
/// use std::time::Duration;
/// use squall::History;
///
/// let history = History::last(100).max_age(Duration::from_secs(300));
/// assert_eq!(history.messages(), 100);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    messages: usize,
    max_age: Option<Duration>,
}

impl History {
    /// Keeps the last `messages` messages (at least 1). With the Redis
    /// broker the trimming is approximate (`MAXLEN ~`): a little more may be
    /// kept, never less.
    pub fn last(messages: usize) -> Self {
        History {
            messages: messages.max(1),
            max_age: None,
        }
    }

    /// Also forgets messages older than `age`. Default: no age limit.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// How many messages are kept.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The age limit, if any.
    pub fn age(&self) -> Option<Duration> {
        self.max_age
    }
}

/// The position of a message in its group's history: `epoch:seq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offset {
    /// Names one run of the group's count.
    pub epoch: String,
    /// The message's number in that run, from 1.
    pub seq: u64,
}

impl Offset {
    /// Parses `epoch:seq`; `None` if malformed.
    pub fn parse(text: &str) -> Option<Offset> {
        let (epoch, seq) = text.rsplit_once(':')?;
        if epoch.is_empty() || epoch.len() > 64 {
            return None;
        }
        Some(Offset {
            epoch: epoch.to_owned(),
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// What a broker read from a group's history
/// ([`Broker::read_history`](crate::Broker::read_history)).
#[derive(Clone, Debug, Default)]
pub struct HistoryRead {
    /// The group's current epoch; `None` if it has no history.
    pub epoch: Option<String>,
    /// The seq of the oldest message still kept (`latest + 1` if none).
    pub first: u64,
    /// The seq of the newest message (0 if none).
    pub latest: u64,
    /// If the reader's offset is in `epoch`: the messages after it, oldest
    /// first; otherwise every message kept.
    pub entries: Vec<(u64, Message)>,
}

/// Why a broker could not read a group's history.
#[derive(Debug, thiserror::Error)]
#[error("history unavailable: {0}")]
pub struct HistoryUnavailable(pub String);

/// How a [`join_with_history`](crate::WebSocket::join_with_history) went
/// (also sent to the client: see the protocol above).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// `false` if the client's offset was older than the history (a gap).
    pub recovered: bool,
    /// How many messages were sent from the history.
    pub missed: usize,
    /// The newest offset at the time of the join.
    pub offset: Option<Offset>,
}

/// One group's history, when this process keeps it.
struct Log {
    epoch: String,
    latest: u64,
    entries: VecDeque<(u64, Instant, Message)>,
}

impl Log {
    fn trim(&mut self, history: &History) {
        while self.entries.len() > history.messages {
            self.entries.pop_front();
        }
        if let Some(age) = history.max_age {
            while self
                .entries
                .front()
                .is_some_and(|(_, at, _)| at.elapsed() > age)
            {
                self.entries.pop_front();
            }
        }
    }
}

/// A member catching up: what arrives live meanwhile waits here.
struct CatchUp {
    id: MemberId,
    waiting: Vec<(u64, tungstenite::Message)>,
}

#[derive(Default)]
struct State {
    /// Histories kept here (no broker, or a broker without history).
    logs: HashMap<Arc<str>, Log>,
    /// The offset of the last message delivered per group.
    last: HashMap<Arc<str>, Offset>,
    catching_up: HashMap<Arc<str>, Vec<CatchUp>>,
}

/// The history rules and, without a broker, the histories themselves.
/// Deliveries of history messages and the end of a catch-up take one lock,
/// so a catching-up member misses nothing and gets nothing twice.
#[derive(Default)]
pub(crate) struct HistoryHub {
    rules: OnceLock<Vec<(String, History)>>,
    state: Mutex<State>,
}

impl HistoryHub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn configure(&self, rules: Vec<(String, History)>) {
        let _ = self.rules.set(rules);
    }

    /// The history of `group`: the rule with the longest matching prefix.
    pub fn rule(&self, group: &str) -> Option<&History> {
        self.rules
            .get()?
            .iter()
            .filter(|(prefix, _)| group.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, history)| history)
    }

    /// Records a broadcast in this process's history of `group` and
    /// delivers it (when no broker keeps the history).
    pub fn record(
        &self,
        groups: &Groups,
        group: &str,
        history: &History,
        message: Message,
        exclude: Option<MemberId>,
    ) -> usize {
        let mut state = self.lock();
        let log = match state.logs.get_mut(group) {
            Some(log) => log,
            None => state.logs.entry(Arc::from(group)).or_insert_with(|| Log {
                epoch: new_epoch(),
                latest: 0,
                entries: VecDeque::new(),
            }),
        };
        log.latest += 1;
        let offset = Offset {
            epoch: log.epoch.clone(),
            seq: log.latest,
        };
        log.entries
            .push_back((offset.seq, Instant::now(), message.clone()));
        log.trim(history);
        deliver_locked(&mut state, groups, group, &offset, &message, exclude)
    }

    /// A message with its offset, from the broker (or this process).
    pub fn deliver(
        &self,
        groups: &Groups,
        group: &str,
        offset: &Offset,
        message: &Message,
        exclude: Option<MemberId>,
    ) -> usize {
        deliver_locked(&mut self.lock(), groups, group, offset, message, exclude)
    }

    /// The offset of the last message of `group` delivered here.
    pub fn last_delivered(&self, group: &str) -> Option<Offset> {
        self.lock().last.get(group).cloned()
    }

    /// Reads what this process keeps of `group`'s history.
    pub fn read_local(
        &self,
        group: &str,
        since: Option<&Offset>,
        history: &History,
    ) -> HistoryRead {
        let mut state = self.lock();
        let Some(log) = state.logs.get_mut(group) else {
            return HistoryRead {
                first: 1,
                ..HistoryRead::default()
            };
        };
        log.trim(history);
        let after = match since {
            Some(since) if since.epoch == log.epoch => since.seq,
            _ => 0,
        };
        HistoryRead {
            epoch: Some(log.epoch.clone()),
            first: log
                .entries
                .front()
                .map_or(log.latest + 1, |(seq, _, _)| *seq),
            latest: log.latest,
            entries: log
                .entries
                .iter()
                .filter(|(seq, _, _)| *seq > after)
                .map(|(seq, _, message)| (*seq, message.clone()))
                .collect(),
        }
    }
}

impl HistoryHub {
    /// From now on, live messages of `group` for member `id` wait in its
    /// catch-up.
    pub fn start_catch_up(&self, group: &str, id: MemberId) {
        self.lock()
            .catching_up
            .entry(Arc::from(group))
            .or_default()
            .push(CatchUp {
                id,
                waiting: Vec::new(),
            });
    }

    /// Under the delivery lock: the messages newer than `last` that waited
    /// for `id`; if there are none, calls `join` (still under the lock, so
    /// the next message goes straight to the member).
    pub fn waiting_or_join(
        &self,
        group: &str,
        id: MemberId,
        last: u64,
        join: impl FnOnce(),
    ) -> Vec<(u64, tungstenite::Message)> {
        let mut state = self.lock();
        let waiting = state
            .catching_up
            .get_mut(group)
            .and_then(|all| all.iter_mut().find(|c| c.id == id))
            .map(|c| std::mem::take(&mut c.waiting))
            .unwrap_or_default();
        let fresh: Vec<_> = waiting.into_iter().filter(|(seq, _)| *seq > last).collect();
        if fresh.is_empty() {
            join();
        }
        fresh
    }

    pub fn end_catch_up(&self, group: &str, id: MemberId) {
        let mut state = self.lock();
        if let Some(waiting) = state.catching_up.get_mut(group) {
            waiting.retain(|c| c.id != id);
            if waiting.is_empty() {
                state.catching_up.remove(group);
            }
        }
    }
}

fn deliver_locked(
    state: &mut State,
    groups: &Groups,
    group: &str,
    offset: &Offset,
    message: &Message,
    exclude: Option<MemberId>,
) -> usize {
    match state.last.get_mut(group) {
        Some(last) if last.epoch == offset.epoch => last.seq = last.seq.max(offset.seq),
        Some(last) => {
            // The count restarted: what members were sent says nothing now.
            groups.reset_floors(group);
            *last = offset.clone();
        }
        None => {
            state.last.insert(Arc::from(group), offset.clone());
        }
    }
    let wire = envelope(group, Some(offset), message).into_tungstenite();
    if let Some(waiting) = state.catching_up.get_mut(group) {
        for catch_up in waiting.iter_mut().filter(|c| Some(c.id) != exclude) {
            catch_up.waiting.push((offset.seq, wire.clone()));
        }
    }
    groups.deliver_at(group, offset.seq, wire, exclude)
}

/// The JSON envelope of a history message (see the module docs).
pub(crate) fn envelope(group: &str, offset: Option<&Offset>, message: &Message) -> Message {
    let offset = offset.map(Offset::to_string);
    let value = match message {
        Message::Text(text) => json!({
            "type": "squall.message",
            "group": group,
            "offset": offset,
            "data": text.as_str(),
        }),
        Message::Binary(bytes) => json!({
            "type": "squall.message",
            "group": group,
            "offset": offset,
            "binary": true,
            "data": data_encoding::BASE64.encode(bytes),
        }),
    };
    Message::from(value)
}

/// A fresh epoch: 16 hex digits, random.
pub(crate) fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_keeps_the_last_n_and_none_older_than_the_age() {
        let history = History::last(3).max_age(Duration::from_secs(5));
        let old = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .expect("a clock ten seconds old");
        let mut log = Log {
            epoch: new_epoch(),
            latest: 5,
            entries: VecDeque::new(),
        };
        log.entries.push_back((1, old, Message::text("too old")));
        for seq in 2..=5 {
            log.entries
                .push_back((seq, Instant::now(), Message::text(seq.to_string())));
        }
        log.trim(&history);
        let kept: Vec<u64> = log.entries.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(kept, [3, 4, 5]);
    }

    #[test]
    fn offsets_parse_and_print_alike() {
        let offset = Offset::parse("0a1b:42").expect("an offset");
        assert_eq!((offset.epoch.as_str(), offset.seq), ("0a1b", 42));
        assert_eq!(offset.to_string(), "0a1b:42");
        for bad in ["", "42", ":42", "e:x", "e:-1"] {
            assert_eq!(Offset::parse(bad), None, "{bad}");
        }
    }
}
