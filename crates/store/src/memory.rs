//! The `--ephemeral` engine: the same transactions over `BTreeMap`s behind one lock.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, PoisonError, RwLock};

use crate::engine::{Applied, CommitPath, Engine, WriteBatch, apply_txns, key_bounds, next_version};
use crate::{Durability, Event, KeyValue, Result, Revision, Txn};

#[derive(Default)]
pub(crate) struct MemoryEngine {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<Arc<[u8]>, KeyValue>,
    /// Each commit's events, by the last revision among them: the same allocation the watch feed
    /// broadcasts, not a copy.
    log: BTreeMap<Revision, Arc<[Event]>>,
    revision: Revision,
    compacted: Revision,
}

impl State {
    fn range(&self, start: &[u8], end: &[u8]) -> impl Iterator<Item = &KeyValue> {
        key_bounds(start, end).map(|b| self.kv.range::<[u8], _>(b).map(|(_, kv)| kv)).into_iter().flatten()
    }
}

impl WriteBatch for State {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.kv.get(key).cloned())
    }
    fn put(&mut self, key: Vec<u8>, value: Arc<[u8]>, revision: Revision) -> Result<KeyValue> {
        // One descent of the tree, not a lookup and then an insert: with SQS's keys, which share
        // a long prefix, the comparisons on the way down are most of a put.
        let entry = self.kv.entry(key.into());
        let previous = match &entry {
            Entry::Occupied(current) => Some((current.get().create_revision, current.get().version)),
            Entry::Vacant(_) => None,
        };
        let kv = next_version(entry.key().clone(), value, revision, previous);
        entry.and_modify(|current| *current = kv.clone()).or_insert_with(|| kv.clone());
        Ok(kv)
    }
    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.kv.remove(key);
        Ok(())
    }
    fn range(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        Ok(State::range(self, start, end).cloned().collect())
    }
    fn log(&mut self, _revision: Revision, _events: &[Event]) -> Result<()> {
        Ok(()) // `MemoryEngine::write` keeps the whole commit's events at once
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn revisions(&self) -> Result<(Revision, Revision)> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok((state.revision, state.compacted))
    }
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.state.read().unwrap_or_else(PoisonError::into_inner).kv.get(key).cloned())
    }
    fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(state.range(start, end).take(limit.unwrap_or(usize::MAX)).cloned().collect())
    }
    fn count(&self, start: &[u8], end: &[u8]) -> Result<u64> {
        Ok(self.state.read().unwrap_or_else(PoisonError::into_inner).range(start, end).count() as u64)
    }
    fn write(&self, txns: Vec<Txn>, revision: Revision, _: Durability) -> Result<Applied> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let applied = apply_txns(&mut *state, txns, revision)?;
        state.revision = applied.revision;
        if !applied.events.is_empty() {
            state.log.insert(applied.revision, applied.events.clone());
        }
        Ok(applied)
    }
    fn history(&self, from: Revision, revisions: u64, prefix: &[u8]) -> Result<Vec<Event>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let wanted = from..from.saturating_add(revisions);
        let events = state
            .log
            .range(from..)
            .take_while(|(_, events)| events.first().is_some_and(|e| e.revision() < wanted.end))
            .flat_map(|(_, events)| events.iter());
        Ok(events.filter(|e| wanted.contains(&e.revision()) && e.kv.key.starts_with(prefix)).cloned().collect())
    }
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }
    fn commit_path(&self, _: Durability) -> CommitPath {
        CommitPath::Inline
    }
    fn compact(&self, revision: Revision) -> Result<()> {
        let dropped = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let kept = state.log.split_off(&revision);
            state.compacted = state.compacted.max(revision);
            std::mem::replace(&mut state.log, kept)
        };
        // Freeing half the history (hundreds of thousands of commits) takes tens of milliseconds,
        // and this runs in a committing caller's thread, maybe under its own lock: free it apart.
        if dropped.len() > 1024 {
            // If no thread can be made, the closure and the history go here instead.
            let _ = std::thread::Builder::new().name("history-free".into()).spawn(move || drop(dropped));
        }
        Ok(())
    }
}
