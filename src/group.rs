//! Groups (rooms) and broadcast.
//!
//! A group is a named set of connections. A broadcast frames its message
//! once, header and payload in one buffer; every receiver's queue then holds
//! that same frame (a reference count, not a copy) and its connection writes
//! those bytes as they are (`wire.rs`). Each receiver is reached with
//! a non-waiting send, so a slow receiver meets the overflow policy and never
//! holds up the others. Connections leave all their groups when they close.
//!
//! With permessage-deflate, receivers that compress every message afresh
//! (no context takeover) and agreed the same level and window get one frame
//! compressed and framed once for them all; receivers with context takeover
//! compress the shared message on their own connection, each with its own
//! window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::deflate::write::compress_shared;
use crate::deflate::SharedKey;
use crate::message::Message;
use crate::sender::{ConnectionId as MemberId, WebSocketSender};
use crate::wire::{Framed, Wire};

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
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let Some(members) = groups.get(group) else {
            return 0;
        };
        let mut broadcast = Broadcast::new(message.into_tungstenite());
        members
            .iter()
            .filter(|(id, _)| Some(**id) != exclude)
            .filter(|(_, entry)| {
                let wire = broadcast.for_sender(&entry.sender);
                entry.sender.send_shared(wire).is_ok()
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
        let mut broadcast = Broadcast::new(wire);
        members
            .iter()
            .filter(|(id, _)| Some(**id) != exclude)
            .filter(|(_, entry)| entry.floor.fetch_max(offset, Ordering::Relaxed) < offset)
            .filter(|(_, entry)| {
                let wire = broadcast.for_sender(&entry.sender);
                entry.sender.send_shared(wire).is_ok()
            })
            .count()
    }
}

/// One broadcast as its receivers get it: framed once for those that take
/// it as it is, and compressed and framed once per key among its receivers
/// without context takeover (usually none or one). Each is built for the
/// first receiver that needs it.
struct Broadcast {
    message: tungstenite::Message,
    plain: Option<Wire>,
    compressed: Vec<(SharedKey, Wire)>,
}

impl Broadcast {
    fn new(message: tungstenite::Message) -> Self {
        Broadcast {
            message,
            plain: None,
            compressed: Vec::new(),
        }
    }

    /// What goes to `sender`: the shared compressed frame for its key, or
    /// the plain frame (which its connection compresses, if it does).
    fn for_sender(&mut self, sender: &WebSocketSender) -> Wire {
        let message = &self.message;
        let Some(key) = sender.shared_deflate() else {
            return self
                .plain
                .get_or_insert_with(|| Wire::broadcast(message.clone()))
                .clone();
        };
        if let Some((_, wire)) = self.compressed.iter().find(|(k, _)| *k == key) {
            return wire.clone();
        }
        let wire = match message {
            tungstenite::Message::Text(text) => Wire::Framed(Framed::compressed(
                true,
                &compress_shared(key, text.as_bytes()),
            )),
            tungstenite::Message::Binary(data) => {
                Wire::Framed(Framed::compressed(false, &compress_shared(key, data)))
            }
            other => Wire::Message(other.clone()),
        };
        self.compressed.push((key, wire.clone()));
        wire
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
