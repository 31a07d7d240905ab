//! Presence: who is in a group right now, across every process.
//!
//! A connection joins a group with a [`Presence`] (a user id and a little
//! JSON metadata) through
//! [`WebSocket::join_with_presence`](crate::WebSocket::join_with_presence).
//! A user with several connections in a group is one [`Member`] whose
//! `connections` counts them. [`Handle::members`](crate::Handle::members)
//! lists a group; [`Handle::watch_presence`](crate::Handle::watch_presence)
//! follows it as [`PresenceDiff`]s.
//!
//! Diffs count connections, as Phoenix's presence does: a diff's `joins`
//! say which users gained how many connections, its `leaves` which lost how
//! many. A user is a member while their count is above zero, so a watcher
//! that adds joins and subtracts leaves (starting from a listing) keeps an
//! exact member list; a join for a user already counted is a second
//! connection (a second tab, another process), not a new member.
//!
//! In-process by default. With a broker that keeps presence (the Redis
//! broker does: see its module), each process stores its own share in the
//! broker, listing reads every process's share, and diffs from other
//! processes reach local watchers; the broker removes the share of a
//! process that stops heartbeating, and sends the leaves for it.
//!
//! This registry keeps only this process's share, and notifies its watchers
//! and the broker under one lock, so that the broker sees the changes in the
//! order they happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::sender::ConnectionId as MemberId;

/// How many diffs a watcher may fall behind before it misses some (and is
/// told so with [`PresenceError::Lagged`]).
const WATCH_BACKLOG: usize = 1024;

/// What a connection says about itself when it joins a group: who it is
/// (`user`, one member however many connections it has) and a little JSON
/// metadata (a display name, a status) that listings and diffs carry.
///
/// ```
/// use squall::Presence;
///
/// let me = Presence::new("u42", serde_json::json!({"name": "Ada"}));
/// assert_eq!(me.user, "u42");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    /// The user id: connections with the same id are one member.
    pub user: String,
    /// Metadata shown with the member; the first connection's is kept.
    pub meta: Value,
}

impl Presence {
    /// A presence for `user` with `meta`.
    pub fn new(user: impl Into<String>, meta: Value) -> Self {
        Presence {
            user: user.into(),
            meta,
        }
    }

    /// A presence for `user` with no metadata (`null`).
    pub fn user(user: impl Into<String>) -> Self {
        Self::new(user, Value::Null)
    }
}

/// One member of a group in a listing, or one entry of a diff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The user id.
    pub user: String,
    /// The metadata given when the user joined.
    pub meta: Value,
    /// In a listing: the user's connections in the group, over every
    /// process. In a diff: how many connections joined or left.
    pub connections: usize,
}

/// A change to a group's members: connections that joined and left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The group.
    pub group: String,
    /// Users that gained connections, with how many.
    pub joins: Vec<Member>,
    /// Users that lost connections, with how many.
    pub leaves: Vec<Member>,
}

/// Why presence could not be read or followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The watcher fell more than 1024 diffs behind and missed this many:
    /// list the group again to catch up. The watcher goes on working.
    #[error("presence watcher lagged and missed {0} diffs")]
    Lagged(u64),
    /// The application is gone.
    #[error("the application has stopped")]
    Closed,
    /// The broker could not be asked (e.g. Redis unreachable); the message
    /// says why.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Follows one group's presence changes, local and (with a broker that keeps
/// presence) from other processes. Made by
/// [`Handle::watch_presence`](crate::Handle::watch_presence) or
/// [`WebSocket::watch_presence`](crate::WebSocket::watch_presence).
///
/// Diffs made before the watch started are not replayed: list the group
/// after starting the watch, then apply the diffs that follow.
pub struct PresenceWatch {
    diffs: broadcast::Receiver<Arc<PresenceDiff>>,
    /// Keeps the group wanted (subscribed) while the watch lives.
    _wanted: Option<Box<dyn Send + Sync>>,
}

impl PresenceWatch {
    /// Keeps `guard` (the group's interest) as long as the watch lives.
    pub(crate) fn wanting(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._wanted = Some(Box::new(guard));
        self
    }

    /// The next change. [`PresenceError::Lagged`] if the watcher fell
    /// behind; [`PresenceError::Closed`] once the application is gone.
    pub async fn next(&mut self) -> Result<PresenceDiff, PresenceError> {
        match self.diffs.recv().await {
            Ok(diff) => Ok((*diff).clone()),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(PresenceError::Lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => Err(PresenceError::Closed),
        }
    }
}

impl std::fmt::Debug for PresenceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceWatch").finish_non_exhaustive()
    }
}

/// A change of this process's share of a group's presence, as a broker that
/// keeps presence receives it
/// ([`Broker::presence_update`](crate::Broker::presence_update)).
#[derive(Debug)]
pub struct PresenceUpdate<'a> {
    /// The group.
    pub group: &'a str,
    /// This process's entry for the user after the change: `connections` is
    /// the count here, 0 when the user has no connection left here.
    pub member: &'a Member,
    /// The diff to send to the other processes' watchers.
    pub diff: &'a PresenceDiff,
}

/// One user's connections in one group, in this process.
struct Local {
    meta: Value,
    connections: Vec<MemberId>,
}

#[derive(Default)]
struct State {
    /// group → user → this process's connections.
    groups: HashMap<Arc<str>, HashMap<String, Local>>,
    /// (group, connection) → user, to find the user when a connection leaves.
    users: HashMap<(Arc<str>, MemberId), String>,
    watchers: HashMap<Arc<str>, broadcast::Sender<Arc<PresenceDiff>>>,
}

/// What the hub does with each change of this process's share (hand it to
/// the broker).
type OnChange = Box<dyn Fn(&PresenceUpdate<'_>) + Send + Sync>;

/// This process's presence registry.
#[derive(Default)]
pub(crate) struct PresenceHub {
    state: Mutex<State>,
    on_change: OnceLock<OnChange>,
}

impl PresenceHub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what is done with each change, under the lock (in order).
    pub fn on_change(&self, f: impl Fn(&PresenceUpdate<'_>) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    /// Records that connection `id` joined `group` as `presence`; `false` if
    /// it already had one there.
    pub fn track(&self, group: &str, id: MemberId, presence: Presence) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let group: Arc<str> = match state.groups.get_key_value(group) {
            Some((key, _)) => key.clone(),
            None => Arc::from(group),
        };
        let key = (group.clone(), id);
        if state.users.contains_key(&key) {
            return false; // already tracked
        }
        state.users.insert(key, presence.user.clone());
        let users = state.groups.entry(group.clone()).or_default();
        let local = users.entry(presence.user.clone()).or_insert_with(|| Local {
            meta: presence.meta,
            connections: Vec::new(),
        });
        local.connections.push(id);
        let member = Member {
            user: presence.user,
            meta: local.meta.clone(),
            connections: local.connections.len(),
        };
        let diff = PresenceDiff {
            group: group.to_string(),
            joins: vec![Member {
                connections: 1,
                ..member.clone()
            }],
            leaves: Vec::new(),
        };
        self.changed(state, &group, &member, diff);
        true
    }

    /// Records that connection `id` left `group` (nothing if it joined
    /// without a presence).
    pub fn untrack(&self, group: &str, id: MemberId) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some((group, _)) = state.groups.get_key_value(group) else {
            return;
        };
        let group = group.clone();
        let Some(user) = state.users.remove(&(group.clone(), id)) else {
            return;
        };
        let Some(users) = state.groups.get_mut(&group) else {
            return;
        };
        let Some(local) = users.get_mut(&user) else {
            return;
        };
        local.connections.retain(|c| *c != id);
        let member = Member {
            user: user.clone(),
            meta: local.meta.clone(),
            connections: local.connections.len(),
        };
        if local.connections.is_empty() {
            users.remove(&user);
            if users.is_empty() {
                state.groups.remove(&group);
            }
        }
        let diff = PresenceDiff {
            group: group.to_string(),
            joins: Vec::new(),
            leaves: vec![Member {
                connections: 1,
                ..member.clone()
            }],
        };
        self.changed(state, &group, &member, diff);
    }

    /// Tells local watchers and the broker, still under the lock.
    fn changed(&self, state: &mut State, group: &Arc<str>, member: &Member, diff: PresenceDiff) {
        if let Some(on_change) = self.on_change.get() {
            on_change(&PresenceUpdate {
                group,
                member,
                diff: &diff,
            });
        }
        notify(state, diff);
    }

    /// Hands a diff from another process to the local watchers.
    pub fn deliver(&self, diff: PresenceDiff) {
        notify(&mut self.lock(), diff);
    }

    /// This process's members of `group`.
    pub fn local_members(&self, group: &str) -> Vec<Member> {
        let state = self.lock();
        state.groups.get(group).map_or_else(Vec::new, |users| {
            users
                .iter()
                .map(|(user, local)| Member {
                    user: user.clone(),
                    meta: local.meta.clone(),
                    connections: local.connections.len(),
                })
                .collect()
        })
    }

    /// Runs `f` on this process's whole share, under the lock, so that what
    /// `f` queues comes before any later change.
    pub fn snapshot_with<R>(&self, f: impl FnOnce(Vec<(String, Member)>) -> R) -> R {
        let state = self.lock();
        let mut all = Vec::new();
        for (group, users) in &state.groups {
            for (user, local) in users {
                all.push((
                    group.to_string(),
                    Member {
                        user: user.clone(),
                        meta: local.meta.clone(),
                        connections: local.connections.len(),
                    },
                ));
            }
        }
        f(all)
    }

    pub fn watch(&self, group: &str) -> PresenceWatch {
        let mut state = self.lock();
        let diffs = match state.watchers.get(group) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, diffs) = broadcast::channel(WATCH_BACKLOG);
                state.watchers.insert(Arc::from(group), sender);
                diffs
            }
        };
        PresenceWatch {
            diffs,
            _wanted: None,
        }
    }
}

fn notify(state: &mut State, diff: PresenceDiff) {
    let Some(sender) = state.watchers.get(diff.group.as_str()) else {
        return;
    };
    if sender.send(Arc::new(diff.clone())).is_err() {
        // Every watcher of this group is gone.
        state.watchers.remove(diff.group.as_str());
    }
}

/// Adds up members listed per process (the same user may be on several).
pub(crate) fn merge(members: impl IntoIterator<Item = Member>) -> Vec<Member> {
    let mut merged: Vec<Member> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for member in members {
        match index.get(&member.user) {
            Some(&i) => merged[i].connections += member.connections,
            None => {
                index.insert(member.user.clone(), merged.len());
                merged.push(member);
            }
        }
    }
    merged.sort_by(|a, b| a.user.cmp(&b.user));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_with_two_connections_is_one_member() {
        let hub = PresenceHub::default();
        let mut watch = hub.watch("room");
        hub.track("room", 1, Presence::new("ada", serde_json::json!({"n": 1})));
        hub.track("room", 2, Presence::user("ada"));
        hub.track("room", 3, Presence::user("bob"));
        let members = merge(hub.local_members("room"));
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].user, "ada");
        assert_eq!(members[0].connections, 2);
        assert_eq!(members[0].meta, serde_json::json!({"n": 1}));
        hub.untrack("room", 1);
        hub.untrack("room", 2);
        hub.untrack("room", 2); // twice: nothing
        assert_eq!(merge(hub.local_members("room")).len(), 1);
        let mut joins = 0;
        let mut leaves = 0;
        while let Ok(diff) = watch.diffs.try_recv() {
            joins += diff.joins.len();
            leaves += diff.leaves.len();
        }
        assert_eq!((joins, leaves), (3, 2));
    }
}
