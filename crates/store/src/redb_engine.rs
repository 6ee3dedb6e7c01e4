//! The durable engine: redb, a crash-safe copy-on-write B-tree in one file.
//!
//! Three tables: `kv` (key -> record), `log` (revision -> that revision's events, the watch
//! history) and `meta` (the current and compacted revisions). One redb write transaction per
//! group commit, with redb's default `Durability::Immediate` (fsync before `commit` returns).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};

use crate::engine::{
    Applied, Engine, WriteBatch, apply_txns, decode_events, decode_value, encode_events, encode_value, key_bounds,
};
use crate::{Event, KeyValue, Result, Revision, StoreError, Txn};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";

pub(crate) struct RedbEngine {
    db: Database,
}

fn failed(error: impl Into<redb::Error>) -> StoreError {
    StoreError::engine(error.into())
}

impl RedbEngine {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::engine)?;
        let db = Database::create(dir.join("stratus.redb")).map_err(failed)?;
        let txn = db.begin_write().map_err(failed)?;
        {
            txn.open_table(KV).map_err(failed)?;
            txn.open_table(LOG).map_err(failed)?;
            txn.open_table(META).map_err(failed)?;
        }
        txn.commit().map_err(failed)?;
        Ok(RedbEngine { db })
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
        self.log.insert(revision, encode_events(events).as_slice()).map_err(failed)?;
        Ok(())
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn revisions(&self) -> Result<(Revision, Revision)> {
        let meta = self.read_table(META)?;
        let read = |name| -> Result<Revision> { Ok(meta.get(name).map_err(failed)?.map_or(0, |v| v.value())) };
        Ok((read(REVISION)?, read(COMPACTED)?))
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
        let txn = self.db.begin_write().map_err(failed)?;
        let applied = {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            let mut log = txn.open_table(LOG).map_err(failed)?;
            let applied = apply_txns(&mut RedbBatch { kv: &mut kv, log: &mut log }, txns, revision)?;
            txn.open_table(META).map_err(failed)?.insert(REVISION, applied.revision).map_err(failed)?;
            applied
        };
        txn.commit().map_err(failed)?;
        Ok(applied)
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
