//! One table in memory: its definition, its partitions, its indexes' partitions, its TTL index
//! and the recent records of its stream. Every change to an item goes through `Table::write`,
//! which keeps all of these in step and returns the store operations that make it durable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use store::Op;

use crate::model::{IndexSpec, KeySchema, Projection, StreamView, TableDef};
use crate::partition::{Partitions, SortKey};
use crate::storage;
use crate::value::{Item, KeyValue, Value, item_size};

/// A stream record, as GetRecords returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamRecord {
    pub sequence: u64,
    /// INSERT, MODIFY or REMOVE.
    pub event: String,
    pub created_s: u64,
    pub keys: Item,
    pub new_image: Option<Item>,
    pub old_image: Option<Item>,
    pub size: usize,
    pub view: StreamView,
    /// TTL deletions are made by the service, and say so.
    pub by_ttl: bool,
}

const FIVE_YEARS_S: i64 = 5 * 365 * 24 * 3600;

/// How long stream records are kept, as in DynamoDB.
pub const STREAM_RETENTION_S: u64 = 24 * 3600;

/// A secondary index: its definition and its partitions (local indexes share the table's
/// partition key, so they are partitioned alike; each has its own map for simplicity).
pub struct SecondaryIndex {
    pub spec: IndexSpec,
    pub global: bool,
    pub parts: Partitions,
}

impl SecondaryIndex {
    /// The index entry for `item`, if the item has the index's key attributes (indexes are
    /// sparse): (partition key, sort key ending with the table's keys, projected item).
    fn entry(&self, table_key: &KeySchema, item: &Item) -> Option<(KeyValue, SortKey, Item)> {
        let (ipk, isk) = self.spec.key.key_of(item)?;
        let (tpk, tsk) = table_key.key_of(item)?;
        let mut sk: SortKey = isk.into_iter().collect();
        sk.push(tpk);
        sk.extend(tsk);
        let projected = match &self.spec.projection {
            Projection::All => item.clone(),
            Projection::KeysOnly | Projection::Include(_) => {
                let include: &[String] = match &self.spec.projection {
                    Projection::Include(names) => names,
                    _ => &[],
                };
                item.iter()
                    .filter(|(name, _)| {
                        table_key.names().chain(self.spec.key.names()).any(|k| k == name.as_str())
                            || include.iter().any(|i| i == *name)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        };
        Some((ipk, sk, projected))
    }
}

pub struct Table {
    pub def: TableDef,
    pub parts: Partitions,
    pub indexes: Vec<SecondaryIndex>,
    /// Items with a TTL: (expiry in epoch seconds, partition key, sort key).
    pub expiries: BTreeSet<(i64, KeyValue, SortKey)>,
    pub stream: VecDeque<StreamRecord>,
    pub next_sequence: u64,
    /// Set when a partition split, so the new map is persisted with the next write.
    pub map_changed: bool,
}

/// Write units for an item of `size` bytes (1 KB each, at least one).
pub fn write_units(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// Read units for `size` bytes read (4 KB each, at least one; half when eventually consistent).
pub fn read_units(size: usize, consistent: bool) -> f64 {
    let units = size.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// Capacity a write consumed, on the table and on each index it touched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    pub table: f64,
    pub indexes: BTreeMap<String, (bool, f64)>,
}

impl Table {
    pub fn new(def: TableDef, split_bytes: usize) -> Table {
        let starts = |name: &str| def.partitions.get(name).cloned().unwrap_or_else(|| vec![0]);
        let parts = Partitions::new(&starts(""), split_bytes);
        let indexes = def
            .global
            .iter()
            .map(|s| (s, true))
            .chain(def.local.iter().map(|s| (s, false)))
            .map(|(spec, global)| SecondaryIndex {
                spec: spec.clone(),
                global,
                parts: Partitions::new(&starts(&spec.name), split_bytes),
            })
            .collect();
        Table {
            def,
            parts,
            indexes,
            expiries: BTreeSet::new(),
            stream: VecDeque::new(),
            next_sequence: 1,
            map_changed: false,
        }
    }

    /// The (partition key, sort key) of an item of this table, if it has the key attributes.
    pub fn key_of(&self, item: &Item) -> Option<(KeyValue, SortKey)> {
        let (pk, sk) = self.def.key.key_of(item)?;
        Some((pk, sk.into_iter().collect()))
    }

    pub fn get(&self, pk: &KeyValue, sk: &SortKey) -> Option<&Arc<Item>> {
        self.parts.get(pk, sk)
    }

    /// When the item expires: its TTL attribute, a number of epoch seconds. DynamoDB ignores
    /// values more than five years in the past (most likely not seconds at all).
    fn expiry_of(&self, item: &Item, now_s: u64) -> Option<i64> {
        let attr = self.def.ttl_attribute.as_ref()?;
        let at = match item.get(attr) {
            Some(Value::N(n)) => n.to_i64().unwrap_or_else(|| n.to_f64().floor() as i64),
            _ => return None,
        };
        (at >= now_s as i64 - FIVE_YEARS_S).then_some(at)
    }

    /// Rebuilds the TTL index after TTL was enabled or changed attribute.
    pub fn reindex_expiries(&mut self) {
        let mut expiries = BTreeSet::new();
        let now = crate::now_s();
        self.parts.scan(None, (0, u64::MAX), |pk, sk, item| {
            if let Some(at) = self.expiry_of(item, now) {
                expiries.insert((at, pk.clone(), sk.clone()));
            }
            true
        });
        self.expiries = expiries;
    }

    /// Puts `new` (or deletes, when `None`) under the key, in memory, and appends to `ops` what
    /// makes it durable: the item, its stream record and, after a split, the partition map.
    /// Returns the old item and the capacity the write consumed.
    pub fn write(
        &mut self,
        pk: KeyValue,
        sk: SortKey,
        new: Option<Item>,
        now_s: u64,
        by_ttl: bool,
        ops: &mut Vec<Op>,
    ) -> (Option<Arc<Item>>, Written) {
        let new = new.map(Arc::new);
        let key = storage::item_key(&self.def.uid, &pk, &sk);
        let (old, split) = match &new {
            Some(item) => {
                ops.push(Op::put(key, storage::encode(item.as_ref())));
                self.parts.insert(pk.clone(), sk.clone(), item.clone())
            }
            None => {
                ops.push(Op::delete(key));
                (self.parts.remove(&pk, &sk), false)
            }
        };
        self.map_changed |= split;
        let size = |i: &Option<Arc<Item>>| i.as_ref().map_or(0, |i| item_size(i));
        let mut written = Written { table: write_units(size(&old).max(size(&new))), indexes: BTreeMap::new() };
        self.parts.meter(&pk, now_s, 0.0, written.table);

        for index in &mut self.indexes {
            let before = old.as_ref().and_then(|o| index.entry(&self.def.key, o));
            let after = new.as_ref().and_then(|n| index.entry(&self.def.key, n));
            let mut units = 0.0;
            if let Some((ipk, isk, projected)) = &before
                && after.as_ref().is_none_or(|(apk, ask, _)| apk != ipk || ask != isk)
            {
                index.parts.remove(ipk, isk);
                index.parts.meter(ipk, now_s, 0.0, write_units(item_size(projected)));
                units += write_units(item_size(projected));
            }
            if let Some((ipk, isk, projected)) = after {
                let w = write_units(item_size(&projected));
                index.parts.meter(&ipk, now_s, 0.0, w);
                let (_, split) = index.parts.insert(ipk, isk, Arc::new(projected));
                self.map_changed |= split;
                units += w;
            }
            if units > 0.0 {
                written.indexes.insert(index.spec.name.clone(), (index.global, units));
            }
        }

        if self.def.ttl_attribute.is_some() {
            if let Some(at) = old.as_ref().and_then(|o| self.expiry_of(o, now_s)) {
                self.expiries.remove(&(at, pk.clone(), sk.clone()));
            }
            if let Some(at) = new.as_ref().and_then(|n| self.expiry_of(n, now_s)) {
                self.expiries.insert((at, pk.clone(), sk.clone()));
            }
        }

        // A write that changes nothing makes no stream record, as in DynamoDB.
        let changed = match (&old, &new) {
            (Some(o), Some(n)) => !o.as_ref().eq(n.as_ref()),
            (None, None) => false,
            _ => true,
        };
        if let Some(stream) = self.def.stream.as_ref().filter(|s| s.enabled)
            && changed
        {
            let event = match (&old, &new) {
                (None, Some(_)) => "INSERT",
                (Some(_), Some(_)) => "MODIFY",
                _ => "REMOVE",
            };
            let keys = self.def.key.key_item(new.as_ref().or(old.as_ref()).map(|i| i.as_ref()).unwrap_or(&Item::new()));
            let view = stream.view;
            let old_image = matches!(view, StreamView::OldImage | StreamView::NewAndOldImages)
                .then(|| old.as_ref().map(|o| o.as_ref().clone()))
                .flatten();
            let new_image = matches!(view, StreamView::NewImage | StreamView::NewAndOldImages)
                .then(|| new.as_ref().map(|n| n.as_ref().clone()))
                .flatten();
            let record = StreamRecord {
                sequence: self.next_sequence,
                event: event.to_string(),
                created_s: now_s,
                size: crate::value::item_size(&keys)
                    + old_image.as_ref().map_or(0, item_size)
                    + new_image.as_ref().map_or(0, item_size),
                keys,
                new_image,
                old_image,
                view,
                by_ttl,
            };
            self.next_sequence += 1;
            ops.push(Op::put(
                storage::stream_key(&self.def.uid, &stream.label, record.sequence),
                storage::encode(&record),
            ));
            self.stream.push_back(record);
            while self.stream.front().is_some_and(|r| r.created_s + STREAM_RETENTION_S < now_s) {
                if let Some(r) = self.stream.pop_front() {
                    ops.push(Op::delete(storage::stream_key(&self.def.uid, &stream.label, r.sequence)));
                }
            }
        }

        if std::mem::take(&mut self.map_changed) {
            self.def.partitions = self.partition_map();
            ops.push(Op::put(storage::table_key(&self.def.id), storage::encode(&self.def)));
        }
        (old, written)
    }

    pub fn reset_meters(&mut self) {
        let parts = std::iter::once(&mut self.parts).chain(self.indexes.iter_mut().map(|i| &mut i.parts));
        for p in parts.flat_map(|p| p.parts.iter_mut()) {
            p.meter = crate::partition::Meter::default();
        }
    }

    /// Where each partition of the table ("") and of each index starts.
    pub fn partition_map(&self) -> BTreeMap<String, Vec<u64>> {
        std::iter::once((String::new(), self.parts.starts()))
            .chain(self.indexes.iter().map(|i| (i.spec.name.clone(), i.parts.starts())))
            .collect()
    }

    /// Builds a new index's entries from the table's items (UpdateTable creating a GSI).
    pub fn backfill(&mut self, at: usize) {
        let Some(index) = self.indexes.get_mut(at) else { return };
        let key = &self.def.key;
        let mut entries = Vec::new();
        self.parts.scan(None, (0, u64::MAX), |_, _, item| {
            entries.extend(index.entry(key, item));
            true
        });
        for (ipk, isk, projected) in entries {
            index.parts.insert(ipk, isk, Arc::new(projected));
        }
    }
}
