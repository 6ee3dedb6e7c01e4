//! The durable engine: redb, a crash-safe copy-on-write B-tree in one file, under the changes
//! made since its last commit.
//!
//! Two tables: `kv` (key -> record) and `meta` (the compaction point, and the revision of the last
//! checkpoint). A group commit applies its writes to `changes`, an in-memory map of every key
//! written since the last checkpoint began, and makes them durable in the write-ahead log (see
//! `wal.rs`). redb itself is written only by checkpoints: every few MiB of log, a thread of its
//! own commits the changes to redb durably, in key order, while writes go on into a new map and
//! the second log file. Reads and writes see the changes over those being checkpointed over redb's
//! last commit. History (each revision's events, for watches) is the log's records, kept in segment
//! files past each checkpoint (`history.rs`). Stores made before that kept it in a `log` table,
//! which opening drops.
//!
//! Why the map: writing each group commit into redb, even into one write transaction held open
//! across them, left the writers to wait while a checkpoint committed that transaction (its pages
//! written and checksummed, 1.3-1.8 ms) and, after the checkpoint, while what was written during it
//! went into a new transaction (~2.5 µs a key, 1-3 ms). With the map, a checkpoint holds the
//! writers only to swap two maps and two logs. A key written many times in an epoch also reaches redb
//! once, and a key created and removed within one (most queue messages) never does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::engine::{
    Applied, CommitPath, Engine, KeyBounds, WriteBatch, apply_txns, decode_events, decode_value, decode_version,
    encode_events, encode_value, key_bounds, next_version,
};
use crate::history::{self, History};
use crate::paced::Paced;
use crate::wal::{Entry, Fsync, Wal};
use crate::{Durability, Event, EventKind, KeyValue, Result, Revision, StoreError, Txn};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// History, in stores made before it moved to segment files.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMPACTED: &str = "compacted";
/// The revision of the last checkpoint; written so that a checkpoint is never an empty commit.
const CHECKPOINT: &str = "checkpoint";
const REDB_CACHE_BYTES: usize = 64 << 20;
/// How many times `checkpoint_bytes` the epoch after a running checkpoint may reach before writes
/// wait for that checkpoint. Sustained batched durable sends outran the checkpoint thread (at nice
/// 10, on two cores) until the epoch held 98-270 MB: as much memory, a clean stop of up to 16 s and
/// a replay of up to 26 s after `kill -9`. With this bound, a restart after 45 s of them took 7-9 s
/// instead of 15-17, and writes stall for ~1 s each time it binds (BENCHMARKS.md).
const LAG_LIMIT: u64 = 16;

/// Each key written: its record, or `None` once removed.
type Changes = BTreeMap<Vec<u8>, Option<KeyValue>>;
/// redb's `kv` table as of its last commit.
type Base = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

pub(crate) struct RedbEngine {
    // Before `db`, so that the read transaction it holds ends first.
    wal: Mutex<WalState>,
    db: Database,
    history_dir: PathBuf,
    checkpoint_bytes: u64,
    fsync: Fsync,
    /// Held for the whole of a checkpoint.
    checkpointing: Mutex<()>,
    /// Writers wait for the running checkpoint: it writes its pages out without pacing.
    hurry: Arc<AtomicBool>,
}

struct WalState {
    wal: Wal,
    /// The other log file: the previous epoch's until the checkpoint that ended it is durable, then
    /// the next epoch's.
    spare: Wal,
    /// What was written since the last checkpoint began.
    current: Epoch,
    /// The epoch the running checkpoint ends, which it commits to redb.
    frozen: Option<Arc<Epoch>>,
    base: Base,
    /// The compaction point, and the one redb holds (the next checkpoint writes it).
    compacted: Revision,
    compacted_in_redb: Revision,
    /// Set when a commit failed after its log record was written, or a checkpoint failed: the
    /// log and what is in memory may no longer agree until a restart replays the log, so no
    /// further write may be accepted.
    failed: bool,
    /// The last revision committed.
    revision: Revision,
    history: History,
}

/// What was written between two checkpoints.
#[derive(Default)]
struct Epoch {
    changes: Changes,
    /// The log's entries, in order: history until a checkpoint keeps them as a segment.
    entries: Vec<Entry>,
}

/// A checkpoint begun: the epoch it ends, and the revision and compaction point they reach.
struct Begun {
    epoch: Arc<Epoch>,
    revision: Revision,
    compacted: Revision,
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

fn open_base(db: &Database) -> Result<Base> {
    db.begin_read().map_err(failed)?.open_table(KV).map_err(failed)
}

impl RedbEngine {
    /// Opens the store in `dir`, replaying the write-ahead log over redb's last durable state.
    pub(crate) fn open(dir: &Path, checkpoint_bytes: u64, fsync: Fsync) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::engine)?;
        let path = dir.join("stratus.redb");
        if !path.exists() {
            // redb fills in a new file's header after creating it, and refuses to open a file
            // killed in between (the crash test hit it once): so a new database is made under
            // another name and renamed into place whole.
            let partial = dir.join("stratus.redb.partial");
            let _ = std::fs::remove_file(&partial);
            drop(Database::create(&partial).map_err(failed)?);
            std::fs::rename(&partial, &path).map_err(StoreError::engine)?;
        }
        // Services keep their working state in memory and read the store mostly at start, so
        // redb's page cache need not be its default 1 GiB.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::engine)?;
        let mut builder = Database::builder();
        builder.set_cache_size(REDB_CACHE_BYTES);
        // With `always`, written out in slices as a checkpoint writes it, so that no
        // acknowledgement's sync queues behind a whole checkpoint's pages (`paced.rs`).
        let hurry = Arc::new(AtomicBool::new(false));
        let db = match fsync {
            Fsync::Always => builder.create_with_backend(Paced::new(file, hurry.clone()).map_err(failed)?),
            Fsync::Every(_) => builder.create_with_backend(FileBackend::new(file).map_err(failed)?),
        }
        .map_err(failed)?;
        // The log is checkpointed once it passes `checkpoint_bytes`, so most epochs fit in that much
        // plus one batch.
        let size = checkpoint_bytes + (1 << 20);
        let (mut wal, mut entries) = Wal::open(&dir.join("stratus.wal"), size, fsync)?;
        // A checkpoint that was running left the end of its epoch in one log and the next epoch in
        // the other; each log's valid records are its own epoch's, so their revisions never overlap.
        let (mut spare, more) = Wal::open(&dir.join("stratus-2.wal"), size, fsync)?;
        entries.extend(more);
        entries.sort_by_key(|(revision, _)| *revision);
        let history_dir = dir.join("history");
        let mut history = History::open(&history_dir)?;
        let legacy = match db.begin_read().map_err(failed)?.open_table(LEGACY_LOG) {
            Ok(log) => Some(log.last().map_err(failed)?.map_or(0, |(revision, _)| revision.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(failed(error)),
        };
        let txn = db.begin_write().map_err(failed)?;
        let mut replayed = Vec::new();
        let (revision, compacted) = {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            let mut meta = txn.open_table(META).map_err(failed)?;
            let checkpoint = meta.get(CHECKPOINT).map_err(failed)?.map_or(0, |v| v.value());
            let compacted = meta.get(COMPACTED).map_err(failed)?.map_or(0, |v| v.value());
            let durable = checkpoint.max(legacy.unwrap_or(0));
            let mut revision = durable;
            for (entry_revision, events) in entries.into_iter().filter(|(r, _)| *r > durable) {
                if entry_revision != revision + 1 {
                    let gap = RecoveryError::Gap { expected: revision + 1, found: entry_revision };
                    // Each log is synced on its own schedule, so a power loss can keep the start of
                    // one and lose the end of the other: both within the interval it may lose.
                    if let Fsync::Every(_) = fsync {
                        tracing::warn!(%gap, "the write-ahead log ends at a gap left by a power loss");
                        break;
                    }
                    return Err(StoreError::engine(gap));
                }
                let mut decoded = Vec::new();
                decode_events(entry_revision, &events, b"", &mut decoded)?;
                for event in &decoded {
                    match event.kind {
                        EventKind::Put => kv.insert(&event.kv.key[..], encode_value(&event.kv).as_slice()),
                        EventKind::Delete => kv.remove(&event.kv.key[..]),
                    }
                    .map_err(failed)?;
                }
                replayed.push((entry_revision, events));
                revision = entry_revision;
            }
            if revision > durable {
                tracing::info!(from = durable + 1, to = revision, "replayed the write-ahead log");
            }
            meta.insert(CHECKPOINT, revision).map_err(failed)?;
            (revision, compacted)
        };
        if legacy.is_some() {
            txn.delete_table(LEGACY_LOG).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        keep_history(&mut history, &replayed);
        wal.restart()?;
        spare.restart_after(&wal)?;
        let state = WalState {
            wal,
            spare,
            current: Epoch::default(),
            frozen: None,
            base: open_base(&db)?,
            compacted,
            compacted_in_redb: compacted,
            failed: false,
            revision,
            history,
        };
        Ok(RedbEngine {
            wal: Mutex::new(state),
            db,
            history_dir,
            checkpoint_bytes,
            fsync,
            checkpointing: Mutex::new(()),
            hurry,
        })
    }

    /// Freezes the epoch for a checkpoint to commit and switches to the other log; `None` if
    /// there is nothing to commit, or a checkpoint is running or failed.
    fn begin_checkpoint(&self) -> Result<Option<Begun>> {
        let mut state = self.lock();
        let unchanged = state.current.changes.is_empty() && state.compacted == state.compacted_in_redb;
        if state.failed || state.frozen.is_some() || unchanged {
            return Ok(None);
        }
        // The spare holds records the previous checkpoint made durable: it can start over.
        let WalState { wal, spare, .. } = &mut *state;
        spare.restart_after(wal)?;
        std::mem::swap(wal, spare);
        let epoch = Arc::new(std::mem::take(&mut state.current));
        state.frozen = Some(epoch.clone());
        Ok(Some(Begun { epoch, revision: state.revision, compacted: state.compacted }))
    }

    /// The slow part, without the lock: redb's durable commit, and writing the history segment.
    fn finish_checkpoint(&self, begun: Begun) -> Result<()> {
        // A read transaction begun right after the commit sees just what it committed: nothing
        // else writes redb.
        let base = self.commit(&begun).and_then(|()| open_base(&self.db));
        let paced = self.fsync == Fsync::Always && !self.hurry.load(Ordering::Relaxed);
        let segment = base
            .is_ok()
            .then(|| History::segment(&self.history_dir, &begun.epoch.entries))
            .flatten()
            .filter(|segment| segment.write(paced).map_err(history_lost).is_ok());
        let mut state = self.lock();
        let base = base.inspect_err(|_| {
            // The frozen epoch stays a layer, so reads are still right; the next open replays it
            // from both logs.
            state.failed = true;
        })?;
        let previous = (std::mem::replace(&mut state.base, base), state.frozen.take());
        state.compacted_in_redb = begun.compacted;
        if let Some(segment) = &segment {
            state.history.add(segment);
        }
        // The previous snapshot and the epoch are dropped without the lock.
        drop(state);
        drop((previous, begun.epoch));
        Ok(())
    }

    /// Commits a checkpoint's changes to redb durably, in key order.
    fn commit(&self, begun: &Begun) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(redb::Durability::Immediate).map_err(failed)?;
        {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            for (key, change) in begun.epoch.changes.iter() {
                match change {
                    Some(record) => kv.insert(&key[..], encode_value(record).as_slice()).map(drop),
                    None => kv.remove(&key[..]).map(drop),
                }
                .map_err(failed)?;
            }
            let mut meta = txn.open_table(META).map_err(failed)?;
            meta.insert(CHECKPOINT, begun.revision).map_err(failed)?;
            meta.insert(COMPACTED, begun.compacted).map_err(failed)?;
        }
        txn.commit().map_err(failed)
    }

    fn lock(&self) -> MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WalState {
    fn view(&self) -> View<'_> {
        View { changes: &self.current.changes, frozen: self.frozen.as_ref().map(|e| &e.changes), base: &self.base }
    }

    /// The log's entries not yet in a history segment, oldest first.
    fn recent(&self) -> impl Iterator<Item = &[Entry]> {
        self.frozen.iter().map(|epoch| &epoch.entries[..]).chain([&self.current.entries[..]])
    }

    fn first_recent(&self) -> Option<Revision> {
        self.recent().find_map(|entries| entries.first()).map(|(revision, _)| *revision)
    }
}

/// The store as of the last commit: the changes since the last checkpoint began, over those the
/// running checkpoint commits, over redb.
struct View<'s> {
    changes: &'s Changes,
    frozen: Option<&'s Changes>,
    base: &'s Base,
}

impl View<'_> {
    fn change(&self, key: &[u8]) -> Option<&Option<KeyValue>> {
        self.changes.get(key).or_else(|| self.frozen?.get(key))
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(change) = self.change(key) {
            return Ok(change.clone());
        }
        match self.base.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_value(key, record.value())?)),
            None => Ok(None),
        }
    }

    /// The key's create revision and version, if it exists.
    fn version(&self, key: &[u8]) -> Result<Option<(Revision, u64)>> {
        if let Some(change) = self.change(key) {
            return Ok(change.as_ref().map(|kv| (kv.create_revision, kv.version)));
        }
        match self.base.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_version(record.value())?)),
            None => Ok(None),
        }
    }

    /// The changes to keys in `bounds`, the later one where both maps have a key.
    fn changed(&self, bounds: KeyBounds<'_>) -> BTreeMap<&[u8], &Option<KeyValue>> {
        let mut changed = BTreeMap::new();
        for layer in self.frozen.into_iter().chain([self.changes]) {
            changed.extend(layer.range::<[u8], _>(bounds).map(|(key, change)| (key.as_slice(), change)));
        }
        changed
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>> {
        let Some(bounds) = key_bounds(start, end) else { return Ok(Vec::new()) };
        let mut changed = self.changed(bounds).into_iter().peekable();
        let mut out = Vec::new();
        for entry in self.base.range::<&[u8]>(bounds).map_err(failed)? {
            if out.len() >= limit {
                break;
            }
            let (key, record) = entry.map_err(failed)?;
            let key = key.value();
            while let Some((_, change)) = changed.next_if(|(changed, _)| *changed < key) {
                out.extend(change.clone());
            }
            match changed.next_if(|(changed, _)| *changed == key) {
                Some((_, change)) => out.extend(change.clone()),
                None => out.push(decode_value(key, record.value())?),
            }
        }
        out.extend(changed.filter_map(|(_, change)| change.clone()).take(limit.saturating_sub(out.len())));
        out.truncate(limit);
        Ok(out)
    }

    fn count(&self, start: &[u8], end: &[u8]) -> Result<u64> {
        let Some(bounds) = key_bounds(start, end) else { return Ok(0) };
        let mut count = if start.is_empty() && end.is_empty() {
            self.base.len().map_err(failed)?
        } else {
            self.base.range::<&[u8]>(bounds).map_err(failed)?.count() as u64
        };
        for (key, change) in self.changed(bounds) {
            let was = self.base.get(key).map_err(failed)?.is_some();
            count = count + u64::from(change.is_some()) - u64::from(was);
        }
        Ok(count)
    }
}

/// A group commit's writes, into the changes.
struct Batch<'s> {
    changes: &'s mut Changes,
    frozen: Option<&'s Changes>,
    base: &'s Base,
    /// What this batch logged, for the write-ahead log (and then history).
    logged: Vec<Entry>,
}

impl Batch<'_> {
    fn view(&self) -> View<'_> {
        View { changes: self.changes, frozen: self.frozen, base: self.base }
    }
}

impl WriteBatch for Batch<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.view().get(key)
    }
    fn put(&mut self, key: Vec<u8>, value: Arc<[u8]>, revision: Revision) -> Result<KeyValue> {
        let previous = self.view().version(&key)?;
        let kv = next_version(key.as_slice(), value, revision, previous);
        self.changes.insert(key, Some(kv.clone()));
        Ok(kv)
    }
    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.changes.insert(key.to_vec(), None);
        Ok(())
    }
    fn range(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        self.view().range(start, end, usize::MAX)
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
        let state = self.lock();
        let kept = state.history.first().or(state.first_recent()).unwrap_or(state.revision + 1);
        Ok((state.revision, state.compacted.max(kept)))
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.lock().view().get(key)
    }

    fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>> {
        self.lock().view().range(start, end, limit.unwrap_or(usize::MAX))
    }

    fn count(&self, start: &[u8], end: &[u8]) -> Result<u64> {
        self.lock().view().count(start, end)
    }

    fn write(&self, txns: Vec<Txn>, revision: Revision, durability: Durability) -> Result<Applied> {
        let mut state = self.lock();
        if state.failed {
            return Err(StoreError::engine(RecoveryError::Failed));
        }
        let WalState { current, frozen, base, .. } = &mut *state;
        let frozen = frozen.as_ref().map(|epoch| &epoch.changes);
        let mut batch = Batch { changes: &mut current.changes, frozen, base, logged: Vec::new() };
        let applied = apply_txns(&mut batch, txns, revision);
        let logged = batch.logged;
        // The changes may hold part of what failed.
        let applied = applied.inspect_err(|_| state.failed = true)?;
        if !logged.is_empty() {
            // Durable from here on; a failure now leaves the log ahead of what is in memory.
            state.failed = true;
            let sync = durability == Durability::Synced && self.fsync == Fsync::Always;
            if sync {
                // The previous epoch's log may end in records written without a sync; this sync
                // must not make the current epoch durable without them.
                state.spare.sync_written()?;
            }
            state.wal.append(&logged, sync)?;
            state.failed = false;
            state.revision = applied.revision;
            state.current.entries.extend(logged);
        }
        Ok(applied)
    }

    fn wants_checkpoint(&self) -> bool {
        let state = self.lock();
        state.frozen.is_none() && state.wal.len() >= self.checkpoint_bytes
    }

    fn wait_for_a_lagging_checkpoint(&self) {
        let lagging = {
            let state = self.lock();
            state.frozen.is_some() && state.wal.len() >= LAG_LIMIT * self.checkpoint_bytes
        };
        if lagging {
            self.hurry.store(true, Ordering::Relaxed);
            drop(self.checkpointing.lock());
            self.hurry.store(false, Ordering::Relaxed);
        }
    }

    /// With an fsync per write, the committer's groups share it. Without, a lone write is a few
    /// map inserts and a `write`: cheaper in the caller's thread than the hand-offs to the
    /// committer and back.
    fn commit_path(&self, durability: Durability) -> CommitPath {
        match (self.fsync, durability) {
            (Fsync::Always, Durability::Synced) => CommitPath::Grouped,
            _ => CommitPath::InlineWhenAlone,
        }
    }

    /// Makes everything committed so far durable in redb and keeps the log's records as history.
    /// The durable commit runs without the lock: writes meanwhile go to a new map and to the
    /// other log file, which takes the next epoch.
    fn checkpoint(&self) -> Result<()> {
        let _checkpointing = self.checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
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
        for entries in state.recent() {
            let start = entries.partition_point(|(revision, _)| *revision < next);
            for (revision, events) in entries[start..].iter().take_while(|(r, _)| *r < to) {
                if *revision != next {
                    break;
                }
                decode_events(*revision, events, prefix, &mut out)?;
                next += 1;
            }
        }
        if next < to {
            // A gap: a segment lost or torn. What follows it is still there.
            let kept = state.history.kept_after(next).or(state.first_recent()).unwrap_or(to);
            return Err(StoreError::Compacted { requested: next, compacted: kept });
        }
        Ok(out)
    }

    /// Deletes the history before `revision`; the next checkpoint records the compaction point in
    /// redb, and the files are deleted in the background. Opening takes the later of the point
    /// recorded and the first segment kept, so a crash between the two leaves either the old point
    /// with the history still there, or the new one with files a later compaction deletes. A file
    /// that cannot be deleted costs disk, not correctness.
    fn compact(&self, revision: Revision) -> Result<()> {
        let files = {
            let mut state = self.lock();
            if state.failed {
                return Err(StoreError::engine(RecoveryError::Failed));
            }
            if revision <= state.compacted {
                return Ok(());
            }
            state.compacted = revision;
            state.history.compact(revision)
        };
        history::delete(files);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::{Compare, Op};

    /// Writes before, during and after a checkpoint, which commits redb only if `finished`; then
    /// drops the engine without closing it, as a crash would.
    fn write_through_a_checkpoint(dir: &Path, finished: bool) {
        let engine = RedbEngine::open(dir, 1 << 20, Fsync::Always).unwrap();
        let before = [Op::put(*b"a", *b"1"), Op::put(*b"b", *b"1"), Op::put(*b"c1", *b"1"), Op::put(*b"c2", *b"1")];
        engine.write(vec![Txn::ops(before.into())], 0, Durability::Synced).unwrap();
        let begun = engine.begin_checkpoint().unwrap().unwrap();
        assert_eq!(begun.revision, 1);
        let during = vec![
            Txn::ops(vec![Op::put(*b"a", *b"2")]),
            // Sees the new changes' `a`, not the frozen ones'.
            Txn {
                compares: vec![Compare::ModRevision { key: b"a".to_vec(), revision: 2 }],
                success: vec![Op::delete(*b"b")],
                failure: vec![],
            },
            Txn::ops(vec![Op::DeleteRange { start: b"c".to_vec(), end: b"d".to_vec() }]),
            Txn::ops(vec![Op::put(*b"d", *b"1")]),
        ];
        let applied = engine.write(during, 1, Durability::Synced).unwrap();
        assert_eq!(applied.revision, 5);
        assert!(applied.responses[1].succeeded);
        assert_eq!(applied.events.iter().filter(|e| e.kind == EventKind::Delete).count(), 3);
        if finished {
            engine.finish_checkpoint(begun).unwrap();
            engine.write(vec![Txn::ops(vec![Op::put(*b"e", *b"1")])], 5, Durability::Synced).unwrap();
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
    fn reads_see_the_changes_over_the_epoch_a_checkpoint_commits_over_redb() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
        let write = |engine: &RedbEngine, ops: Vec<Op>, revision| {
            engine.write(vec![Txn::ops(ops)], revision, Durability::Synced).unwrap()
        };
        write(
            &engine,
            vec![Op::put(*b"a", *b"v"), Op::put(*b"b", *b"v"), Op::put(*b"c", *b"v"), Op::put(*b"d", *b"v")],
            0,
        );
        engine.checkpoint().unwrap();
        write(&engine, vec![Op::put(*b"b", *b"v"), Op::delete(*b"c"), Op::put(*b"e", *b"v")], 1);
        let begun = engine.begin_checkpoint().unwrap().unwrap();
        write(&engine, vec![Op::put(*b"c", *b"v"), Op::delete(*b"e"), Op::put(*b"f", *b"v"), Op::delete(*b"a")], 2);
        let check = |engine: &RedbEngine| {
            let keys = |start: &[u8], end: &[u8], limit| -> Vec<Vec<u8>> {
                engine.range(start, end, limit).unwrap().into_iter().map(|kv| kv.key.to_vec()).collect()
            };
            assert_eq!(keys(b"", b"", None), [b"b", b"c", b"d", b"f"]);
            assert_eq!(keys(b"", b"", Some(2)), [b"b", b"c"]);
            assert_eq!(keys(b"c", b"f", Some(10)), [b"c", b"d"]);
            assert_eq!(keys(b"e", b"", Some(1)), [b"f"]);
            assert_eq!(engine.count(b"", b"").unwrap(), 4);
            assert_eq!(engine.count(b"c", b"g").unwrap(), 3);
            assert_eq!(engine.get(b"e").unwrap(), None);
            let b = engine.get(b"b").unwrap().unwrap();
            assert_eq!((b.create_revision, b.mod_revision, b.version), (1, 2, 2));
            assert_eq!(engine.get(b"c").unwrap().unwrap().create_revision, 3);
        };
        check(&engine);
        engine.finish_checkpoint(begun).unwrap();
        check(&engine);
        engine.checkpoint().unwrap();
        check(&engine);
        drop(engine);
        check(&RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap());
    }

    /// With syncs every interval, a power loss can keep the start of the next epoch's log and lose
    /// the end of the previous one's: the store opens with what came before the gap. With a sync
    /// per write, a gap is acknowledged writes lost, and opening refuses.
    #[test]
    fn a_gap_between_the_two_logs_ends_the_replay_only_with_periodic_syncs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
            for revision in 0..3 {
                engine
                    .write(vec![Txn::ops(vec![Op::put(*b"k", [revision as u8])])], revision, Durability::Synced)
                    .unwrap();
            }
            let _unfinished = engine.begin_checkpoint().unwrap().unwrap();
            engine.write(vec![Txn::ops(vec![Op::put(*b"k", *b"next")])], 3, Durability::Synced).unwrap();
        }
        // Tear the third record of the first log, as a power loss before its sync would.
        let path = dir.path().join("stratus.wal");
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 16;
        for _ in 0..2 {
            at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 8] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).is_err());
        let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Every(Duration::from_millis(100))).unwrap();
        assert_eq!(engine.revisions().unwrap().0, 2);
        assert_eq!(&*engine.get(b"k").unwrap().unwrap().value, &[1]);
    }

    /// With `always`, records written without a sync at the end of one epoch's log are synced
    /// before the first sync in the next epoch's: else a power loss could keep the later records
    /// and lose the earlier ones, a gap that opening refuses.
    #[test]
    fn a_sync_in_a_new_epoch_first_syncs_what_the_previous_one_wrote_without() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
        engine.write(vec![Txn::ops(vec![Op::put(*b"a", *b"1")])], 0, Durability::Written).unwrap();
        let begun = engine.begin_checkpoint().unwrap().unwrap();
        engine.write(vec![Txn::ops(vec![Op::put(*b"b", *b"1")])], 1, Durability::Written).unwrap();
        assert!(engine.lock().spare.unsynced() && engine.lock().wal.unsynced());
        engine.write(vec![Txn::ops(vec![Op::put(*b"c", *b"1")])], 2, Durability::Synced).unwrap();
        assert!(!engine.lock().spare.unsynced() && !engine.lock().wal.unsynced());
        engine.finish_checkpoint(begun).unwrap();
    }

    #[test]
    fn writes_wait_for_a_checkpoint_they_have_outrun() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RedbEngine::open(dir.path(), 4096, Fsync::Always).unwrap();
        let put = |revision: Revision| {
            let value = vec![revision as u8; 1024];
            engine.write(vec![Txn::ops(vec![Op::put(revision.to_le_bytes(), value)])], revision, Durability::Synced)
        };
        put(0).unwrap();
        // A checkpoint under way, as the checkpoint thread holds it.
        let checkpointing = engine.checkpointing.lock().unwrap();
        let _begun = engine.begin_checkpoint().unwrap().unwrap();
        let mut revision = 1;
        while engine.lock().wal.len() < (LAG_LIMIT - 1) * 4096 {
            put(revision).unwrap();
            revision += 1;
        }
        engine.wait_for_a_lagging_checkpoint(); // not lagging yet: returns at once
        while engine.lock().wal.len() < LAG_LIMIT * 4096 {
            put(revision).unwrap();
            revision += 1;
        }
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| engine.wait_for_a_lagging_checkpoint());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "did not wait for the checkpoint");
            drop(checkpointing);
            waiter.join().unwrap();
        });
    }

    #[test]
    fn a_store_that_kept_history_in_redb_opens_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let put = |value: &[u8]| vec![Txn::ops(vec![Op::put(*b"k", value.to_vec())])];
        {
            let engine = RedbEngine::open(dir.path(), 1 << 20, Fsync::Always).unwrap();
            for revision in 0..3 {
                engine.write(put(&[revision as u8]), revision, Durability::Synced).unwrap();
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
        assert_eq!(engine.write(put(b"next"), 3, Durability::Synced).unwrap().revision, 4);
        let read = engine.db.begin_read().unwrap();
        assert!(matches!(read.open_table(LEGACY_LOG), Err(redb::TableError::TableDoesNotExist(_))));
    }
}
