//! [`Slots`]: a table whose entries keep their index until removed, with
//! the indices of removed entries reused. Used where many short-lived
//! owners each hold one entry of a shared table and give it back by index
//! as they end: the standalone server's connection tasks
//! (`front/connection_tasks.rs`) and the connections watching the shutdown
//! (`engine/shutdown.rs`).

/// A table of `T`s addressed by index; see the module docs.
pub(crate) struct Slots<T> {
    table: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            table: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Stores `value`; returns its index.
    pub fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.table[index] = Some(value);
                index
            }
            None => {
                self.table.push(Some(value));
                self.table.len() - 1
            }
        }
    }

    /// Removes the entry at `index` (nothing if there is none) and frees
    /// its index.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.table.get_mut(index)?.take()?;
        self.free.push(index);
        Some(value)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.table.get_mut(index)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.table.iter_mut().flatten()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_reused_once_freed() {
        let mut slots = Slots::default();
        assert!(slots.is_empty());
        assert_eq!(slots.insert('a'), 0);
        assert_eq!(slots.insert('b'), 1);
        assert_eq!(slots.remove(0), Some('a'));
        assert_eq!(slots.remove(0), None, "an index is freed once");
        assert_eq!(slots.remove(7), None);
        assert_eq!(slots.free.len(), 1);
        assert_eq!(slots.insert('c'), 0);
        assert_eq!(slots.insert('d'), 2);
        assert_eq!(slots.iter().copied().collect::<String>(), "cbd");
        *slots.get_mut(1).unwrap() = 'e';
        assert_eq!(slots.iter_mut().map(|c| *c).collect::<String>(), "ced");
        for index in 0..3 {
            slots.remove(index);
        }
        assert!(slots.is_empty());
    }
}
