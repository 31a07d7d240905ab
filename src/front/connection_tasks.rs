//! The standalone server's connection tasks, as its accept loop keeps them:
//! each spawned task tracked by the runtime (so a graceful shutdown waits for
//! it) and abortable (so the shutdown deadline can end the ones still
//! running).
//!
//! Why not a `JoinSet`: the loop never needs a task's output, only a way to
//! abort what is left at the deadline. A `JoinSet` allocates a list entry
//! per task, keeps its join handle, and has the loop reap every finished
//! task; here a task holds a slot in a table, which keeps its abort handle
//! until the task frees the slot as it ends. That is a third of the
//! bookkeeping per connection, measured per handshake (BENCHMARKS.md).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::runtime::Runtime;

/// The tasks of one accept loop. Not `Clone`: only its loop spawns.
#[derive(Default)]
pub(crate) struct ConnectionTasks {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    slots: Mutex<Slots>,
    /// Told when the last task ends.
    all_ended: Notify,
}

/// A table of running tasks, with the indices of its free slots.
#[derive(Default)]
struct Slots {
    table: Vec<Slot>,
    free: Vec<usize>,
    /// Someone waits in `all_ended` (only a shutting-down loop does): only
    /// then does the last task to end notify.
    awaited: bool,
}

enum Slot {
    Free,
    /// Taken by a task being spawned, or one being aborted.
    Taken,
    Running(AbortHandle),
}

impl ConnectionTasks {
    /// Spawns `task`, tracked by `app`'s task tracker and abortable by
    /// [`abort_all`](Self::abort_all).
    pub fn spawn<F>(&self, app: &Runtime, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.lock().take();
        let slot = SlotGuard {
            shared: self.shared.clone(),
            index,
        };
        let handle = tokio::spawn(app.track(async move {
            let _slot = slot;
            task.await;
        }));
        // The task may already have ended (another worker ran it) and freed
        // its slot; only this loop takes slots, so a free one is not reused
        // in between.
        let mut slots = self.lock();
        if let Some(slot @ Slot::Taken) = slots.table.get_mut(index) {
            *slot = Slot::Running(handle.abort_handle());
        }
    }

    /// Aborts every task still running; returns how many there were. Each
    /// is dropped where it stands (no close frame, no `on_close`).
    pub fn abort_all(&self) -> usize {
        let handles: Vec<AbortHandle> = self
            .lock()
            .table
            .iter_mut()
            .filter_map(|slot| match std::mem::replace(slot, Slot::Taken) {
                Slot::Running(handle) => Some(handle),
                other => {
                    *slot = other;
                    None
                }
            })
            .collect();
        // Outside the lock: an aborted task frees its slot as it is dropped.
        for handle in &handles {
            handle.abort();
        }
        handles.len()
    }

    /// Resolves once no task is left (at once if none was spawned).
    pub async fn all_ended(&self) {
        loop {
            let ended = self.shared.all_ended.notified();
            {
                let mut slots = self.lock();
                if slots.is_empty() {
                    return;
                }
                slots.awaited = true;
            }
            ended.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Nothing panics while holding the lock; a poisoned table is intact.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slots {
    fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.table[index] = Slot::Taken;
                index
            }
            None => {
                self.table.push(Slot::Taken);
                self.table.len() - 1
            }
        }
    }

    /// Frees slot `index`; `true` if no slot is taken any more and
    /// someone waits for that.
    fn free(&mut self, index: usize) -> bool {
        if let Some(slot) = self.table.get_mut(index) {
            if !matches!(slot, Slot::Free) {
                *slot = Slot::Free;
                self.free.push(index);
            }
        }
        self.awaited && self.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.free.len() == self.table.len()
    }
}

/// Frees a task's slot when the task ends, however it ends (also when it is
/// aborted, or dropped with the runtime).
struct SlotGuard {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let last = self.shared.lock().free(self.index);
        if last {
            self.shared.all_ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_once_freed() {
        let mut slots = Slots::default();
        assert!(slots.is_empty());
        assert_eq!(slots.take(), 0);
        assert_eq!(slots.take(), 1);
        slots.free(0);
        slots.free(0);
        assert_eq!(slots.free.len(), 1, "a slot is freed once");
        assert_eq!(slots.take(), 0);
        assert_eq!(slots.take(), 2);
        assert!(!slots.free(0));
        slots.awaited = true;
        assert!(!slots.free(1));
        assert!(slots.free(2), "the last one tells the waiter");
        assert!(slots.is_empty());
    }
}
