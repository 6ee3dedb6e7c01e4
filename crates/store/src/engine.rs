//! What a storage engine must provide, and the transaction logic shared by all engines.

use std::ops::Bound;
use std::sync::Arc;

use crate::{Compare, Durability, Event, EventKind, KeyValue, Op, Result, Revision, StoreError, Txn, TxnResponse};

/// An embedded engine under [`crate::LocalStore`]. Calls come from the committer thread (writes,
/// compaction), the callers that commit alone, the checkpoint thread and any reader; engines handle
/// their own read/write isolation.
pub trait Engine: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The last committed revision and the compaction point, as recorded.
    fn revisions(&self) -> Result<(Revision, Revision)>;
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;
    fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>>;
    fn count(&self, start: &[u8], end: &[u8]) -> Result<u64>;
    /// Applies `txns` in order as one atomic commit, durable as `durability` says, numbering
    /// changes from `revision + 1`.
    fn write(&self, txns: Vec<Txn>, revision: Revision, durability: Durability) -> Result<Applied>;
    /// The events of revisions `from ..= from + revisions - 1` that touch `prefix`, in order.
    fn history(&self, from: Revision, revisions: u64, prefix: &[u8]) -> Result<Vec<Event>>;
    /// Forgets history before `revision`.
    fn compact(&self, revision: Revision) -> Result<()>;
    /// Makes everything committed durable in its final form, so the next open has nothing to
    /// recover. Called by the store's checkpoint thread when [`Engine::wants_checkpoint`] says so
    /// (commits go on meanwhile), and by the committer thread when the store closes.
    fn checkpoint(&self) -> Result<()>;
    /// Whether enough was written since the last checkpoint that one is due.
    fn wants_checkpoint(&self) -> bool {
        false
    }
    /// Returns once the running checkpoint ends, if the epoch written since it began has grown so
    /// long that it should not grow further first; at once otherwise. The committer thread calls it
    /// between groups, holding the turn, so that writes wait for checkpoints they outrun.
    fn wait_for_a_lagging_checkpoint(&self) {}
    /// Which thread commits a transaction that asks for `durability`.
    fn commit_path(&self, _: Durability) -> CommitPath {
        CommitPath::Grouped
    }
}

/// Which thread commits a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitPath {
    /// The committer thread, which groups concurrent transactions into one engine write: worth it
    /// when every write waits for an fsync to share, and the callers' threads should not.
    Grouped,
    /// The caller, in [`crate::Store::txn`], one at a time: saves the two thread hand-offs when a
    /// write is only memory.
    Inline,
    /// The caller, if its transaction is alone: nothing else waiting and no one committing when it
    /// is submitted, and still nothing else once the caller, awaiting it outside whatever lock it
    /// submitted under, has yielded once to the other ready tasks of its thread. Otherwise the
    /// committer thread, woken at once, which groups what is waiting. For writes that are cheap
    /// alone (a `write` to the log, no fsync): alone, the hand-offs would cost more than the write.
    InlineWhenAlone,
}

/// `[start, end)` as range bounds, an empty `end` meaning no upper bound; `None` if the range is
/// inverted (and so empty, rather than a panic in the B-tree).
pub(crate) fn key_bounds<'a>(start: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
    (end.is_empty() || start < end).then_some((Bound::Included(start), upper))
}

pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The result of one engine commit.
pub struct Applied {
    pub responses: Vec<TxnResponse>,
    /// Shared by the watch feed and the memory engine's history, rather than copied.
    pub events: Arc<[Event]>,
    pub revision: Revision,
}

/// The mutations an engine offers inside one write transaction.
pub(crate) trait WriteBatch {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>>;
    /// Stores `value` under `key` as changed at `revision`, keeping the key's create revision and
    /// counting its version; returns what it stored.
    fn put(&mut self, key: Vec<u8>, value: Arc<[u8]>, revision: Revision) -> Result<KeyValue>;
    fn remove(&mut self, key: &[u8]) -> Result<()>;
    fn range(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>>;
    fn log(&mut self, revision: Revision, events: &[Event]) -> Result<()>;
}

/// Evaluates each transaction against the state left by the ones before it. A transaction that
/// changes nothing takes no revision, as in etcd. The transactions' keys and values move into the
/// events.
pub(crate) fn apply_txns(batch: &mut impl WriteBatch, txns: Vec<Txn>, mut revision: Revision) -> Result<Applied> {
    let mut responses = Vec::with_capacity(txns.len());
    let mut all_events = Vec::new();
    for txn in txns {
        let mut succeeded = true;
        for compare in &txn.compares {
            if !holds(batch, compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        let next = revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let kv = batch.put(key, value, next)?;
                    events.push(Event { kind: EventKind::Put, kv });
                }
                Op::Delete { key } => {
                    if batch.get(&key)?.is_some() {
                        batch.remove(&key)?;
                        events.push(deletion(key, next));
                    }
                }
                Op::DeleteRange { start, end } => {
                    for kv in batch.range(&start, &end)? {
                        batch.remove(&kv.key)?;
                        events.push(deletion(kv.key, next));
                    }
                }
            }
        }
        if !events.is_empty() {
            batch.log(next, &events)?;
            revision = next;
            all_events.extend(events);
        }
        responses.push(TxnResponse { succeeded, revision });
    }
    Ok(Applied { responses, events: all_events.into(), revision })
}

/// The record a put stores: `previous` is the create revision and version of the key's current
/// record, if it has one.
pub(crate) fn next_version(
    key: impl Into<Arc<[u8]>>,
    value: impl Into<Arc<[u8]>>,
    revision: Revision,
    previous: Option<(Revision, u64)>,
) -> KeyValue {
    let (create_revision, version) = previous.map_or((revision, 1), |(created, version)| (created, version + 1));
    KeyValue { key: key.into(), value: value.into(), create_revision, mod_revision: revision, version }
}

fn holds(batch: &mut impl WriteBatch, compare: &Compare) -> Result<bool> {
    Ok(match compare {
        Compare::ModRevision { key, revision } => batch.get(key)?.map_or(0, |kv| kv.mod_revision) == *revision,
        Compare::Value { key, value } => batch.get(key)?.is_some_and(|kv| *kv.value == **value),
    })
}

fn deletion(key: impl Into<Arc<[u8]>>, revision: Revision) -> Event {
    let kv = KeyValue { key: key.into(), value: Arc::from([]), create_revision: 0, mod_revision: revision, version: 0 };
    Event { kind: EventKind::Delete, kv }
}

// On-disk record layouts. Fixed little-endian fields followed by raw bytes: these records never
// change shape within a store version, so a schema'd format would buy nothing but decode time.

/// A stored value: create_revision, mod_revision, version (u64 each), then the value bytes.
pub(crate) fn encode_value(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// A stored value's create revision and version, without copying the value.
pub(crate) fn decode_version(record: &[u8]) -> Result<(Revision, u64)> {
    let mut reader = Reader(record);
    let create_revision = reader.u64()?;
    let _mod_revision = reader.u64()?;
    Ok((create_revision, reader.u64()?))
}

pub(crate) fn decode_value(key: &[u8], record: &[u8]) -> Result<KeyValue> {
    let mut reader = Reader(record);
    let create_revision = reader.u64()?;
    let mod_revision = reader.u64()?;
    let version = reader.u64()?;
    Ok(KeyValue { key: key.into(), value: reader.0.into(), create_revision, mod_revision, version })
}

/// One revision's events: per event a kind byte, the key and value (u32 length each), then
/// create_revision and version. The revision itself is the log's key.
pub(crate) fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        for bytes in [&event.kv.key, &event.kv.value] {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&event.kv.create_revision.to_le_bytes());
        out.extend_from_slice(&event.kv.version.to_le_bytes());
    }
    out
}

pub(crate) fn decode_events(revision: Revision, record: &[u8], prefix: &[u8], out: &mut Vec<Event>) -> Result<()> {
    let mut reader = Reader(record);
    while !reader.0.is_empty() {
        let kind = match reader.take(1)? {
            [0] => EventKind::Put,
            _ => EventKind::Delete,
        };
        let key = reader.bytes()?;
        let value = reader.bytes()?;
        let create_revision = reader.u64()?;
        let version = reader.u64()?;
        if key.starts_with(prefix) {
            let kv =
                KeyValue { key: key.into(), value: value.into(), create_revision, mod_revision: revision, version };
            out.push(Event { kind, kv });
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt record: {0}")]
pub(crate) struct Corrupt(&'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(StoreError::engine(Corrupt("record shorter than its fields")));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| StoreError::engine(Corrupt("u64")))?))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| StoreError::engine(Corrupt("length")))?);
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let kv =
            KeyValue { key: b"k"[..].into(), value: b"v"[..].into(), create_revision: 3, mod_revision: 9, version: 4 };
        assert_eq!(decode_value(b"k", &encode_value(&kv)).ok(), Some(kv.clone()));

        let put = Event { kind: EventKind::Put, kv: kv.clone() };
        let del = deletion(b"other".to_vec(), 9);
        let mut out = Vec::new();
        decode_events(9, &encode_events(&[put.clone(), del.clone()]), b"", &mut out).ok();
        assert_eq!(out, vec![put, del]);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        assert!(decode_value(b"k", &[1, 2, 3]).is_err());
        let mut out = Vec::new();
        assert!(decode_events(1, &[0, 9, 0, 0, 0, b'a'], b"", &mut out).is_err());
    }

    proptest::proptest! {
        /// Records read back from disk may be anything; decoding them is an error or a value.
        #[test]
        fn arbitrary_records_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_value(b"k", &bytes);
            let _ = decode_events(1, &bytes, b"", &mut Vec::new());
        }
    }
}
