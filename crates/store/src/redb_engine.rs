//! The durable engine: redb, a crash-safe copy-on-write B-tree in one file.
//!
//! Three tables: `kv` (key -> record), `log` (revision -> that revision's events, the watch
//! history) and `meta` (the compaction point). The current revision is the log's last key:
//! compaction never removes the newest entry. One redb write transaction per group commit, made
//! durable by the write-ahead log (see `wal.rs`) and committed to redb without a sync; redb itself
//! is made durable at checkpoints.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};

use crate::engine::{
    Applied, Engine, WriteBatch, apply_txns, decode_events, decode_value, encode_events, encode_value, key_bounds,
};
use crate::wal::{Entry, Wal};
use crate::{Event, EventKind, KeyValue, Result, Revision, StoreError, Txn};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMPACTED: &str = "compacted";
/// The revision of the last checkpoint; written so that a checkpoint is never an empty commit.
const CHECKPOINT: &str = "checkpoint";
const REDB_CACHE_BYTES: usize = 64 << 20;

pub(crate) struct RedbEngine {
    db: Database,
    wal: Mutex<WalState>,
    checkpoint_bytes: u64,
}

struct WalState {
    wal: Wal,
    /// Set when a commit failed after its log record was written: the log and redb no longer
    /// agree until a restart replays the log, so no further write may be accepted.
    failed: bool,
}

#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error("a previous commit failed; restart Stratus to recover from the write-ahead log")]
    Failed,
    #[error("the write-ahead log jumps from revision {expected} to {found}")]
    Gap { expected: Revision, found: Revision },
}

fn failed(error: impl Into<redb::Error>) -> StoreError {
    StoreError::engine(error.into())
}

impl RedbEngine {
    /// Opens the store in `dir`, replaying the write-ahead log over redb's last durable state.
    pub(crate) fn open(dir: &Path, checkpoint_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::engine)?;
        // Services keep their working state in memory and read the store mostly at start, so
        // redb's page cache need not be its default 1 GiB.
        let db =
            Database::builder().set_cache_size(REDB_CACHE_BYTES).create(dir.join("stratus.redb")).map_err(failed)?;
        let (mut wal, entries) = Wal::open(&dir.join("stratus.wal"))?;
        let txn = db.begin_write().map_err(failed)?;
        {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            let mut log = txn.open_table(LOG).map_err(failed)?;
            let mut meta = txn.open_table(META).map_err(failed)?;
            let durable = log.last().map_err(failed)?.map_or(0, |(revision, _)| revision.value());
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
                let mut batch = RedbBatch { kv: &mut kv, log: &mut log, logged: Vec::new() };
                for event in &decoded {
                    match event.kind {
                        EventKind::Put => batch.put(&event.kv)?,
                        EventKind::Delete => batch.remove(&event.kv.key)?,
                    }
                }
                batch.log(entry_revision, &decoded)?;
                revision = entry_revision;
            }
            if revision > durable {
                tracing::info!(from = durable + 1, to = revision, "replayed the write-ahead log");
            }
            meta.insert(CHECKPOINT, revision).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        wal.restart()?;
        Ok(RedbEngine { db, wal: Mutex::new(WalState { wal, failed: false }), checkpoint_bytes })
    }

    /// Makes everything committed so far durable in redb, then empties the log.
    fn checkpoint_locked(&self, state: &mut WalState) -> Result<()> {
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let revision = txn.open_table(LOG).map_err(failed)?.last().map_err(failed)?.map_or(0, |(r, _)| r.value());
            txn.open_table(META).map_err(failed)?.insert(CHECKPOINT, revision).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        state.wal.restart()
    }

    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>> {
        self.db.begin_read().map_err(failed)?.open_table(table).map_err(failed)
    }
}

struct RedbBatch<'t, 'txn> {
    kv: &'t mut Table<'txn, &'static [u8], &'static [u8]>,
    log: &'t mut Table<'txn, u64, &'static [u8]>,
    /// What this batch logged, for the write-ahead log.
    logged: Vec<Entry>,
}

impl WriteBatch for RedbBatch<'_, '_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.kv.get(key).map_err(failed)? {
            Some(record) => Ok(Some(decode_value(key, record.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, kv: &KeyValue) -> Result<()> {
        self.kv.insert(kv.key.as_slice(), encode_value(kv).as_slice()).map_err(failed)?;
        Ok(())
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
        let encoded = encode_events(events);
        self.log.insert(revision, encoded.as_slice()).map_err(failed)?;
        self.logged.push((revision, encoded));
        Ok(())
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn revisions(&self) -> Result<(Revision, Revision)> {
        let compacted = self.read_table(META)?.get(COMPACTED).map_err(failed)?.map_or(0, |v| v.value());
        let revision = self.read_table(LOG)?.last().map_err(failed)?.map_or(0, |(revision, _)| revision.value());
        Ok((revision, compacted))
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

    fn write(&self, txns: &[Txn], revision: Revision) -> Result<Applied> {
        let mut state = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        if state.failed {
            return Err(StoreError::engine(RecoveryError::Failed));
        }
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::None).map_err(failed)?;
        let (applied, logged) = {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            let mut log = txn.open_table(LOG).map_err(failed)?;
            let mut batch = RedbBatch { kv: &mut kv, log: &mut log, logged: Vec::new() };
            (apply_txns(&mut batch, txns, revision)?, batch.logged)
        };
        if !logged.is_empty() {
            // Durable from here on; a failure now leaves the log ahead of redb.
            state.failed = true;
            state.wal.append(&logged)?;
            txn.commit().map_err(failed)?;
            state.failed = false;
        }
        if state.wal.len() >= self.checkpoint_bytes
            && let Err(error) = self.checkpoint_locked(&mut state)
        {
            // The batch is durable in the log; the checkpoint is retried after the next write.
            tracing::warn!(error = &error as &dyn std::error::Error, "checkpoint failed");
        }
        Ok(applied)
    }

    fn checkpoint(&self) -> Result<()> {
        let mut state = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        if state.failed || state.wal.len() == 0 {
            return Ok(());
        }
        self.checkpoint_locked(&mut state)
    }

    fn history(&self, from: Revision, revisions: u64, prefix: &[u8]) -> Result<Vec<Event>> {
        let table = self.read_table(LOG)?;
        let mut out = Vec::new();
        for entry in table.range(from..from.saturating_add(revisions)).map_err(failed)? {
            let (revision, record) = entry.map_err(failed)?;
            decode_events(revision.value(), record.value(), prefix, &mut out)?;
        }
        Ok(out)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let _writes = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut meta = txn.open_table(META).map_err(failed)?;
            let compacted = meta.get(COMPACTED).map_err(failed)?.map_or(0, |v| v.value());
            if revision > compacted {
                txn.open_table(LOG).map_err(failed)?.retain_in(..revision, |_, _| false).map_err(failed)?;
                meta.insert(COMPACTED, revision).map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)
    }
}
