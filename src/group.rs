//! Groups (rooms) and broadcast.
//!
//! A group is a named set of connections. A broadcast converts its message
//! for the wire once; every receiver's queue then holds the same shared
//! buffer (a reference count, not a copy), and each receiver is reached with
//! a non-waiting send, so a slow receiver meets the overflow policy and never
//! holds up the others. Connections leave all their groups when they close.
//!
//! With permessage-deflate, receivers that compress every message afresh
//! (no context takeover) and agreed the same level and window get one frame
//! compressed once for them all; receivers with context takeover compress
//! the shared message on their own connection, each with its own window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::deflate::write::compress_shared;
use crate::deflate::SharedKey;
use crate::message::Message;
use crate::sender::{ConnectionId as MemberId, WebSocketSender};

/// One member of a group.
struct Entry {
    sender: WebSocketSender,
    /// In a group with history: the offset of the last message it was sent,
    /// so that a message reaching it twice (read from history while it
    /// caught up, then arriving live) is sent once.
    floor: AtomicU64,
}

/// The in-process group registry of one application.
#[derive(Default)]
pub(crate) struct Groups {
    groups: RwLock<HashMap<Arc<str>, HashMap<MemberId, Entry>>>,
}

impl Groups {
    pub fn join(&self, group: &str, sender: &WebSocketSender) -> bool {
        self.join_at(group, sender, 0)
    }

    /// Joins having been sent everything up to offset `floor` already.
    pub fn join_at(&self, group: &str, sender: &WebSocketSender, floor: u64) -> bool {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let members = match groups.get_mut(group) {
            Some(members) => members,
            None => groups.entry(Arc::from(group)).or_default(),
        };
        let entry = Entry {
            sender: sender.clone(),
            floor: AtomicU64::new(floor),
        };
        members.insert(sender.id(), entry).is_none()
    }

    /// Forgets what every member was sent (the group's offsets restarted).
    pub fn reset_floors(&self, group: &str) {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        for entry in groups.get(group).into_iter().flat_map(HashMap::values) {
            entry.floor.store(0, Ordering::Relaxed);
        }
    }

    pub fn contains(&self, group: &str, id: MemberId) -> bool {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        groups
            .get(group)
            .is_some_and(|members| members.contains_key(&id))
    }

    pub fn leave(&self, group: &str, sender: &WebSocketSender) -> bool {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let left = members.remove(&sender.id()).is_some();
        if members.is_empty() {
            groups.remove(group);
        }
        left
    }

    pub fn len(&self, group: &str) -> usize {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        groups.get(group).map_or(0, HashMap::len)
    }

    /// Queues `message` for every member of `group` but `exclude`; returns
    /// how many accepted it.
    pub fn deliver(&self, group: &str, message: Message, exclude: Option<MemberId>) -> usize {
        let wire = message.into_tungstenite();
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let Some(members) = groups.get(group) else {
            return 0;
        };
        let mut compressed = Compressed::default();
        members
            .iter()
            .filter(|(id, _)| Some(**id) != exclude)
            .filter(|(_, entry)| {
                let message = compressed.for_sender(&entry.sender, &wire);
                entry.sender.send_shared(message).is_ok()
            })
            .count()
    }

    /// As [`deliver`](Self::deliver) for the message at `offset` of a group
    /// with history: skips the members already sent it.
    pub fn deliver_at(
        &self,
        group: &str,
        offset: u64,
        wire: tungstenite::Message,
        exclude: Option<MemberId>,
    ) -> usize {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let Some(members) = groups.get(group) else {
            return 0;
        };
        let mut compressed = Compressed::default();
        members
            .iter()
            .filter(|(id, _)| Some(**id) != exclude)
            .filter(|(_, entry)| entry.floor.fetch_max(offset, Ordering::Relaxed) < offset)
            .filter(|(_, entry)| {
                let message = compressed.for_sender(&entry.sender, &wire);
                entry.sender.send_shared(message).is_ok()
            })
            .count()
    }
}

/// One broadcast's compressed frames, one per key among its receivers
/// without context takeover (usually none or one).
#[derive(Default)]
struct Compressed(Vec<(SharedKey, tungstenite::Message)>);

impl Compressed {
    /// What goes to `sender`: the shared compressed frame for its key, or
    /// the plain message (which its connection compresses, if it does).
    fn for_sender(
        &mut self,
        sender: &WebSocketSender,
        wire: &tungstenite::Message,
    ) -> tungstenite::Message {
        let Some(key) = sender.shared_deflate() else {
            return wire.clone();
        };
        if let Some((_, frame)) = self.0.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = compress_shared(key, wire);
        self.0.push((key, frame.clone()));
        frame
    }
}

/// The groups one connection has joined, so it can leave them all on close.
#[derive(Default)]
pub(crate) struct Membership(Mutex<Vec<String>>);

impl Membership {
    pub fn add(&self, group: &str) {
        let mut joined = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !joined.iter().any(|g| g == group) {
            joined.push(group.to_owned());
        }
    }

    pub fn remove(&self, group: &str) {
        let mut joined = self.0.lock().unwrap_or_else(|e| e.into_inner());
        joined.retain(|g| g != group);
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
