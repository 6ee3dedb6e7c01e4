//! The data plane: PutItem, GetItem, UpdateItem, DeleteItem, Query, Scan, BatchGetItem and
//! BatchWriteItem, with conditions, projections, return values and consumed capacity.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use store::Txn;

use crate::expr::{self, Condition, ExprError, Operand, Path, Placeholders, RangeCondition, Update, legacy};
use crate::model::{DynamoError, KeySchema, Projection, TableDef, TableId};
use crate::partition::{Partitions, SortKey};
use crate::table::{Table, Written, read_units};
use crate::value::{Item, KeyValue, MAX_ITEM_SIZE, Value, item_size};
use crate::{DynamoDb, TableCell, lock, now_s};

impl From<ExprError> for DynamoError {
    fn from(e: ExprError) -> Self {
        DynamoError::Validation(e.0)
    }
}

/// ExpressionAttributeNames and ExpressionAttributeValues of a request.
#[derive(Clone, Debug, Default)]
pub struct Exprs {
    pub names: HashMap<String, String>,
    pub values: HashMap<String, Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnValues {
    #[default]
    None,
    AllOld,
    UpdatedOld,
    AllNew,
    UpdatedNew,
}

impl ReturnValues {
    pub fn parse(s: &str) -> Result<ReturnValues, DynamoError> {
        Ok(match s {
            "NONE" => ReturnValues::None,
            "ALL_OLD" => ReturnValues::AllOld,
            "UPDATED_OLD" => ReturnValues::UpdatedOld,
            "ALL_NEW" => ReturnValues::AllNew,
            "UPDATED_NEW" => ReturnValues::UpdatedNew,
            other => {
                return Err(DynamoError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
                )));
            }
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Select {
    #[default]
    Default,
    AllAttributes,
    AllProjectedAttributes,
    SpecificAttributes,
    Count,
}

impl Select {
    pub fn parse(s: &str) -> Result<Select, DynamoError> {
        Ok(match s {
            "ALL_ATTRIBUTES" => Select::AllAttributes,
            "ALL_PROJECTED_ATTRIBUTES" => Select::AllProjectedAttributes,
            "SPECIFIC_ATTRIBUTES" => Select::SpecificAttributes,
            "COUNT" => Select::Count,
            other => {
                return Err(DynamoError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
                )));
            }
        })
    }
}

/// Capacity consumed by one request, per table: the table's own share and each index's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consumed {
    pub table: String,
    pub read: f64,
    pub write: f64,
    pub table_units: f64,
    pub global: BTreeMap<String, f64>,
    pub local: BTreeMap<String, f64>,
}

impl Consumed {
    pub fn total(&self) -> f64 {
        self.read + self.write
    }

    fn reads(table: &str, units: f64, index: Option<(&str, bool)>) -> Consumed {
        let mut c = Consumed { table: table.to_string(), read: units, ..Default::default() };
        match index {
            Some((name, true)) => {
                c.global.insert(name.to_string(), units);
            }
            Some((name, false)) => {
                c.local.insert(name.to_string(), units);
            }
            None => c.table_units = units,
        }
        c
    }

    pub(crate) fn writes(table: &str, written: &Written, factor: f64) -> Consumed {
        let mut c = Consumed { table: table.to_string(), table_units: written.table * factor, ..Default::default() };
        for (name, (global, units)) in &written.indexes {
            let map = if *global { &mut c.global } else { &mut c.local };
            map.insert(name.clone(), units * factor);
        }
        c.write = c.table_units + c.global.values().sum::<f64>() + c.local.values().sum::<f64>();
        c
    }

    pub(crate) fn merge(&mut self, other: Consumed) {
        self.read += other.read;
        self.write += other.write;
        self.table_units += other.table_units;
        for (k, v) in other.global {
            *self.global.entry(k).or_default() += v;
        }
        for (k, v) in other.local {
            *self.local.entry(k).or_default() += v;
        }
    }
}

/// An expression as the request wrote it, or as built from the legacy parameters (Expected,
/// AttributeUpdates, KeyConditions, QueryFilter, ScanFilter, AttributesToGet).
#[derive(Clone, Debug)]
pub enum Source<T> {
    Text(String),
    Built(T),
}

/// A Query's key condition.
pub type KeySource = Source<Vec<(String, legacy::AttributeCondition)>>;

fn condition_of(
    src: Option<&Source<Condition>>,
    kind: &'static str,
    p: &mut Placeholders,
) -> Result<Option<Condition>, DynamoError> {
    Ok(match src {
        None => None,
        Some(Source::Text(t)) => Some(expr::parse_condition(t, kind, p)?),
        Some(Source::Built(c)) => Some(c.clone()),
    })
}

fn projection_of(src: Option<&Source<Vec<Path>>>, p: &mut Placeholders) -> Result<Option<Vec<Path>>, DynamoError> {
    Ok(match src {
        None => None,
        Some(Source::Text(t)) => Some(expr::parse_projection(t, p)?),
        Some(Source::Built(paths)) => Some(paths.clone()),
    })
}

#[derive(Clone, Debug, Default)]
pub struct PutItem {
    pub item: Item,
    pub condition: Option<Source<Condition>>,
    pub return_values: ReturnValues,
    pub return_old_on_failure: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct GetItem {
    pub key: Item,
    pub consistent: bool,
    pub projection: Option<Source<Vec<Path>>>,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct UpdateItem {
    pub key: Item,
    pub update: Option<Source<Update>>,
    pub condition: Option<Source<Condition>>,
    pub return_values: ReturnValues,
    pub return_old_on_failure: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteItem {
    pub key: Item,
    pub condition: Option<Source<Condition>>,
    pub return_values: ReturnValues,
    pub return_old_on_failure: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct WriteOutput {
    /// What ReturnValues asked for, if anything.
    pub attributes: Option<Item>,
    pub consumed: Consumed,
    /// For tables with local secondary indexes: the written item's collection.
    pub collection: Option<ItemCollection>,
}

/// ItemCollectionMetrics: an item collection's partition key and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemCollection {
    pub key: Item,
    pub bytes: usize,
}

/// A write applied in memory and submitted to the store.
pub(crate) struct Committed {
    pub old: Option<Arc<Item>>,
    pub written: Written,
    pub commit: store::TxnFuture,
    pub collection: Option<ItemCollection>,
}

impl WriteOutput {
    /// PutItem's and DeleteItem's answer: the old item when ALL_OLD asked for it.
    fn all_old_or_none(rv: ReturnValues, old: Option<Arc<Item>>, table: &str, written: &Written) -> WriteOutput {
        WriteOutput {
            attributes: (rv == ReturnValues::AllOld).then(|| old.map(|o| o.as_ref().clone())).flatten(),
            consumed: Consumed::writes(table, written, 1.0),
            collection: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ReadOutput {
    /// Shared with the table when not projected: answering copies nothing.
    pub item: Option<Arc<Item>>,
    pub consumed: Consumed,
}

#[derive(Clone, Debug, Default)]
pub struct QueryInput {
    pub index: Option<String>,
    pub key_condition: Option<KeySource>,
    pub filter: Option<Source<Condition>>,
    pub projection: Option<Source<Vec<Path>>>,
    pub forward: bool,
    pub limit: Option<usize>,
    pub start_key: Option<Item>,
    pub select: Select,
    pub consistent: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct ScanInput {
    pub index: Option<String>,
    pub filter: Option<Source<Condition>>,
    pub projection: Option<Source<Vec<Path>>>,
    pub limit: Option<usize>,
    pub start_key: Option<Item>,
    /// (Segment, TotalSegments).
    pub segment: Option<(u64, u64)>,
    pub select: Select,
    pub consistent: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug, Default)]
pub struct PageOutput {
    /// `None` when Select is COUNT.
    /// Shared with the table when not projected.
    pub items: Option<Vec<Arc<Item>>>,
    pub count: usize,
    pub scanned: usize,
    pub last_key: Option<Item>,
    pub consumed: Consumed,
}

/// BatchGetItem: per table, its keys and how to read them.
#[derive(Clone, Debug)]
pub struct BatchGet {
    pub table: TableId,
    pub keys: Vec<Item>,
    pub consistent: bool,
    pub projection: Option<Source<Vec<Path>>>,
    pub exprs: Exprs,
}

#[derive(Clone, Debug)]
pub enum WriteRequest {
    Put(Item),
    Delete(Item),
}

#[derive(Clone, Debug)]
pub struct BatchWrite {
    pub table: TableId,
    pub requests: Vec<WriteRequest>,
}

/// A page stops after 1 MB of items read, as in DynamoDB.
const PAGE_BYTES: usize = 1 << 20;

fn invalid(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

/// The key of a Key parameter: exactly the table's key attributes, with the right types.
pub(crate) fn key_from(def: &TableDef, key: &Item) -> Result<(KeyValue, SortKey), DynamoError> {
    let mismatch = || invalid("The provided key element does not match the schema");
    if key.len() != def.key.names().count() {
        return Err(mismatch());
    }
    let (pk, sk) = def.key.key_of(key).ok_or_else(mismatch)?;
    for v in std::iter::once(&pk).chain(sk.iter()) {
        if matches!(v, KeyValue::S(s) if s.is_empty()) || matches!(v, KeyValue::B(b) if b.is_empty()) {
            let name = if Some(v) == sk.as_ref() {
                def.key.range.as_ref().map_or("", |r| r.name.as_str())
            } else {
                &def.key.hash.name
            };
            return Err(invalid(format!(
                "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {} value. Key: {name}",
                if matches!(v, KeyValue::S(_)) { "string" } else { "binary" }
            )));
        }
    }
    check_key_sizes(&pk, sk.as_ref())?;
    Ok((pk, sk.into_iter().collect()))
}

/// Partition keys hold at most 2048 bytes, sort keys 1024.
fn check_key_sizes(pk: &KeyValue, sk: Option<&KeyValue>) -> Result<(), DynamoError> {
    if pk.to_value().size() > 2048 {
        return Err(invalid(
            "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of2048 bytes",
        ));
    }
    if sk.is_some_and(|sk| sk.to_value().size() > 1024) {
        return Err(invalid(
            "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of 1024 bytes",
        ));
    }
    Ok(())
}

/// Checks an item about to be stored: key attributes present, typed and non-empty, index key
/// attributes typed, size within 400 KB.
pub(crate) fn check_item(def: &TableDef, item: &Item) -> Result<(KeyValue, SortKey), DynamoError> {
    for attr in std::iter::once(&def.key.hash).chain(def.key.range.iter()) {
        match item.get(&attr.name) {
            None => {
                return Err(invalid(format!(
                    "One or more parameter values were invalid: Missing the key {} in the item",
                    attr.name
                )));
            }
            Some(v) if !attr.kind.matches(v) => {
                return Err(invalid(format!(
                    "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                    attr.name,
                    attr.kind.name(),
                    v.type_name()
                )));
            }
            Some(Value::S(s)) if s.is_empty() => {
                return Err(invalid(format!(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {}",
                    attr.name
                )));
            }
            Some(Value::B(b)) if b.is_empty() => {
                return Err(invalid(format!(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty binary value. Key: {}",
                    attr.name
                )));
            }
            Some(_) => {}
        }
    }
    for index in def.global.iter().chain(&def.local) {
        for attr in index.key.names() {
            let Some(kind) = def.attributes.iter().find(|a| a.name == attr).map(|a| a.kind) else { continue };
            match item.get(attr) {
                Some(v) if !kind.matches(v) => {
                    return Err(invalid(format!(
                        "One or more parameter values were invalid: Type mismatch for Index Key {attr} Expected: {} Actual: {} IndexName: {}",
                        kind.name(),
                        v.type_name(),
                        index.name
                    )));
                }
                Some(Value::S(s)) if s.is_empty() => {
                    return Err(invalid(format!(
                        "One or more parameter values are not valid. A value specified for a secondary index key is not supported. The AttributeValue for a key attribute cannot contain an empty string value. IndexName: {}, IndexKey: {attr}",
                        index.name
                    )));
                }
                _ => {}
            }
        }
    }
    if item_size(item) > MAX_ITEM_SIZE {
        return Err(invalid("Item size has exceeded the maximum allowed size"));
    }
    let (pk, sk) = def.key.key_of(item).ok_or_else(|| invalid("The provided key element does not match the schema"))?;
    check_key_sizes(&pk, sk.as_ref())?;
    Ok((pk, sk.into_iter().collect()))
}

/// Evaluates a write's condition against the current item.
fn check_condition(
    condition: Option<&Condition>,
    current: Option<&Arc<Item>>,
    return_old: bool,
) -> Result<(), DynamoError> {
    let Some(condition) = condition else { return Ok(()) };
    let empty = Item::new();
    if condition.eval(current.map_or(&empty, |i| i.as_ref())) {
        Ok(())
    } else {
        Err(DynamoError::ConditionalCheckFailed(if return_old { current.map(|i| i.as_ref().clone()) } else { None }))
    }
}

impl DynamoDb {
    /// Applies a write to one table and submits its store transaction; the caller awaits it
    /// after releasing the lock.
    pub(crate) fn commit(
        &self,
        table: &mut Table,
        pk: KeyValue,
        sk: SortKey,
        new: Option<Item>,
    ) -> Result<Committed, DynamoError> {
        // Tables with local indexes keep each item collection under 10 GB, and report its size.
        let local = !table.def.local.is_empty();
        if local && let Some(new) = &new {
            let old = table.get(&pk, &sk).map_or(0, |o| item_size(o));
            if table.parts.collection_bytes(&pk) - old + item_size(new) > self.options.item_collection_bytes {
                return Err(DynamoError::ItemCollectionSizeLimitExceeded);
            }
        }
        let mut ops = Vec::new();
        let (old, written) = table.write(pk.clone(), sk, new, now_s(), false, &mut ops);
        let collection = local.then(|| ItemCollection {
            key: [(table.def.key.hash.name.clone(), pk.to_value())].into(),
            bytes: table.parts.collection_bytes(&pk),
        });
        Ok(Committed { old, written, commit: self.store.txn(Txn::ops(ops)), collection })
    }

    pub async fn put_item(&self, id: &TableId, input: PutItem) -> Result<WriteOutput, DynamoError> {
        let condition = old_only_condition(input.return_values, input.condition.as_ref(), &input.exprs)?;
        let cell = self.table(id)?;
        let Committed { old, written, commit, collection } = {
            let mut table = lock(&cell);
            let (pk, sk) = check_item(&table.def, &input.item)?;
            self.admit(&mut table, &pk, true)?;
            check_condition(condition.as_ref(), table.get(&pk, &sk), input.return_old_on_failure)?;
            self.commit(&mut table, pk, sk, Some(input.item))?
        };
        commit.await?;
        Ok(WriteOutput { collection, ..WriteOutput::all_old_or_none(input.return_values, old, &id.name, &written) })
    }

    pub async fn get_item(&self, id: &TableId, input: GetItem) -> Result<ReadOutput, DynamoError> {
        let mut p = Placeholders::new(&input.exprs.names, &input.exprs.values);
        let projection = projection_of(input.projection.as_ref(), &mut p)?;
        p.finish()?;
        let cell = self.table(id)?;
        let item = {
            let mut table = lock(&cell);
            let (pk, sk) = key_from(&table.def, &input.key)?;
            self.admit(&mut table, &pk, false)?;
            let item = table.get(&pk, &sk).cloned();
            let units = read_units(item.as_ref().map_or(0, |i| item_size(i)), input.consistent);
            table.parts.meter(&pk, now_s(), units, 0.0);
            item
        };
        let units = read_units(item.as_ref().map_or(0, |i| item_size(i)), input.consistent);
        Ok(ReadOutput {
            item: item.map(|i| match &projection {
                Some(paths) => Arc::new(expr::project(&i, paths)),
                None => i,
            }),
            consumed: Consumed::reads(&id.name, units, None),
        })
    }

    pub async fn update_item(&self, id: &TableId, input: UpdateItem) -> Result<WriteOutput, DynamoError> {
        let mut p = Placeholders::new(&input.exprs.names, &input.exprs.values);
        let update = match &input.update {
            None => None,
            Some(Source::Text(t)) => Some(expr::parse_update(t, &mut p)?),
            Some(Source::Built(u)) => Some(u.clone()),
        };
        let condition = condition_of(input.condition.as_ref(), "ConditionExpression", &mut p)?;
        p.finish()?;
        let cell = self.table(id)?;
        let committed = {
            let mut table = lock(&cell);
            let (pk, sk) = key_from(&table.def, &input.key)?;
            self.admit(&mut table, &pk, true)?;
            if let Some(update) = &update {
                check_key_untouched(&table.def.key, &update.paths())?;
            }
            let current = table.get(&pk, &sk).cloned();
            check_condition(condition.as_ref(), current.as_ref(), input.return_old_on_failure)?;
            let mut new = current.as_ref().map_or_else(|| input.key.clone(), |c| c.as_ref().clone());
            if let Some(update) = &update {
                update.apply(&mut new)?;
            }
            if item_size(&new) > MAX_ITEM_SIZE {
                return Err(invalid("Item size to update has exceeded the maximum allowed size"));
            }
            check_item(&table.def, &new)?;
            (self.commit(&mut table, pk, sk, Some(new.clone()))?, new)
        };
        let (Committed { old, written, commit, collection }, new) = (committed.0, committed.1);
        commit.await?;
        let paths = update.as_ref().map(|u| u.paths()).unwrap_or_default();
        let attributes = match input.return_values {
            ReturnValues::None => None,
            ReturnValues::AllOld => old.map(|o| o.as_ref().clone()),
            ReturnValues::AllNew => Some(new),
            ReturnValues::UpdatedOld => old.map(|o| expr::project(&o, &paths)).filter(|i| !i.is_empty()),
            ReturnValues::UpdatedNew => Some(expr::project(&new, &paths)).filter(|i| !i.is_empty()),
        };
        Ok(WriteOutput { attributes, consumed: Consumed::writes(&id.name, &written, 1.0), collection })
    }

    pub async fn delete_item(&self, id: &TableId, input: DeleteItem) -> Result<WriteOutput, DynamoError> {
        let condition = old_only_condition(input.return_values, input.condition.as_ref(), &input.exprs)?;
        let cell = self.table(id)?;
        let (old, written, commit, collection) = {
            let mut table = lock(&cell);
            let (pk, sk) = key_from(&table.def, &input.key)?;
            self.admit(&mut table, &pk, true)?;
            let current = table.get(&pk, &sk).cloned();
            check_condition(condition.as_ref(), current.as_ref(), input.return_old_on_failure)?;
            if current.is_none() {
                // Nothing to delete: no change, but the write is still charged.
                (None, Written { table: 1.0, indexes: BTreeMap::new() }, None, None)
            } else {
                let c = self.commit(&mut table, pk, sk, None)?;
                (c.old, c.written, Some(c.commit), c.collection)
            }
        };
        if let Some(commit) = commit {
            commit.await?;
        }
        Ok(WriteOutput { collection, ..WriteOutput::all_old_or_none(input.return_values, old, &id.name, &written) })
    }

    pub async fn query(&self, id: &TableId, input: QueryInput) -> Result<PageOutput, DynamoError> {
        let cell = self.table(id)?;
        let mut table = lock(&cell);
        let target = Target::resolve(
            &table,
            input.index.as_deref(),
            input.consistent,
            input.select,
            input.projection.is_some(),
        )?;
        let mut p = Placeholders::new(&input.exprs.names, &input.exprs.values);
        let range_name = target.key.range.as_ref().map(|r| r.name.as_str());
        let kc = match &input.key_condition {
            None => {
                return Err(invalid(
                    "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
                ));
            }
            Some(Source::Text(t)) => expr::parse_key_condition(t, &mut p, &target.key.hash.name, range_name)?,
            Some(Source::Built(conditions)) => legacy::key_conditions(conditions, &target.key.hash.name, range_name)?,
        };
        let filter = condition_of(input.filter.as_ref(), "FilterExpression", &mut p)?;
        let projection = projection_of(input.projection.as_ref(), &mut p)?;
        p.finish()?;
        if let Some(filter) = &filter {
            check_filter_keys(filter, &target.key)?;
        }
        let pk =
            KeyValue::from_value(&kc.hash).filter(|_| target.key.hash.kind.matches(&kc.hash)).ok_or_else(|| {
                invalid(
                    "One or more parameter values were invalid: Condition parameter type does not match schema type",
                )
            })?;
        if let (Some(range), Some(attr)) = (&kc.range, &target.key.range) {
            for v in range_values(range) {
                if !attr.kind.matches(v) {
                    return Err(invalid(
                        "One or more parameter values were invalid: Condition parameter type does not match schema type",
                    ));
                }
            }
        }
        let start = match &input.start_key {
            Some(k) => Some(target.start_position(&table.def, k)?),
            None => None,
        };
        if let Some((spk, _)) = &start
            && *spk != pk
        {
            return Err(invalid(
                "The provided starting key is invalid: The provided key element does not match the schema",
            ));
        }
        if target.index.is_none() {
            self.admit(&mut table, &pk, false)?;
        }
        let parts = target.parts(&table);
        let mut page = Page::new(input.limit);
        if let Some(collection) = parts.collection(&pk) {
            let after = start.as_ref().map(|(_, sk)| sk);
            let matches = |sk: &SortKey| kc.range.as_ref().is_none_or(|r| range_matches(r, sk.first()));
            if input.forward {
                let lower = match (after, kc.range.as_ref().and_then(range_lower)) {
                    (Some(a), _) => Bound::Excluded(a.clone()),
                    (None, Some(v)) => Bound::Included(vec![v]),
                    (None, None) => Bound::Unbounded,
                };
                for (sk, item) in collection.range((lower, Bound::Unbounded)) {
                    if !matches(sk) {
                        if kc.range.as_ref().is_some_and(|r| past_upper(r, sk.first())) {
                            break;
                        }
                        continue;
                    }
                    if !page.take(item) {
                        break;
                    }
                }
            } else {
                let upper = match after {
                    Some(a) => Bound::Excluded(a.clone()),
                    None => Bound::Unbounded,
                };
                for (sk, item) in collection.range((Bound::Unbounded, upper)).rev() {
                    if !matches(sk) {
                        if kc.range.as_ref().is_some_and(|r| before_lower(r, sk.first())) {
                            break;
                        }
                        continue;
                    }
                    if !page.take(item) {
                        break;
                    }
                }
            }
        }
        let now = now_s();
        let units = read_units(page.bytes, input.consistent);
        target.parts_mut(&mut table).meter(&pk, now, units, 0.0);
        page.fetch_from(&table, &target);
        let def = table.def.clone();
        drop(table);
        Ok(page.finish(&def, &target, filter.as_ref(), projection.as_deref(), input.select, &id.name, input.consistent))
    }

    pub async fn scan(&self, id: &TableId, input: ScanInput) -> Result<PageOutput, DynamoError> {
        let range = match input.segment {
            None => (0, u64::MAX),
            Some((segment, total)) => {
                if !(1..=1_000_000).contains(&total) {
                    return Err(invalid(format!(
                        "1 validation error detected: Value '{total}' at 'totalSegments' failed to satisfy constraint: Member must have value less than or equal to 1000000"
                    )));
                }
                if segment >= total {
                    return Err(invalid(format!(
                        "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {segment} is not less than TotalSegments: {total}"
                    )));
                }
                let width = (u64::MAX as u128 + 1) / total as u128;
                let lo = (segment as u128 * width) as u64;
                let hi = if segment + 1 == total { u64::MAX } else { ((segment as u128 + 1) * width - 1) as u64 };
                (lo, hi)
            }
        };
        let cell = self.table(id)?;
        let mut table = lock(&cell);
        let target = Target::resolve(
            &table,
            input.index.as_deref(),
            input.consistent,
            input.select,
            input.projection.is_some(),
        )?;
        let mut p = Placeholders::new(&input.exprs.names, &input.exprs.values);
        let filter = condition_of(input.filter.as_ref(), "FilterExpression", &mut p)?;
        let projection = projection_of(input.projection.as_ref(), &mut p)?;
        p.finish()?;
        let start = match &input.start_key {
            Some(k) => Some(target.start_position(&table.def, k)?),
            None => None,
        };
        if target.index.is_none()
            && let Some((pk, _)) = &start
        {
            self.admit(&mut table, pk, false)?;
        }
        let parts = target.parts(&table);
        let mut page = Page::new(input.limit);
        let mut metered: HashMap<KeyValue, usize> = HashMap::new();
        parts.scan(start.as_ref().map(|(pk, sk)| (pk, sk)), range, |pk, _, item| {
            *metered.entry(pk.clone()).or_default() += item_size(item);
            page.take(item)
        });
        let now = now_s();
        let parts = target.parts_mut(&mut table);
        for (pk, bytes) in metered {
            parts.meter(&pk, now, bytes as f64 / 4096.0, 0.0);
        }
        page.fetch_from(&table, &target);
        let def = table.def.clone();
        drop(table);
        Ok(page.finish(&def, &target, filter.as_ref(), projection.as_deref(), input.select, &id.name, input.consistent))
    }

    /// Per table: the items found, the keys left unread because their partition was out of
    /// capacity (`--enforce-capacity`; the client retries them), and the capacity used.
    pub async fn batch_get(
        &self,
        requests: Vec<BatchGet>,
    ) -> Result<Vec<(TableId, Vec<Item>, Vec<Item>, Consumed)>, DynamoError> {
        if let Some(r) = requests.iter().find(|r| r.keys.len() > 100) {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'requestItems.{}.member.keys' failed to satisfy constraint: Member must have length less than or equal to 100",
                r.table.name
            )));
        }
        let total: usize = requests.iter().map(|r| r.keys.len()).sum();
        if total > 100 {
            return Err(invalid("Too many items requested for the BatchGetItem call"));
        }
        let mut out = Vec::new();
        for request in requests {
            let mut p = Placeholders::new(&request.exprs.names, &request.exprs.values);
            let projection = projection_of(request.projection.as_ref(), &mut p)?;
            p.finish()?;
            let cell = self.table(&request.table)?;
            let mut items = Vec::new();
            let mut unprocessed = Vec::new();
            let mut units = 0.0;
            {
                let mut table = lock(&cell);
                let mut seen = Vec::new();
                let now = now_s();
                for key in &request.keys {
                    let (pk, sk) = key_from(&table.def, key)?;
                    if seen.contains(&(pk.clone(), sk.clone())) {
                        return Err(invalid("Provided list of item keys contains duplicates"));
                    }
                    if self.admit(&mut table, &pk, false).is_err() {
                        unprocessed.push(key.clone());
                        seen.push((pk, sk));
                        continue;
                    }
                    let item = table.get(&pk, &sk).cloned();
                    let u = read_units(item.as_ref().map_or(0, |i| item_size(i)), request.consistent);
                    units += u;
                    table.parts.meter(&pk, now, u, 0.0);
                    seen.push((pk, sk));
                    items.extend(item);
                }
            }
            let items = items
                .into_iter()
                .map(|i| match &projection {
                    Some(paths) => expr::project(&i, paths),
                    None => i.as_ref().clone(),
                })
                .collect();
            out.push((request.table.clone(), items, unprocessed, Consumed::reads(&request.table.name, units, None)));
        }
        if total > 0 && out.iter().map(|(_, _, u, _)| u.len()).sum::<usize>() == total {
            return Err(DynamoError::ProvisionedThroughputExceeded);
        }
        Ok(out)
    }

    /// BatchWriteItem: every put and delete, all tables, in one store transaction. Writes to a
    /// partition out of capacity (`--enforce-capacity`) come back unprocessed, for the client to
    /// retry; if none could be made, the request is throttled.
    pub async fn batch_write(
        &self,
        batches: Vec<BatchWrite>,
    ) -> Result<(Vec<Consumed>, Vec<(TableId, WriteRequest)>), DynamoError> {
        let total: usize = batches.iter().map(|b| b.requests.len()).sum();
        if total > 25 {
            return Err(invalid("Too many items requested for the BatchWriteItem call"));
        }
        if total == 0 {
            return Err(invalid("The batch write request list for a table cannot be null or empty"));
        }
        let mut cells: Vec<(TableId, TableCell)> = Vec::new();
        for b in &batches {
            if !cells.iter().any(|(id, _)| *id == b.table) {
                cells.push((b.table.clone(), self.table(&b.table)?));
            }
        }
        // Tables are locked in a fixed order so two batches never wait on each other.
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        let commit = {
            let mut guards: Vec<(TableId, std::sync::MutexGuard<'_, Table>)> =
                cells.iter().map(|(id, cell)| (id.clone(), lock(cell))).collect();
            // Validate everything before changing anything.
            let mut planned = Vec::new();
            for b in &batches {
                let Some(at) = guards.iter().position(|(id, _)| *id == b.table) else { continue };
                let table = &guards[at].1;
                let mut seen = Vec::new();
                for request in &b.requests {
                    let (pk, sk, new) = match request {
                        WriteRequest::Put(item) => {
                            let (pk, sk) = check_item(&table.def, item)?;
                            (pk, sk, Some(item.clone()))
                        }
                        WriteRequest::Delete(key) => {
                            let (pk, sk) = key_from(&table.def, key)?;
                            (pk, sk, None)
                        }
                    };
                    if seen.contains(&(pk.clone(), sk.clone())) {
                        return Err(invalid("Provided list of item keys contains duplicates"));
                    }
                    seen.push((pk.clone(), sk.clone()));
                    planned.push((at, pk, sk, new, request));
                }
            }
            let mut ops = Vec::new();
            let mut consumed: BTreeMap<usize, Consumed> = BTreeMap::new();
            let mut unprocessed = Vec::new();
            let now = now_s();
            let total = planned.len();
            for (at, pk, sk, new, request) in planned {
                let table = &mut guards[at].1;
                if self.admit(table, &pk, true).is_err() {
                    unprocessed.push((table.def.id.clone(), request.clone()));
                    continue;
                }
                let (_, written) = table.write(pk, sk, new, now, false, &mut ops);
                let c = Consumed::writes(&table.def.id.name, &written, 1.0);
                match consumed.get_mut(&at) {
                    Some(existing) => existing.merge(c),
                    None => {
                        consumed.insert(at, c);
                    }
                }
            }
            if unprocessed.len() == total {
                return Err(DynamoError::ProvisionedThroughputExceeded);
            }
            (self.store.txn(Txn::ops(ops)), consumed.into_values().collect::<Vec<_>>(), unprocessed)
        };
        commit.0.await?;
        Ok((commit.1, commit.2))
    }
}

/// PutItem's and DeleteItem's checks before any lock: ReturnValues, then the condition.
fn old_only_condition(
    return_values: ReturnValues,
    condition: Option<&Source<Condition>>,
    exprs: &Exprs,
) -> Result<Option<Condition>, DynamoError> {
    if !matches!(return_values, ReturnValues::None | ReturnValues::AllOld) {
        return Err(invalid("ReturnValues can only be ALL_OLD or NONE"));
    }
    let mut p = Placeholders::new(&exprs.names, &exprs.values);
    let condition = condition_of(condition, "ConditionExpression", &mut p)?;
    p.finish()?;
    Ok(condition)
}

/// Update expressions may not change key attributes.
fn check_key_untouched(key: &KeySchema, paths: &[Path]) -> Result<(), DynamoError> {
    for path in paths {
        if let Some(expr::PathElem::Attr(first)) = path.0.first()
            && key.names().any(|k| k == first)
        {
            return Err(invalid(format!(
                "One or more parameter values were invalid: Cannot update attribute {first}. This attribute is part of the key"
            )));
        }
    }
    Ok(())
}

/// Filters may not use key attributes of a Query.
fn check_filter_keys(filter: &Condition, key: &KeySchema) -> Result<(), DynamoError> {
    for name in key.names() {
        if mentions(filter, name) {
            return Err(invalid(format!(
                "Filter Expression can only contain non-primary key attributes: Primary key attribute: {name}"
            )));
        }
    }
    Ok(())
}

/// Whether a condition reads the top-level attribute `name`.
fn mentions(c: &Condition, name: &str) -> bool {
    fn operand(o: &Operand, name: &str) -> bool {
        match o {
            Operand::Path(p) => p.head() == name,
            Operand::Value(_) => false,
            Operand::Size(inner) => operand(inner, name),
        }
    }
    match c {
        Condition::Compare(_, a, b) | Condition::BeginsWith(a, b) | Condition::Contains(a, b) => {
            operand(a, name) || operand(b, name)
        }
        Condition::Between(a, b, c) => [a, b, c].iter().any(|o| operand(o, name)),
        Condition::In(a, list) => operand(a, name) || list.iter().any(|o| operand(o, name)),
        Condition::And(a, b) | Condition::Or(a, b) => mentions(a, name) || mentions(b, name),
        Condition::Not(a) => mentions(a, name),
        Condition::AttributeExists(p) | Condition::AttributeNotExists(p) => p.head() == name,
        Condition::AttributeType(o, _) => operand(o, name),
    }
}

fn range_values(r: &RangeCondition) -> Vec<&Value> {
    match r {
        RangeCondition::Eq(v)
        | RangeCondition::Lt(v)
        | RangeCondition::Le(v)
        | RangeCondition::Gt(v)
        | RangeCondition::Ge(v)
        | RangeCondition::BeginsWith(v) => vec![v],
        RangeCondition::Between(a, b) => vec![a, b],
    }
}

fn key_value(v: &Value) -> Option<KeyValue> {
    KeyValue::from_value(v)
}

/// The least sort key a forward query can start from.
fn range_lower(r: &RangeCondition) -> Option<KeyValue> {
    match r {
        RangeCondition::Eq(v) | RangeCondition::Ge(v) | RangeCondition::Gt(v) | RangeCondition::BeginsWith(v) => {
            key_value(v)
        }
        RangeCondition::Between(a, _) => key_value(a),
        RangeCondition::Lt(_) | RangeCondition::Le(_) => None,
    }
}

fn range_matches(r: &RangeCondition, sk: Option<&KeyValue>) -> bool {
    let Some(sk) = sk else { return false };
    let cmp = |v: &Value| key_value(v).map(|k| sk.cmp(&k));
    use std::cmp::Ordering::*;
    match r {
        RangeCondition::Eq(v) => cmp(v) == Some(Equal),
        RangeCondition::Lt(v) => cmp(v) == Some(Less),
        RangeCondition::Le(v) => matches!(cmp(v), Some(Less | Equal)),
        RangeCondition::Gt(v) => cmp(v) == Some(Greater),
        RangeCondition::Ge(v) => matches!(cmp(v), Some(Greater | Equal)),
        RangeCondition::Between(a, b) => {
            matches!(cmp(a), Some(Greater | Equal)) && matches!(cmp(b), Some(Less | Equal))
        }
        RangeCondition::BeginsWith(v) => match (sk, v) {
            (KeyValue::S(s), Value::S(p)) => s.starts_with(p.as_str()),
            (KeyValue::B(s), Value::B(p)) => s.starts_with(p),
            _ => false,
        },
    }
}

/// In a forward scan, whether `sk` is past every key the condition can match.
fn past_upper(r: &RangeCondition, sk: Option<&KeyValue>) -> bool {
    let Some(sk) = sk else { return false };
    let above = |v: &Value| key_value(v).is_some_and(|k| *sk > k);
    match r {
        RangeCondition::Eq(v) | RangeCondition::Lt(v) | RangeCondition::Le(v) | RangeCondition::Between(_, v) => {
            above(v)
        }
        RangeCondition::BeginsWith(v) => above(v) && !range_matches(r, Some(sk)),
        RangeCondition::Gt(_) | RangeCondition::Ge(_) => false,
    }
}

/// In a backward scan, whether `sk` is before every key the condition can match.
fn before_lower(r: &RangeCondition, sk: Option<&KeyValue>) -> bool {
    let Some(sk) = sk else { return false };
    let below = |v: &Value| key_value(v).is_some_and(|k| *sk < k);
    match r {
        RangeCondition::Eq(v)
        | RangeCondition::Gt(v)
        | RangeCondition::Ge(v)
        | RangeCondition::Between(v, _)
        | RangeCondition::BeginsWith(v) => below(v),
        RangeCondition::Lt(_) | RangeCondition::Le(_) => false,
    }
}

/// What a Query or Scan reads: the table or one of its indexes.
struct Target {
    /// The index's position in `Table::indexes`, or None for the table.
    index: Option<usize>,
    name: Option<(String, bool)>,
    key: KeySchema,
    /// Items must be fetched from the table (a local index asked for attributes it lacks).
    fetch: bool,
}

impl Target {
    fn resolve(
        table: &Table,
        index: Option<&str>,
        consistent: bool,
        select: Select,
        has_projection: bool,
    ) -> Result<Target, DynamoError> {
        if select == Select::SpecificAttributes && !has_projection {
            return Err(invalid(
                "1 validation error detected: SPECIFIC_ATTRIBUTES requires ProjectionExpression or AttributesToGet",
            ));
        }
        if select != Select::SpecificAttributes && select != Select::Default && has_projection {
            let what = match select {
                Select::AllAttributes => "ALL_ATTRIBUTES",
                Select::AllProjectedAttributes => "ALL_PROJECTED_ATTRIBUTES",
                _ => "only the Count",
            };
            return Err(invalid(format!("Cannot specify the ProjectionExpression when choosing to get {what}")));
        }
        let Some(name) = index else {
            if select == Select::AllProjectedAttributes {
                return Err(invalid("ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"));
            }
            return Ok(Target { index: None, name: None, key: table.def.key.clone(), fetch: false });
        };
        let Some(at) = table.indexes.iter().position(|i| i.spec.name == name) else {
            return Err(invalid(format!("The table does not have the specified index: {name}")));
        };
        let index = &table.indexes[at];
        if index.global && consistent {
            return Err(invalid("Consistent reads are not supported on global secondary indexes"));
        }
        let complete = index.spec.projection == Projection::All;
        let fetch = !complete && (select == Select::AllAttributes || has_projection) && !index.global;
        if index.global && !complete && select == Select::AllAttributes {
            return Err(invalid(format!(
                "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index {name} because its projection type is not ALL"
            )));
        }
        Ok(Target { index: Some(at), name: Some((name.to_string(), index.global)), key: index.spec.key.clone(), fetch })
    }

    fn parts<'t>(&self, table: &'t Table) -> &'t Partitions {
        match self.index {
            Some(at) => &table.indexes[at].parts,
            None => &table.parts,
        }
    }

    fn parts_mut<'t>(&self, table: &'t mut Table) -> &'t mut Partitions {
        match self.index {
            Some(at) => &mut table.indexes[at].parts,
            None => &mut table.parts,
        }
    }

    /// Where an ExclusiveStartKey points: (partition key, sort key) in this target's order.
    fn start_position(&self, def: &TableDef, start: &Item) -> Result<(KeyValue, SortKey), DynamoError> {
        let bad =
            || invalid("The provided starting key is invalid: The provided key element does not match the schema");
        let (tpk, tsk) = def.key.key_of(start).ok_or_else(bad)?;
        if self.index.is_none() {
            if start.len() != def.key.names().count() {
                return Err(bad());
            }
            return Ok((tpk, tsk.into_iter().collect()));
        }
        let (ipk, isk) = self.key.key_of(start).ok_or_else(bad)?;
        let mut sk: SortKey = isk.into_iter().collect();
        sk.push(tpk);
        sk.extend(tsk);
        Ok((ipk, sk))
    }
}

/// Items read by a Query or Scan, up to its Limit and to 1 MB.
struct Page {
    limit: Option<usize>,
    read: Vec<Arc<Item>>,
    bytes: usize,
    /// The page stopped at its Limit or at 1 MB.
    stopped: bool,
}

impl Page {
    fn new(limit: Option<usize>) -> Page {
        Page { limit, read: Vec::new(), bytes: 0, stopped: false }
    }

    /// Takes one item; false when the page is full (the item is the last one on it).
    fn take(&mut self, item: &Arc<Item>) -> bool {
        self.read.push(item.clone());
        self.bytes += item_size(item);
        if self.limit.is_some_and(|l| self.read.len() >= l) || self.bytes >= PAGE_BYTES {
            self.stopped = true;
            return false;
        }
        true
    }

    /// A local index read for attributes it does not project reads them from the table.
    fn fetch_from(&mut self, table: &Table, target: &Target) {
        if !target.fetch {
            return;
        }
        for item in &mut self.read {
            if let Some(full) = table.key_of(item).and_then(|(pk, sk)| table.get(&pk, &sk)) {
                *item = full.clone();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        def: &TableDef,
        target: &Target,
        filter: Option<&Condition>,
        projection: Option<&[Path]>,
        select: Select,
        table: &str,
        consistent: bool,
    ) -> PageOutput {
        let last_key = if self.stopped {
            self.read.last().map(|last| {
                let mut key = def.key.key_item(last);
                key.extend(target.key.key_item(last));
                key
            })
        } else {
            None
        };
        let scanned = self.read.len();
        let units = read_units(self.bytes, consistent);
        let matching: Vec<Arc<Item>> = self.read.into_iter().filter(|i| filter.is_none_or(|f| f.eval(i))).collect();
        let count = matching.len();
        let items = (select != Select::Count).then(|| {
            matching
                .into_iter()
                .map(|i| match projection {
                    Some(paths) => Arc::new(expr::project(&i, paths)),
                    None => i,
                })
                .collect()
        });
        PageOutput {
            items,
            count,
            scanned,
            last_key,
            consumed: Consumed::reads(table, units, target.name.as_ref().map(|(n, g)| (n.as_str(), *g))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{KeyAttr, ScalarType};
    use crate::{CreateTable, NewIndex, Options};

    fn item(pk: &str, sk: &str, payload: usize) -> Item {
        [
            ("pk".to_string(), Value::S(pk.into())),
            ("sk".to_string(), Value::S(sk.into())),
            ("x".to_string(), Value::S("x".repeat(payload))),
        ]
        .into()
    }

    /// DynamoDB's 10 GB limit, shrunk to 300 bytes: an item collection of a table with a local
    /// index stops growing there, while its other collections and tables without one do not.
    #[tokio::test]
    async fn item_collections_of_tables_with_local_indexes_stop_at_their_limit() {
        let store = store::ephemeral(store::StoreOptions::default()).unwrap();
        let db = DynamoDb::open(store, Options { item_collection_bytes: 300, ..Default::default() }).await.unwrap();
        let attr = |name: &str| KeyAttr { name: name.into(), kind: ScalarType::S };
        let key = |range: &str| vec![("pk".to_string(), "HASH".to_string()), (range.to_string(), "RANGE".to_string())];
        let table = |name: &str| TableId { account: "1".into(), region: "r".into(), name: name.into() };
        for (name, local) in [("with-lsi", true), ("without", false)] {
            let local = if local {
                vec![NewIndex {
                    name: "by-x".into(),
                    key: key("x"),
                    projection: Projection::KeysOnly,
                    throughput: None,
                }]
            } else {
                Vec::new()
            };
            let attributes =
                if local.is_empty() { vec![attr("pk"), attr("sk")] } else { vec![attr("pk"), attr("sk"), attr("x")] };
            let spec = CreateTable {
                attributes,
                key: key("sk"),
                billing_mode: Some("PAY_PER_REQUEST".into()),
                local,
                ..Default::default()
            };
            db.create_table(table(name), spec).await.unwrap();
        }
        let put = async |name: &str, pk: &str, sk: &str| {
            db.put_item(&table(name), PutItem { item: item(pk, sk, 90), ..Default::default() }).await
        };
        let first = put("with-lsi", "a", "1").await.unwrap();
        assert_eq!(
            first.collection.map(|c| (c.key, c.bytes)),
            Some(([("pk".into(), Value::S("a".into()))].into(), 97))
        );
        put("with-lsi", "a", "2").await.unwrap();
        put("with-lsi", "a", "3").await.unwrap();
        assert_eq!(put("with-lsi", "a", "4").await.unwrap_err(), DynamoError::ItemCollectionSizeLimitExceeded);
        put("with-lsi", "a", "3").await.unwrap(); // replacing an item does not grow the collection
        put("with-lsi", "b", "1").await.unwrap();
        for sk in ["1", "2", "3", "4", "5"] {
            assert!(put("without", "a", sk).await.unwrap().collection.is_none());
        }
    }
}
