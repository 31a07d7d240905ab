//! The groups hub of one application: its groups, their presence and
//! history, which groups it wants from other processes, the broker that
//! carries their broadcasts to other processes, and the signal that the
//! application has stopped (which ends the broker's tasks).
//!
//! Every front (the standalone server, the tower `Service`) and every
//! connection of an application share one hub, so a broadcast reaches
//! sockets whichever way they were opened.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Delivery};
use crate::group::Groups;
use crate::history::{History, HistoryHub};
use crate::interest::Interest;
use crate::message::Message;
use crate::presence::{merge, Member, PresenceError, PresenceHub};
use crate::recovery::Parts;
use crate::sender::ConnectionId;

/// Groups, presence, history, interest, broker, and the stopped signal.
#[derive(Default)]
pub(crate) struct Hub {
    groups: Arc<Groups>,
    presence: Arc<PresenceHub>,
    history: Arc<HistoryHub>,
    interest: Arc<Interest>,
    broker: OnceLock<Arc<dyn Broker>>,
    broker_started: AtomicBool,
    /// A front started serving (so `stopped` will be marked).
    started: AtomicBool,
    stopped: CancellationToken,
}

impl Hub {
    /// Sets the history rules and the broker, once (the first call wins).
    pub fn configure(&self, history: Vec<(String, History)>, broker: Option<Arc<dyn Broker>>) {
        self.history.configure(history);
        if let Some(broker) = broker {
            let to_broker = broker.clone();
            self.presence
                .on_change(move |update| to_broker.presence_update(update));
            self.interest.set_broker(broker.clone());
            let _ = self.broker.set(broker);
        }
    }

    /// The local groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// This process's presence.
    pub fn presence(&self) -> &PresenceHub {
        &self.presence
    }

    /// Which groups this process wants from the broker.
    pub fn interest(&self) -> &Arc<Interest> {
        &self.interest
    }

    /// What a join with history needs.
    pub fn recovery_parts(&self) -> Parts<'_> {
        Parts {
            history: &self.history,
            groups: &self.groups,
            interest: &self.interest,
            broker: self.broker.get(),
        }
    }

    /// The members of `group` over every process (this one only without a
    /// broker that keeps presence).
    pub async fn members(&self, group: &str) -> Result<Vec<Member>, PresenceError> {
        let remote = match self.broker.get().and_then(|broker| broker.members(group)) {
            Some(listing) => listing.await?,
            None => Vec::new(),
        };
        Ok(merge(
            self.presence.local_members(group).into_iter().chain(remote),
        ))
    }

    /// Hands the message to the broker (which never waits), then delivers it
    /// to the local members but `exclude`; in a group with history, records
    /// it first (see `history.rs`).
    pub fn broadcast(&self, group: &str, message: Message, exclude: Option<ConnectionId>) -> usize {
        if let Some(history) = self.history.rule(group) {
            if let Some(broker) = self.broker.get() {
                let tag = exclude.map_or(0, |id| id as u64);
                crate::telemetry::broker_published();
                if broker.publish_history(group, &message, history, tag) {
                    // Delivered here too when it comes back with its offset.
                    return self.groups.len(group);
                }
                broker.publish(group, &message);
            }
            return self
                .history
                .record(&self.groups, group, history, message, exclude);
        }
        if let Some(broker) = self.broker.get() {
            broker.publish(group, &message);
            crate::telemetry::broker_published();
        }
        self.groups.deliver(group, message, exclude)
    }

    /// Starts the broker, if there is one, the first time this is called.
    pub fn start_broker(&self) {
        if let Some(broker) = self.broker.get() {
            if !self.broker_started.swap(true, Ordering::AcqRel) {
                broker.start(Delivery::new(
                    &self.groups,
                    &self.presence,
                    &self.history,
                    self.stopped.clone(),
                ));
            }
        }
    }

    /// A front started serving this application.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Whether a front ever started serving.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The broker's readiness (see [`Broker::ready`]), if there is a broker.
    pub fn broker_ready(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        self.broker.get().map(|broker| broker.ready())
    }

    /// Marks the application stopped: the broker's tasks end.
    pub fn mark_stopped(&self) {
        self.stopped.cancel();
    }

    /// Resolves once the application has stopped.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}
