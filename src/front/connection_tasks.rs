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

/// The running tasks: each holds a slot, `None` while the task is being
/// spawned (or aborted), then its abort handle.
#[derive(Default)]
struct Slots {
    tasks: crate::slots::Slots<Option<AbortHandle>>,
    /// Someone waits in `all_ended` (only a shutting-down loop does): only
    /// then does the last task to end notify.
    awaited: bool,
}

impl ConnectionTasks {
    /// Spawns `task`, tracked by `app`'s task tracker and abortable by
    /// [`abort_all`](Self::abort_all).
    pub fn spawn<F>(&self, app: &Runtime, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.lock().tasks.insert(None);
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
        if let Some(slot @ None) = slots.tasks.get_mut(index) {
            *slot = Some(handle.abort_handle());
        }
    }

    /// Aborts every task still running; returns how many there were. Each
    /// is dropped where it stands (no close frame, no `on_close`).
    pub fn abort_all(&self) -> usize {
        let handles: Vec<AbortHandle> = self
            .lock()
            .tasks
            .iter_mut()
            .filter_map(Option::take)
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
                if slots.tasks.is_empty() {
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
    /// Frees slot `index`; `true` if no slot is taken any more and
    /// someone waits for that.
    fn free(&mut self, index: usize) -> bool {
        self.tasks.remove(index);
        self.awaited && self.tasks.is_empty()
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
    fn the_last_task_to_end_tells_the_waiter() {
        let mut slots = Slots::default();
        let first = slots.tasks.insert(None);
        let second = slots.tasks.insert(None);
        assert!(!slots.free(first), "nobody waits yet");
        slots.awaited = true;
        assert!(!slots.free(first), "freed once");
        assert!(slots.free(second), "the last one tells the waiter");
        assert!(slots.tasks.is_empty());
    }
}
