//! The durable engine: redb, a crash-safe copy-on-write B-tree in one file.
//!
//! Two tables: `kv` (key -> record) and `meta` (the compaction point, and the revision of the last
//! checkpoint). Each group commit is applied to an open redb write transaction and made durable by
//! the write-ahead log (see `wal.rs`). That transaction stays open across group commits and is
//! committed durably at the next checkpoint, or without a sync as soon as a reader needs to see
//! what it holds. History (each revision's events, for watches) is the log's records, kept in
//! segment files past each checkpoint (`history.rs`). Stores made before that kept it in a `log`
//! table, which opening drops.
//!
//! A checkpoint's durable redb commit writes every page the epoch dirtied and syncs them: 25-35 ms
//! under load, which held up every writer when it ran in their path. So it runs in its own thread
//! while writes go on: they are applied to an overlay over a snapshot of redb and logged to the
//! second log file, which the checkpoint switched to; once redb is durable, the overlay is applied
//! to a new open transaction. Readers wait for the checkpoint (they are rare: services read the
//! store at start).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use crate::engine::{
    Applied, CommitPath, Engine, WriteBatch, apply_txns, decode_events, decode_value, decode_version, encode_events,
    encode_value, key_bounds, next_version,
};
use crate::history::{History, Segment};
use crate::wal::{Entry, Fsync, Wal};
use crate::{Event, EventKind, KeyValue, Result, Revision, StoreError, Txn};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// History, in stores made before it moved to segment files.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMPACTED: &str = "compacted";
/// The revision of the last checkpoint; written so that a checkpoint is never an empty commit.
const CHECKPOINT: &str = "checkpoint";
const REDB_CACHE_BYTES: usize = 64 << 20;

pub(crate) struct RedbEngine {
    db: Database,
    wal: Mutex<WalState>,
    /// Signalled when a checkpoint ends.
    checkpointed: Condvar,
    checkpoint_bytes: u64,
    fsync: Fsync,
}

struct WalState {
    wal: Wal,
    /// The other log file: the previous epoch's until the checkpoint that ended it is durable, then
    /// the next epoch's.
    spare: Wal,
    /// While a checkpoint commits redb: what was written since it began.
    overlay: Option<Overlay>,
    /// Set when a commit failed after its log record was written: the log and redb no longer
    /// agree until a restart replays the log, so no further write may be accepted.
    failed: bool,
    /// The redb transaction holding every group commit since redb's last commit, all of them
    /// durable in the log already. Committing redb once per group commit cost more CPU than the
    /// rest of the commit (each one copies, checksums and queues the B-tree pages it touched, the
    /// same root and branch pages again and again); held open, those pages are written once per
    /// checkpoint.
    open: Option<WriteTransaction>,
    /// The last revision committed.
    revision: Revision,
    /// The log's entries since the last checkpoint, in order: history not yet in a segment.
    recent: Vec<Entry>,
    history: History,
}

/// A checkpoint begun: redb's durable commit, the revision it holds, and the history segment of
/// the epoch it ends.
type Begun = (WriteTransaction, Revision, Option<Segment>);

/// The writes made while a checkpoint commits redb, over a snapshot of what it commits.
struct Overlay {
    snapshot: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Each key written: its record, or `None` once removed.
    changes: BTreeMap<Vec<u8>, Option<KeyValue>>,
}

#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error("a previous commit failed; restart Stratus to recover from the write-ahead log")]
    Failed,
    #[error("the write-ahead log jumps from revision {expected} to {found}")]
    Gap { expected: Revision, found: Revision },
}

/// Saves records the checkpoint holds as a history segment.
fn keep_history(history: &mut History, entries: &[Entry]) {
    if let Err(error) = history.save(entries) {
        history_lost(error);
    }
}

/// A history segment that cannot be written is history lost, not data: watches find those
/// revisions compacted.
fn history_lost(error: StoreError) {
    tracing::error!(error = &error as &dyn std::error::Error, "cannot keep the log's records as history");
}

fn failed(error: impl Into<redb::Error>) -> StoreError {
    StoreError::engine(error.into())
}

impl RedbEngine {
    /// Opens the store in `dir`, replaying the write-ahead log over redb's last durable state.
    pub(crate) fn open(dir: &Path, checkpoint_bytes: u64, fsync: Fsync) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::engine)?;
        // Services keep their working state in memory and read the store mostly at start, so
        // redb's page cache need not be its default 1 GiB.
        let db =
            Database::builder().set_cache_size(REDB_CACHE_BYTES).create(dir.join("stratus.redb")).map_err(failed)?;
        // The log is checkpointed once it passes `checkpoint_bytes`, so most epochs fit in that much
        // plus one batch.
        let size = checkpoint_bytes + (1 << 20);
        let (mut wal, mut entries) = Wal::open(&dir.join("stratus.wal"), size, fsync)?;
        // A checkpoint that was running left the end of its epoch in one log and the next epoch in
        // the other; each log's valid records are its own epoch's, so their revisions never overlap.
        let (mut spare, more) = Wal::open(&dir.join("stratus-2.wal"), size, fsync)?;
        entries.extend(more);
        entries.sort_by_key(|(revision, _)| *revision);
        let mut history = History::open(&dir.join("history"))?;
        let legacy = match db.begin_read().map_err(failed)?.open_table(LEGACY_LOG) {
            Ok(log) => Some(log.last().map_err(failed)?.map_or(0, |(revision, _)| revision.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(failed(error)),
        };
        let txn = db.begin_write().map_err(failed)?;
        let mut replayed = Vec::new();
        let revision = {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            let mut meta = txn.open_table(META).map_err(failed)?;
            let checkpoint = meta.get(CHECKPOINT).map_err(failed)?.map_or(0, |v| v.value());
            let durable = checkpoint.max(legacy.unwrap_or(0));
            let mut revision = durable;
            for (entry_revision, events) in entries.into_iter().filter(|(r, _)| *r > durable) {
                if entry_revision != revision + 1 {
                    return Err(StoreError::engine(RecoveryError::Gap {
                        expected: revision + 1,
                        found: entry_revision,
                    }));
                }
                let mut decoded = Vec::new();
                decode_events(entry_revision, &events, b"", &mut decoded)?;
                let mut batch = RedbBatch { kv: &mut kv, logged: Vec::new() };
                for event in &decoded {
                    match event.kind {
                        EventKind::Put => batch.store(&event.kv)?,
                        EventKind::Delete => batch.remove(&event.kv.key)?,
                    }
                }
                replayed.push((entry_revision, events));
                revision = entry_revision;
            }
            if revision > durable {
                tracing::info!(from = durable + 1, to = revision, "replayed the write-ahead log");
            }
            meta.insert(CHECKPOINT, revision).map_err(failed)?;
            revision
        };
        if legacy.is_some() {
            txn.delete_table(LEGACY_LOG).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        keep_history(&mut history, &replayed);
        wal.restart()?;
        spare.restart_after(&wal)?;
        let state =
            WalState { wal, spare, overlay: None, failed: false, open: None, revision, recent: Vec::new(), history };
        Ok(RedbEngine { db, wal: Mutex::new(state), checkpointed: Condvar::new(), checkpoint_bytes, fsync })
    }

    /// The slow part, without the lock: redb's durable commit, and writing the history segment.
    fn finish_checkpoint(&self, (txn, revision, segment): Begun) -> Result<()> {
        let committed = txn.commit().map_err(failed);
        let segment = segment.filter(|segment| committed.is_ok() && segment.write().map_err(history_lost).is_ok());
        self.end_checkpoint(committed, revision, segment)
    }

    /// The durable commit to make, the revision it holds and the history segment it ends; from
    /// here until [`Self::end_checkpoint`], writes go to the overlay. `None` if there is nothing
    /// to commit.
    fn begin_checkpoint(&self) -> Result<Option<Begun>> {
        let mut state = self.idle();
        if state.failed || (state.wal.len() == 0 && state.open.is_none()) {
            return Ok(None);
        }
        // What the open transaction holds, made visible to the snapshot the overlay reads.
        Self::publish_locked(&mut state)?;
        let revision = state.revision;
        let snapshot = self.db.begin_read().map_err(failed)?.open_table(KV).map_err(failed)?;
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::Immediate).map_err(failed)?;
        txn.open_table(META).map_err(failed)?.insert(CHECKPOINT, revision).map_err(failed)?;
        // The spare holds records the previous checkpoint made durable: it can start over.
        let WalState { wal, spare, .. } = &mut *state;
        spare.restart_after(wal)?;
        std::mem::swap(wal, spare);
        state.overlay = Some(Overlay { snapshot, changes: BTreeMap::new() });
        let segment = state.history.segment(&state.recent);
        Ok(Some((txn, revision, segment)))
    }

    /// Puts the overlay into a new open transaction, once the checkpoint's commit is done, and
    /// keeps the history segment written meanwhile.
    fn end_checkpoint(&self, committed: Result<()>, revision: Revision, segment: Option<Segment>) -> Result<()> {
        let mut state = self.lock();
        let changes = state.overlay.take().map(|overlay| overlay.changes).unwrap_or_default();
        self.checkpointed.notify_all();
        // Until the overlay is in a new open transaction, what it holds is only in the log; if
        // the commit failed, the next open replays both logs.
        state.failed = true;
        committed?;
        let (txn, _) = self.transaction(&mut state)?;
        {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            for (key, change) in changes {
                match change {
                    Some(record) => kv.insert(&key[..], encode_value(&record).as_slice()).map_err(failed)?,
                    None => kv.remove(&key[..]).map_err(failed)?,
                };
            }
        }
        state.open = Some(txn);
        state.failed = false;
        let held = state.recent.partition_point(|(r, _)| *r <= revision);
        state.recent.drain(..held);
        if let Some(segment) = &segment {
            state.history.add(segment);
        }
        Ok(())
    }

    /// The state, once no checkpoint is committing redb (which holds redb's one write transaction).
    fn idle(&self) -> MutexGuard<'_, WalState> {
        let mut state = self.lock();
        while state.overlay.is_some() {
            state = self.checkpointed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state
    }

    /// The open transaction, or a new one; and whether it was open (holding earlier commits).
    fn transaction(&self, state: &mut WalState) -> Result<(WriteTransaction, bool)> {
        if let Some(txn) = state.open.take() {
            return Ok((txn, true));
        }
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::None).map_err(failed)?;
        Ok((txn, false))
    }

    fn lock(&self) -> MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits the open transaction without a sync (the log holds it), so that readers see every
    /// acknowledged write.
    fn publish(&self) -> Result<()> {
        Self::publish_locked(&mut self.idle())
    }

    fn publish_locked(state: &mut WalState) -> Result<()> {
        if let Some(txn) = state.open.take() {
            state.failed = true;
            txn.commit().map_err(failed)?;
            state.failed = false;
        }
        Ok(())
    }

    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>> {
        self.publish()?;
        self.db.begin_read().map_err(failed)?.open_table(table).map_err(failed)
    }
}

impl RedbBatch<'_, '_> {
    /// Writes `kv` exactly as it is (replaying the log).
    fn store(&mut self, kv: &KeyValue) -> Result<()> {
        self.kv.insert(&kv.key[..], encode_value(kv).as_slice()).map_err(failed)?;
        Ok(())
    }
}

struct RedbBatch<'t, 'txn> {
    kv: &'t mut Table<'txn, &'static [u8], &'static [u8]>,
    /// What this batch logged, for the write-ahead log (and then history).
    logged: Vec<Entry>,
}

/// A write while a checkpoint commits redb: reads see the overlay over the snapshot.
struct OverlayBatch<'o> {
    overlay: &'o mut Overlay,
    logged: Vec<Entry>,
}

impl WriteBatch for OverlayBatch<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(change) = self.overlay.changes.get(key) {
            return Ok(change.clone());
        }
        match self.overlay.snapshot.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_value(key, record.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, revision: Revision) -> Result<KeyValue> {
        let previous = self.get(&key)?.map(|kv| (kv.create_revision, kv.version));
        let kv = next_version(key.as_slice(), value, revision, previous);
        self.overlay.changes.insert(key, Some(kv.clone()));
        Ok(kv)
    }
    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.overlay.changes.insert(key.to_vec(), None);
        Ok(())
    }
    fn range(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        let Some(bounds) = key_bounds(start, end) else { return Ok(Vec::new()) };
        let mut merged = BTreeMap::new();
        for entry in self.overlay.snapshot.range::<&[u8]>(bounds).map_err(failed)? {
            let (key, record) = entry.map_err(failed)?;
            merged.insert(key.value().to_vec(), decode_value(key.value(), record.value())?);
        }
        for (key, change) in self.overlay.changes.range::<[u8], _>(bounds) {
            match change {
                Some(kv) => merged.insert(key.clone(), kv.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_values().collect())
    }
    fn log(&mut self, revision: Revision, events: &[Event]) -> Result<()> {
        self.logged.push((revision, encode_events(events)));
        Ok(())
    }
}

impl WriteBatch for RedbBatch<'_, '_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.kv.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_value(key, record.value())?)),
            None => Ok(None),
        }
    }
    /// Most puts create their key (every SQS message does), so the record is inserted as new
    /// first: the insert hands back the previous record, if any, and only then is the record
    /// written again with the key's create revision and version. That saves a B-tree descent per
    /// new key over looking the key up first.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, revision: Revision) -> Result<KeyValue> {
        let mut kv = next_version(key, value, revision, None);
        let previous = match self.kv.insert(&kv.key[..], encode_value(&kv).as_slice()).map_err(failed)? {
            Some(record) => Some(decode_version(record.value())?),
            None => None,
        };
        if previous.is_some() {
            kv = next_version(kv.key, kv.value, revision, previous);
            self.store(&kv)?;
        }
        Ok(kv)
    }
    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.kv.remove(key).map_err(failed)?;
        Ok(())
    }
    fn range(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        let Some(range) = key_bounds(start, end) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in self.kv.range::<&[u8]>(range).map_err(failed)? {
            let (key, record) = entry.map_err(failed)?;
            out.push(decode_value(key.value(), record.value())?);
        }
        Ok(out)
    }
    fn log(&mut self, revision: Revision, events: &[Event]) -> Result<()> {
        self.logged.push((revision, encode_events(events)));
        Ok(())
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    /// The compaction point is also where the history kept begins, if that is later (history
    /// dropped with a store's legacy `log` table, or a segment lost).
    fn revisions(&self) -> Result<(Revision, Revision)> {
        let compacted = self.read_table(META)?.get(COMPACTED).map_err(failed)?.map_or(0, |v| v.value());
        let state = self.lock();
        let kept = state.history.first().or(state.recent.first().map(|(r, _)| *r)).unwrap_or(state.revision + 1);
        Ok((state.revision, compacted.max(kept)))
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.read_table(KV)?.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_value(key, record.value())?)),
            None => Ok(None),
        }
    }

    fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>> {
        let Some(range) = key_bounds(start, end) else { return Ok(Vec::new()) };
        let table = self.read_table(KV)?;
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(range).map_err(failed)?.take(limit.unwrap_or(usize::MAX)) {
            let (key, record) = entry.map_err(failed)?;
            out.push(decode_value(key.value(), record.value())?);
        }
        Ok(out)
    }

    fn count(&self, start: &[u8], end: &[u8]) -> Result<u64> {
        let table = self.read_table(KV)?;
        if start.is_empty() && end.is_empty() {
            return table.len().map_err(failed);
        }
        let Some(range) = key_bounds(start, end) else { return Ok(0) };
        Ok(table.range::<&[u8]>(range).map_err(failed)?.count() as u64)
    }

    fn write(&self, txns: Vec<Txn>, revision: Revision) -> Result<Applied> {
        let mut state = self.lock();
        if state.failed {
            return Err(StoreError::engine(RecoveryError::Failed));
        }
        // Applied to the overlay while a checkpoint runs, else to the open transaction, which goes
        // back once the batch is logged.
        let (applied, logged, open) = match state.overlay.as_mut() {
            Some(overlay) => {
                let mut batch = OverlayBatch { overlay, logged: Vec::new() };
                match apply_txns(&mut batch, txns, revision) {
                    Ok(applied) => (applied, batch.logged, None),
                    Err(error) => {
                        // The overlay may hold part of what failed.
                        state.failed = true;
                        return Err(error);
                    }
                }
            }
            None => {
                let (txn, carried) = self.transaction(&mut state)?;
                let applied = (|| {
                    let mut kv = txn.open_table(KV).map_err(failed)?;
                    let mut batch = RedbBatch { kv: &mut kv, logged: Vec::new() };
                    Ok::<_, StoreError>((apply_txns(&mut batch, txns, revision)?, batch.logged))
                })();
                match applied {
                    Ok((applied, logged)) => (applied, logged, Some(txn)),
                    Err(error) => {
                        // Dropping the transaction also drops the earlier commits it carried from redb.
                        state.failed = carried;
                        return Err(error);
                    }
                }
            }
        };
        if !logged.is_empty() {
            // Durable from here on; a failure now leaves the log ahead of redb.
            state.failed = true;
            state.wal.append(&logged)?;
            state.failed = false;
            state.revision = applied.revision;
            state.recent.extend(logged);
        }
        if open.is_some() {
            state.open = open;
        }
        Ok(applied)
    }

    fn wants_checkpoint(&self) -> bool {
        let state = self.lock();
        state.overlay.is_none() && state.wal.len() >= self.checkpoint_bytes
    }

    /// With an fsync per write, the committer's groups share it. Without, a lone write is a few
    /// B-tree inserts and a `write`: cheaper in the caller's thread than the hand-offs to the
    /// committer and back.
    fn commit_path(&self) -> CommitPath {
        match self.fsync {
            Fsync::Always => CommitPath::Grouped,
            Fsync::Every(_) => CommitPath::InlineWhenAlone,
        }
    }

    /// Makes everything committed so far durable in redb and keeps the log's records as history.
    /// The durable commit runs without the lock: writes meanwhile go to the overlay and to the
    /// other log file, which takes the next epoch.
    fn checkpoint(&self) -> Result<()> {
        match self.begin_checkpoint()? {
            Some(begun) => self.finish_checkpoint(begun),
            None => Ok(()),
        }
    }

    fn history(&self, from: Revision, revisions: u64, prefix: &[u8]) -> Result<Vec<Event>> {
        let mut state = self.lock();
        let state = &mut *state;
        let to = from.saturating_add(revisions).min(state.revision + 1);
        let mut out = Vec::new();
        let mut next = state.history.read(from, to, prefix, &mut out)?;
        let start = state.recent.partition_point(|(revision, _)| *revision < next);
        for (revision, events) in state.recent[start..].iter().take_while(|(r, _)| *r < to) {
            if *revision != next {
                break;
            }
            decode_events(*revision, events, prefix, &mut out)?;
            next += 1;
        }
        if next < to {
            // A gap: a segment lost or torn. What follows it is still there.
            let kept = state.history.kept_after(next).or(state.recent.first().map(|(r, _)| *r)).unwrap_or(to);
            return Err(StoreError::Compacted { requested: next, compacted: kept });
        }
        Ok(out)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.idle();
        if state.failed {
            return Err(StoreError::engine(RecoveryError::Failed));
        }
        let (txn, carried) = self.transaction(&mut state)?;
        let compacted = (|| {
            let mut meta = txn.open_table(META).map_err(failed)?;
            let compacted = meta.get(COMPACTED).map_err(failed)?.map_or(0, |v| v.value());
            if revision > compacted {
                // Files first: a crash before the checkpoint that makes this durable leaves the
                // old compaction point, and opening takes the later of it and the history kept. A
                // file that cannot be deleted costs disk, not correctness.
                if let Err(error) = state.history.compact(revision) {
                    tracing::warn!(error = &error as &dyn std::error::Error, "cannot delete history segments");
                }
                meta.insert(COMPACTED, revision).map_err(failed)?;
            }
            Ok(())
        })();
        match compacted {
            Ok(()) => state.open = Some(txn),
            Err(_) => state.failed = carried,
        }
        compacted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compare, Op};

    /// Writes before, during and after a checkpoint, which commits redb only if `finished`; then
    /// drops the engine without closing it, as a crash would.
    fn write_through_a_checkpoint(dir: &Path, finished: bool) {
        let engine = RedbEngine::open(dir, 1 << 20, Fsync::Always).unwrap();
        let before = [Op::put(*b"a", *b"1"), Op::put(*b"b", *b"1"), Op::put(*b"c1", *b"1"), Op::put(*b"c2", *b"1")];
        engine.write(vec![Txn::ops(before.into())], 0).unwrap();
        let begun = engine.begin_checkpoint().unwrap().unwrap();
        assert_eq!(begun.1, 1);
        let during = vec![
            Txn::ops(vec![Op::put(*b"a", *b"2")]),
            // Sees the overlay's `a`, not the snapshot's.
            Txn {
                compares: vec![Compare::ModRevision { key: b"a".to_vec(), revision: 2 }],
                success: vec![Op::delete(*b"b")],
                failure: vec![],
            },
            Txn::ops(vec![Op::DeleteRange { start: b"c".to_vec(), end: b"d".to_vec() }]),
            Txn::ops(vec![Op::put(*b"d", *b"1")]),
        ];
        let applied = engine.write(during, 1).unwrap();
        assert_eq!(applied.revision, 5);
        assert!(applied.responses[1].succeeded);
        assert_eq!(applied.events.iter().filter(|e| e.kind == EventKind::Delete).count(), 3);
        if finished {
            engine.finish_checkpoint(begun).unwrap();
            engine.write(vec![Txn::ops(vec![Op::put(*b"e", *b"1")])], 5).unwrap();
            assert_through_a_checkpoint(&engine, 6);
        }
    }

    fn assert_through_a_checkpoint(engine: &RedbEngine, revision: Revision) {
        assert_eq!(engine.revisions().unwrap().0, revision);
        let a = engine.get(b"a").unwrap().unwrap();
        assert_eq!((&*a.value, a.create_revision, a.mod_revision, a.version), (&b"2"[..], 1, 2, 2));
        let keys: Vec<_> = engine.range(b"", b"", None).unwrap().into_iter().map(|kv| kv.key.to_vec()).collect();
        let expected: &[&[u8]] = if revision == 6 { &[b"a", b"d", b"e"] } else { &[b"a", b"d"] };
        assert_eq!(keys, expected);
        // Every revision's events, across the segment the checkpoint wrote and what followed it.
        let events = engine.history(1, revision, b"").unwrap();
        assert_eq!(
            events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
            [1, 1, 1, 1, 2, 3, 4, 4, 5, 6][..revision as usize + 4]
        );
    }

    #[test]
    fn writes_during_a_checkpoint_see_each_other_and_survive_a_crash_after_it() {
        let dir = tempfile::tempdir().unwrap();
        write_through_a_checkpoint(dir.path(), true);
        assert_through_a_checkpoint(&RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap(), 6);
    }

    #[test]
    fn a_crash_during_a_checkpoint_replays_both_logs() {
        let dir = tempfile::tempdir().unwrap();
        write_through_a_checkpoint(dir.path(), false);
        assert_through_a_checkpoint(&RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap(), 5);
    }

    #[test]
    fn a_store_that_kept_history_in_redb_opens_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let put = |value: &[u8]| vec![Txn::ops(vec![Op::put(*b"k", value.to_vec())])];
        {
            let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
            for revision in 0..3 {
                engine.write(put(&[revision as u8]), revision).unwrap();
            }
            engine.checkpoint().unwrap();
        }
        // As such a store was left: a `log` table, no segments.
        std::fs::remove_dir_all(dir.path().join("history")).unwrap();
        {
            let db = Database::create(dir.path().join("stratus.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            let mut log = txn.open_table(LEGACY_LOG).unwrap();
            for revision in 1..=3u64 {
                log.insert(revision, &[][..]).unwrap();
            }
            drop(log);
            txn.commit().unwrap();
        }
        let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
        assert_eq!(engine.revisions().unwrap(), (3, 4), "its history is gone, so compacted up to now");
        assert_eq!(&*engine.get(b"k").unwrap().unwrap().value, &[2]);
        assert_eq!(engine.write(put(b"next"), 3).unwrap().revision, 4);
        let read = engine.db.begin_read().unwrap();
        assert!(matches!(read.open_table(LEGACY_LOG), Err(redb::TableError::TableDoesNotExist(_))));
    }
}
