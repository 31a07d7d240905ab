//! The groups hub of one application: its groups, the broker that carries
//! their broadcasts to other processes, and the signal that the application
//! has stopped (which ends the broker's tasks).
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
use crate::message::Message;
use crate::sender::ConnectionId;

/// Groups, broker, and the stopped signal.
#[derive(Default)]
pub(crate) struct Hub {
    groups: Arc<Groups>,
    broker: OnceLock<Arc<dyn Broker>>,
    broker_started: AtomicBool,
    /// A front started serving (so `stopped` will be marked).
    started: AtomicBool,
    stopped: CancellationToken,
}

impl Hub {
    /// Sets the broker; the first one set is kept.
    pub fn set_broker(&self, broker: Arc<dyn Broker>) {
        let _ = self.broker.set(broker);
    }

    /// The local groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Hands the message to the broker (which never waits), then delivers it
    /// to the local members but `exclude`.
    pub fn broadcast(&self, group: &str, message: Message, exclude: Option<ConnectionId>) -> usize {
        if let Some(broker) = self.broker.get() {
            broker.publish(group, &message);
        }
        self.groups.deliver(group, message, exclude)
    }

    /// Starts the broker, if there is one, the first time this is called.
    pub fn start_broker(&self) {
        if let Some(broker) = self.broker.get() {
            if !self.broker_started.swap(true, Ordering::AcqRel) {
                broker.start(Delivery::new(&self.groups, self.stopped.clone()));
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
