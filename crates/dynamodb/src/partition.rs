//! Partitions: where items live. A table (and each global index) is a list of partitions, each
//! owning a contiguous range of the 64-bit hash of the partition key. Inside a partition, the
//! items of one partition key form an *item collection* ordered by sort key, as in DynamoDB. A
//! partition that grows past the split size is split in two at the median of its collections'
//! hashes, moving half of its collections to a new partition.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use md5::{Digest, Md5};

use crate::value::{Item, KeyValue, item_size};

/// The order of items inside a collection: the base table's sort key, or for an index its sort
/// key followed by the table's keys (index keys need not be unique).
pub type SortKey = Vec<KeyValue>;

/// Where a partition key's items live: its hash first (which picks the partition), then the key
/// itself, which keeps two keys with the same hash apart.
pub type CollectionKey = (u64, KeyValue);

pub type Collection = BTreeMap<SortKey, Arc<Item>>;

/// The hash that places a partition key (the first 8 bytes of its MD5; stable across versions,
/// so partition maps survive upgrades).
pub fn hash(key: &KeyValue) -> u64 {
    let digest = Md5::digest(key.bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Capacity used per second over the last minute, and the token buckets that throttle the
/// partition when capacity is enforced.
#[derive(Default)]
pub struct Meter {
    /// (second, read units, write units), oldest first.
    seconds: std::collections::VecDeque<(u64, f64, f64)>,
    /// Unused read and write capacity, in units; it may go negative (a request that passed the
    /// check consumes what it needs).
    tokens: (f64, f64),
    refilled_ms: Option<u64>,
}

/// Unused capacity a partition keeps for bursts: 300 seconds' worth, as DynamoDB documents.
const BURST_SECONDS: f64 = 300.0;

impl Meter {
    /// Whether a request may run on this partition, whose share of capacity is `rates` units per
    /// second (read, write); refills the buckets first.
    pub fn admit(&mut self, now_ms: u64, rates: (f64, f64), write: bool) -> bool {
        let elapsed = self.refilled_ms.map_or(1.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0);
        self.refilled_ms = Some(now_ms);
        self.tokens.0 = (self.tokens.0 + rates.0 * elapsed).min(rates.0 * BURST_SECONDS);
        self.tokens.1 = (self.tokens.1 + rates.1 * elapsed).min(rates.1 * BURST_SECONDS);
        if write { self.tokens.1 > 0.0 } else { self.tokens.0 > 0.0 }
    }

    pub fn add(&mut self, now_s: u64, read: f64, write: f64) {
        self.tokens.0 -= read;
        self.tokens.1 -= write;
        match self.seconds.back_mut() {
            Some(last) if last.0 == now_s => {
                last.1 += read;
                last.2 += write;
            }
            _ => self.seconds.push_back((now_s, read, write)),
        }
        while self.seconds.front().is_some_and(|f| f.0 + 60 <= now_s) {
            self.seconds.pop_front();
        }
    }

    /// (read units, write units) consumed in the last 60 seconds.
    pub fn last_minute(&self, now_s: u64) -> (f64, f64) {
        self.seconds.iter().filter(|s| s.0 + 60 > now_s).fold((0.0, 0.0), |(r, w), s| (r + s.1, w + s.2))
    }
}

pub struct Partition {
    /// The lowest hash this partition owns; it owns up to the next partition's start.
    pub start: u64,
    pub collections: BTreeMap<CollectionKey, Collection>,
    /// Each item collection's size, for ItemCollectionMetrics and its 10 GB limit.
    collection_bytes: BTreeMap<CollectionKey, usize>,
    pub items: usize,
    pub bytes: usize,
    pub meter: Meter,
}

impl Partition {
    fn new(start: u64) -> Self {
        Partition {
            start,
            collections: BTreeMap::new(),
            collection_bytes: BTreeMap::new(),
            items: 0,
            bytes: 0,
            meter: Meter::default(),
        }
    }
}

/// The partitions of a table or of one of its indexes.
pub struct Partitions {
    pub parts: Vec<Partition>,
    split_bytes: usize,
}

impl Partitions {
    /// Partitions starting at `starts` (sorted, the first 0).
    pub fn new(starts: &[u64], split_bytes: usize) -> Self {
        let mut parts: Vec<Partition> = starts.iter().map(|s| Partition::new(*s)).collect();
        if parts.first().is_none_or(|p| p.start != 0) {
            parts.insert(0, Partition::new(0));
        }
        Partitions { parts, split_bytes }
    }

    pub fn starts(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.start).collect()
    }

    /// The partition owning `hash`.
    pub fn index_of(&self, hash: u64) -> usize {
        self.parts.partition_point(|p| p.start <= hash).saturating_sub(1)
    }

    pub fn len_items(&self) -> usize {
        self.parts.iter().map(|p| p.items).sum()
    }

    pub fn len_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    pub fn collection(&self, pk: &KeyValue) -> Option<&Collection> {
        let h = hash(pk);
        self.parts[self.index_of(h)].collections.get(&(h, pk.clone()))
    }

    /// The bytes of every item with partition key `pk`.
    pub fn collection_bytes(&self, pk: &KeyValue) -> usize {
        let h = hash(pk);
        self.parts[self.index_of(h)].collection_bytes.get(&(h, pk.clone())).copied().unwrap_or(0)
    }

    pub fn get(&self, pk: &KeyValue, sk: &SortKey) -> Option<&Arc<Item>> {
        self.collection(pk)?.get(sk)
    }

    /// Stores `item` under its key, returning what it replaced. Returns whether the partition
    /// split, so the caller can persist the new partition map.
    pub fn insert(&mut self, pk: KeyValue, sk: SortKey, item: Arc<Item>) -> (Option<Arc<Item>>, bool) {
        let h = hash(&pk);
        let at = self.index_of(h);
        let part = &mut self.parts[at];
        let size = item_size(&item);
        let collection_bytes = part.collection_bytes.entry((h, pk.clone())).or_default();
        let old = part.collections.entry((h, pk)).or_default().insert(sk, item);
        part.bytes += size;
        *collection_bytes += size;
        match &old {
            Some(o) => {
                part.bytes -= item_size(o);
                *collection_bytes -= item_size(o);
            }
            None => part.items += 1,
        }
        let split = part.bytes > self.split_bytes && self.split(at);
        (old, split)
    }

    pub fn remove(&mut self, pk: &KeyValue, sk: &SortKey) -> Option<Arc<Item>> {
        let h = hash(pk);
        let at = self.index_of(h);
        let part = &mut self.parts[at];
        let ck = (h, pk.clone());
        let collection = part.collections.get_mut(&ck)?;
        let old = collection.remove(sk)?;
        if collection.is_empty() {
            part.collections.remove(&ck);
            part.collection_bytes.remove(&ck);
        } else if let Some(bytes) = part.collection_bytes.get_mut(&ck) {
            *bytes -= item_size(&old);
        }
        part.items -= 1;
        part.bytes -= item_size(&old);
        Some(old)
    }

    /// Records capacity used on the partition owning `pk`.
    pub fn meter(&mut self, pk: &KeyValue, now_s: u64, read: f64, write: f64) {
        let at = self.index_of(hash(pk));
        self.parts[at].meter.add(now_s, read, write);
    }

    /// Whether the partition owning `pk` has capacity left for a read or a write, given the
    /// table's (or index's) capacity per second, shared evenly by its partitions.
    pub fn admit(&mut self, pk: &KeyValue, now_ms: u64, table_rates: (f64, f64), write: bool) -> bool {
        let n = self.parts.len() as f64;
        let at = self.index_of(hash(pk));
        self.parts[at].meter.admit(now_ms, (table_rates.0 / n, table_rates.1 / n), write)
    }

    /// Splits partition `at` at the median of its collections' hashes; false when it cannot be
    /// split (one hash: a single large item collection stays on one partition, as in DynamoDB).
    fn split(&mut self, at: usize) -> bool {
        let part = &mut self.parts[at];
        let half = part.collections.len() / 2;
        let Some(((mid_hash, _), _)) = part.collections.iter().nth(half) else { return false };
        let mid_hash = *mid_hash;
        if mid_hash == part.start {
            return false;
        }
        // ("", the least string, with the median hash) sorts before every key with that hash,
        // whatever the key's type: everything from there on moves.
        let moved = part.collections.split_off(&(mid_hash, KeyValue::S(String::new())));
        let moved_bytes = part.collection_bytes.split_off(&(mid_hash, KeyValue::S(String::new())));
        let mut new = Partition::new(mid_hash);
        for c in moved.values() {
            for item in c.values() {
                new.items += 1;
                new.bytes += item_size(item);
            }
        }
        part.items -= new.items;
        part.bytes -= new.bytes;
        new.collections = moved;
        new.collection_bytes = moved_bytes;
        self.parts.insert(at + 1, new);
        true
    }

    /// Visits items in storage order (partition, hash, key, sort key) from just after `after`,
    /// over hashes in `[lo, hi]`, until `visit` returns false.
    pub fn scan(
        &self,
        after: Option<(&KeyValue, &SortKey)>,
        (lo, hi): (u64, u64),
        mut visit: impl FnMut(&KeyValue, &SortKey, &Arc<Item>) -> bool,
    ) {
        let start_hash = after.map_or(lo, |(pk, _)| hash(pk).max(lo));
        for part in &self.parts[self.index_of(start_hash)..] {
            if part.start > hi {
                return;
            }
            let from = match after {
                Some((pk, _)) if hash(pk) >= lo => Bound::Included((hash(pk), pk.clone())),
                _ => Bound::Included((lo, KeyValue::S(String::new()))),
            };
            for ((h, pk), collection) in part.collections.range((from, Bound::Unbounded)) {
                if *h > hi {
                    return;
                }
                if *h < lo {
                    continue;
                }
                let items: Box<dyn Iterator<Item = (&SortKey, &Arc<Item>)>> = match after {
                    Some((apk, ask)) if apk == pk => {
                        Box::new(collection.range::<SortKey, _>((Bound::Excluded(ask), Bound::Unbounded)))
                    }
                    _ => Box::new(collection.iter()),
                };
                for (sk, item) in items {
                    if !visit(pk, sk, item) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pk: &str, sk: u32, payload: usize) -> (KeyValue, SortKey, Arc<Item>) {
        let mut item = Item::new();
        item.insert("pk".into(), crate::value::Value::S(pk.into()));
        item.insert("x".into(), crate::value::Value::S("x".repeat(payload)));
        (KeyValue::S(pk.into()), vec![KeyValue::N(crate::Number::from_i64(sk.into()))], Arc::new(item))
    }

    fn every_item(parts: &Partitions, range: (u64, u64)) -> Vec<(KeyValue, SortKey)> {
        let mut seen = Vec::new();
        parts.scan(None, range, |pk, sk, _| {
            seen.push((pk.clone(), sk.clone()));
            true
        });
        seen
    }

    /// Splits keep every item in exactly one partition, the one whose range holds its hash, with
    /// counts and bytes that add up; a scan in hash-range segments sees each item once.
    #[test]
    fn splits_keep_each_item_in_the_partition_of_its_hash() {
        let mut parts = Partitions::new(&[0], 2_000);
        let mut expected = Vec::new();
        for p in 0..200 {
            for s in 0..3 {
                let (pk, sk, item) = item(&format!("key{p}"), s, 20);
                expected.push((pk.clone(), sk.clone()));
                parts.insert(pk, sk, item);
            }
        }
        assert!(parts.parts.len() > 8, "{} partitions for ~27 KB with a 2 KB threshold", parts.parts.len());
        assert!(parts.parts.windows(2).all(|w| w[0].start < w[1].start) && parts.parts[0].start == 0);
        for (i, part) in parts.parts.iter().enumerate() {
            let end = parts.parts.get(i + 1).map_or(u64::MAX, |n| n.start - 1);
            assert!(part.collections.keys().all(|(h, pk)| *h == hash(pk) && (part.start..=end).contains(h)));
            let items: usize = part.collections.values().map(BTreeMap::len).sum();
            let bytes: usize = part.collections.values().flat_map(|c| c.values()).map(|i| item_size(i)).sum();
            assert_eq!((part.items, part.bytes), (items, bytes));
            for (key, collection) in &part.collections {
                let size: usize = collection.values().map(|i| item_size(i)).sum();
                assert_eq!(part.collection_bytes.get(key), Some(&size));
            }
        }
        assert_eq!(parts.len_items(), 600);
        let mut all = every_item(&parts, (0, u64::MAX));
        let mut segmented: Vec<_> = (0..7u128)
            .flat_map(|s| {
                let width = (u64::MAX as u128 + 1) / 7;
                let hi = if s == 6 { u64::MAX } else { ((s + 1) * width - 1) as u64 };
                every_item(&parts, ((s * width) as u64, hi))
            })
            .collect();
        all.sort();
        segmented.sort();
        expected.sort();
        assert_eq!(all, expected);
        assert_eq!(segmented, expected);
    }

    /// One huge item collection cannot be split: all of it stays on one partition.
    #[test]
    fn a_single_item_collection_does_not_split() {
        let mut parts = Partitions::new(&[0], 500);
        for s in 0..50 {
            let (pk, sk, item) = item("hot", s, 50);
            parts.insert(pk, sk, item);
        }
        assert_eq!(parts.parts.iter().filter(|p| p.items > 0).count(), 1);
        assert_eq!(parts.collection_bytes(&KeyValue::S("hot".into())), parts.len_bytes());
    }

    /// Resuming a scan after an item continues with the next one, across collections and
    /// partitions, so paging through sees each item once.
    #[test]
    fn scans_resume_after_the_last_item() {
        let mut parts = Partitions::new(&[0], 1_000);
        for p in 0..40 {
            for s in 0..2 {
                let (pk, sk, item) = item(&format!("k{p}"), s, 30);
                parts.insert(pk, sk, item);
            }
        }
        let mut paged = Vec::new();
        let mut after: Option<(KeyValue, SortKey)> = None;
        loop {
            let mut page = Vec::new();
            parts.scan(after.as_ref().map(|(pk, sk)| (pk, sk)), (0, u64::MAX), |pk, sk, _| {
                page.push((pk.clone(), sk.clone()));
                page.len() < 7
            });
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, every_item(&parts, (0, u64::MAX)));
        assert_eq!(paged.len(), 80);
    }

    #[test]
    fn removing_the_last_item_drops_its_collection() {
        let mut parts = Partitions::new(&[0], 1 << 20);
        let (pk, sk, it) = item("a", 1, 10);
        parts.insert(pk.clone(), sk.clone(), it);
        assert!(parts.remove(&pk, &sk).is_some());
        assert!(parts.collection(&pk).is_none());
        assert_eq!((parts.len_items(), parts.len_bytes(), parts.collection_bytes(&pk)), (0, 0, 0));
    }
}
