//! Which groups this process wants messages for: the groups with a local
//! member, a member catching up on history, or a presence watcher.
//!
//! A broker that subscribes per group (the Redis broker does) is told when a
//! group gains its first reason to be wanted ([`Broker::subscribe`]) and
//! loses its last ([`Broker::unsubscribe`]), so that a process receives only
//! the traffic of the groups it serves. The calls are made under one lock,
//! so the broker sees them in order: a leave racing a join can never leave
//! a wanted group unsubscribed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::broker::Broker;

/// Reasons to want each group, counted.
#[derive(Default)]
pub(crate) struct Interest {
    counts: Mutex<HashMap<Arc<str>, usize>>,
    broker: OnceLock<Arc<dyn Broker>>,
}

impl Interest {
    pub fn set_broker(&self, broker: Arc<dyn Broker>) {
        let _ = self.broker.set(broker);
    }

    pub fn add(&self, group: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(group) {
            Some(count) => *count += 1,
            None => {
                counts.insert(Arc::from(group), 1);
                if let Some(broker) = self.broker.get() {
                    broker.subscribe(group);
                }
            }
        }
    }

    pub fn remove(&self, group: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = counts.get_mut(group) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(group);
            if let Some(broker) = self.broker.get() {
                broker.unsubscribe(group);
            }
        }
    }

    /// Every wanted group (a broker resubscribes to them after reconnecting
    /// through its own record; this is for tests and diagnostics).
    #[cfg(test)]
    pub fn groups(&self) -> Vec<String> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.keys().map(|g| g.to_string()).collect()
    }
}

/// One reason to want a group, given back on drop.
pub(crate) struct InterestGuard {
    interest: Arc<Interest>,
    group: Arc<str>,
}

impl InterestGuard {
    pub fn new(interest: &Arc<Interest>, group: &str) -> Self {
        interest.add(group);
        InterestGuard {
            interest: interest.clone(),
            group: Arc::from(group),
        }
    }
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.interest.remove(&self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_wanted_while_anything_wants_it() {
        let interest = Arc::new(Interest::default());
        interest.add("a");
        let guard = InterestGuard::new(&interest, "a");
        interest.remove("a");
        assert_eq!(interest.groups(), ["a"]);
        drop(guard);
        assert!(interest.groups().is_empty());
        interest.remove("a"); // unbalanced: ignored
        assert!(interest.groups().is_empty());
    }
}
