//! What the socket delivers to the handler, and the bounded inbox that holds
//! it while a handler method runs.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::message::Message;

/// Most events read ahead while a handler method runs; past this (or past
/// the byte bound) reading pauses and TCP pushes back.
const INBOX_EVENTS: usize = 32;

/// An event for the handler.
pub(crate) enum Event {
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
}

impl Event {
    fn size(&self) -> usize {
        match self {
            Event::Message(message) => message.len(),
            Event::Ping(data) | Event::Pong(data) => data.len(),
        }
    }
}

/// Events read ahead, delivered in order once the running method returns.
pub(super) struct Inbox {
    events: VecDeque<Event>,
    bytes: usize,
    max_bytes: usize,
}

impl Inbox {
    /// An inbox bounded by [`INBOX_EVENTS`] and `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Inbox {
            events: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub fn has_room(&self) -> bool {
        self.events.len() < INBOX_EVENTS && self.bytes < self.max_bytes
    }

    pub fn push(&mut self, event: Event) {
        self.bytes += event.size();
        self.events.push_back(event);
    }

    pub fn pop(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.bytes -= event.size();
        Some(event)
    }
}
