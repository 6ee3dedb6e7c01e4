//! The control plane: creating, describing, changing and deleting tables; TTL settings; tags;
//! the partition map the console shows.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use store::{Op, Txn};

use crate::model::{
    DynamoError, IndexSpec, KeyAttr, KeySchema, Projection, Stream, StreamView, TableDef, TableId, Throughput,
};
use crate::partition::Partitions;
use crate::table::{SecondaryIndex, Table};
use crate::{DynamoDb, lock, now_ms, now_s, storage};

/// CreateTable's parameters.
#[derive(Clone, Debug, Default)]
pub struct CreateTable {
    pub attributes: Vec<KeyAttr>,
    /// (attribute name, "HASH" | "RANGE") in request order.
    pub key: Vec<(String, String)>,
    pub throughput: Option<Throughput>,
    /// PAY_PER_REQUEST or PROVISIONED; None means PROVISIONED, as in DynamoDB.
    pub billing_mode: Option<String>,
    pub global: Vec<NewIndex>,
    pub local: Vec<NewIndex>,
    pub stream: Option<(bool, Option<StreamView>)>,
    pub tags: Vec<(String, String)>,
    pub deletion_protection: bool,
    pub table_class: Option<String>,
}

/// A secondary index as CreateTable or UpdateTable asks for it.
#[derive(Clone, Debug)]
pub struct NewIndex {
    pub name: String,
    /// (attribute name, "HASH" | "RANGE") in request order.
    pub key: Vec<(String, String)>,
    pub projection: Projection,
    pub throughput: Option<Throughput>,
}

/// A table as DescribeTable presents it.
#[derive(Clone, Debug)]
pub struct TableDescription {
    pub def: TableDef,
    pub status: &'static str,
    pub item_count: usize,
    pub size_bytes: usize,
    /// Per index: (item count, size in bytes).
    pub index_sizes: BTreeMap<String, (usize, usize)>,
}

/// UpdateTable's parameters.
#[derive(Clone, Debug, Default)]
pub struct TableUpdate {
    pub attributes: Vec<KeyAttr>,
    pub billing_mode: Option<String>,
    pub throughput: Option<Throughput>,
    pub indexes: Vec<IndexUpdate>,
    pub stream: Option<(bool, Option<StreamView>)>,
    pub deletion_protection: Option<bool>,
    pub table_class: Option<String>,
}

#[derive(Clone, Debug)]
pub enum IndexUpdate {
    Create(NewIndex),
    Update { name: String, throughput: Option<Throughput> },
    Delete { name: String },
}

/// One partition of the map at `/_stratus/dynamodb/tables/<name>/partitions`.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionView {
    pub id: usize,
    pub hash_start: u64,
    pub hash_end: u64,
    pub items: usize,
    pub bytes: usize,
    pub read_units: f64,
    pub write_units: f64,
}

const MAX_TAGS: usize = 50;

/// How long after a TTL change another is refused.
const TTL_CHANGE_WINDOW_MS: u64 = 3600 * 1000;

fn validate_name(name: &str, what: &str) -> Result<(), DynamoError> {
    let ok = (3..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else if name.len() < 3 || name.len() > 255 {
        Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must have length {}",
            if name.len() < 3 { "greater than or equal to 3" } else { "less than or equal to 255" }
        )))
    } else {
        Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )))
    }
}

fn validate_throughput(t: &Throughput) -> Result<(), DynamoError> {
    if t.read == 0 || t.write == 0 {
        return Err(DynamoError::validation(
            "One or more parameter values were invalid: Provisioned throughput must be specified when BillingMode is PROVISIONED",
        ));
    }
    Ok(())
}

/// Resolves a KeySchema's elements against the attribute definitions.
fn key_schema(elements: &[(String, String)], attributes: &[KeyAttr], what: &str) -> Result<KeySchema, DynamoError> {
    let find = |name: &str| {
        attributes.iter().find(|a| a.name == name).cloned().ok_or_else(|| {
            DynamoError::validation(format!(
                "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{name}], AttributeDefinitions: [{}]",
                attributes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    };
    match elements {
        [(hash, kind)] if kind == "HASH" => Ok(KeySchema { hash: find(hash)?, range: None }),
        [(hash, h), (range, r)] if h == "HASH" && r == "RANGE" => {
            if hash == range {
                return Err(DynamoError::validation(format!(
                    "Both the Hash Key and the Range Key element in the KeySchema have the same name{what}"
                )));
            }
            Ok(KeySchema { hash: find(hash)?, range: Some(find(range)?) })
        }
        [] => Err(DynamoError::validation(
            "1 validation error detected: Value '[]' at 'keySchema' failed to satisfy constraint: Member must have length greater than or equal to 1",
        )),
        [(_, first), ..] if first != "HASH" => Err(DynamoError::validation(format!(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type{what}"
        ))),
        [_, (_, second)] if second != "RANGE" => Err(DynamoError::validation(format!(
            "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type{what}"
        ))),
        _ => Err(DynamoError::validation(format!(
            "1 validation error detected: Value at 'keySchema' failed to satisfy constraint: Member must have length less than or equal to 2{what}"
        ))),
    }
}

fn validate_projection(p: &Projection) -> Result<(), DynamoError> {
    if let Projection::Include(names) = p
        && names.is_empty()
    {
        return Err(DynamoError::validation(
            "One or more parameter values were invalid: NonKeyAttributes must not be empty when ProjectionType is INCLUDE",
        ));
    }
    Ok(())
}

fn stream_from(spec: Option<(bool, Option<StreamView>)>) -> Result<Option<Stream>, DynamoError> {
    match spec {
        None | Some((false, None)) => Ok(None),
        Some((false, Some(_))) => Err(DynamoError::validation(
            "One or more parameter values were invalid: StreamViewType cannot be specified when StreamEnabled is false",
        )),
        Some((true, None)) => Err(DynamoError::validation(
            "One or more parameter values were invalid: StreamViewType is required when StreamEnabled is true",
        )),
        Some((true, Some(view))) => Ok(Some(Stream { view, label: stream_label(), enabled: true })),
    }
}

/// A stream label: the creation time in DynamoDB's format (ISO 8601 with milliseconds).
fn stream_label() -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Every attribute definition must be used by a key of the table or an index.
fn check_attributes_used(attributes: &[KeyAttr], def_keys: &[&KeySchema]) -> Result<(), DynamoError> {
    let used: HashSet<&str> = def_keys.iter().flat_map(|k| k.names()).collect();
    if attributes.iter().any(|a| !used.contains(a.name.as_str())) || attributes.len() != used.len() {
        return Err(DynamoError::validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    Ok(())
}

impl DynamoDb {
    pub async fn create_table(&self, id: TableId, input: CreateTable) -> Result<TableDescription, DynamoError> {
        validate_name(&id.name, "tableName")?;
        let mut names = HashSet::new();
        for a in &input.attributes {
            if !names.insert(a.name.as_str()) {
                return Err(DynamoError::validation("Cannot have two attributes with the same name"));
            }
        }
        let key = key_schema(&input.key, &input.attributes, "")?;
        let provisioned = match input.billing_mode.as_deref() {
            None | Some("PROVISIONED") => true,
            Some("PAY_PER_REQUEST") => false,
            Some(other) => {
                return Err(DynamoError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
                )));
            }
        };
        let throughput = if provisioned {
            let t = input.throughput.ok_or_else(|| {
                DynamoError::validation("One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED")
            })?;
            validate_throughput(&t)?;
            Some(t)
        } else {
            if input.throughput.is_some() {
                return Err(DynamoError::validation(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            None
        };
        let mut index_names = HashSet::new();
        let mut global = Vec::new();
        for NewIndex { name, key: elements, projection, throughput: t } in &input.global {
            validate_name(name, "globalSecondaryIndexes.member.indexName")?;
            if !index_names.insert(name.clone()) {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Duplicate index name: {name}"
                )));
            }
            validate_projection(projection)?;
            let t = match (provisioned, t) {
                (true, Some(t)) => {
                    validate_throughput(t)?;
                    Some(*t)
                }
                (true, None) => {
                    return Err(DynamoError::validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {name}"
                    )));
                }
                (false, Some(_)) => {
                    return Err(DynamoError::validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput should not be specified for index: {name} when BillingMode is PAY_PER_REQUEST"
                    )));
                }
                (false, None) => None,
            };
            global.push(IndexSpec {
                name: name.clone(),
                key: key_schema(elements, &input.attributes, "")?,
                projection: projection.clone(),
                throughput: t,
            });
        }
        if global.len() > 20 {
            return Err(DynamoError::LimitExceeded(
                "Subscriber limit exceeded: The number of global secondary indexes exceeds the limit of 20".into(),
            ));
        }
        let mut local = Vec::new();
        for NewIndex { name, key: elements, projection, .. } in &input.local {
            validate_name(name, "localSecondaryIndexes.member.indexName")?;
            if !index_names.insert(name.clone()) {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Duplicate index name: {name}"
                )));
            }
            validate_projection(projection)?;
            let k = key_schema(elements, &input.attributes, "")?;
            if key.range.is_none() {
                return Err(DynamoError::validation(
                    "One or more parameter values were invalid: Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex",
                ));
            }
            if k.hash.name != key.hash.name || k.range.is_none() {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Index KeySchema does not have the same leading hash key as table KeySchema for index: {name}. index hash key: {}, table hash key: {}",
                    k.hash.name, key.hash.name
                )));
            }
            local.push(IndexSpec { name: name.clone(), key: k, projection: projection.clone(), throughput: None });
        }
        if local.len() > 5 {
            return Err(DynamoError::validation(
                "One or more parameter values were invalid: Number of LocalSecondaryIndexes exceeds per-table limit of 5",
            ));
        }
        let keys: Vec<&KeySchema> = std::iter::once(&key).chain(global.iter().chain(&local).map(|i| &i.key)).collect();
        check_attributes_used(&input.attributes, &keys)?;
        if input.tags.len() > MAX_TAGS {
            return Err(DynamoError::validation("One or more parameter values were invalid: Too many tags"));
        }
        let stream = stream_from(input.stream)?;
        let def = TableDef {
            id: id.clone(),
            uid: uuid::Uuid::new_v4().simple().to_string(),
            key,
            attributes: input.attributes,
            throughput,
            global,
            local,
            stream,
            ttl_attribute: None,
            ttl_changed_ms: None,
            tags: input.tags.into_iter().collect(),
            created_ms: now_ms(),
            deletion_protection: input.deletion_protection,
            table_class: input.table_class.unwrap_or_else(|| "STANDARD".into()),
            partitions: BTreeMap::new(),
        };
        let table = Table::new(def.clone(), self.options.partition_bytes);
        let commit = {
            let mut tables = self.registry_mut();
            if tables.contains_key(&id) {
                return Err(DynamoError::ResourceInUse(format!("Table already exists: {}", id.name)));
            }
            tables.insert(id.clone(), Arc::new(Mutex::new(table)));
            self.store.txn(Txn::ops(vec![Op::put(storage::table_key(&id), storage::encode(&def))]))
        };
        commit.await?;
        Ok(TableDescription { def, status: "ACTIVE", item_count: 0, size_bytes: 0, index_sizes: BTreeMap::new() })
    }

    pub fn describe_table(&self, id: &TableId) -> Result<TableDescription, DynamoError> {
        let cell = self.registry().get(id).cloned().ok_or_else(|| {
            DynamoError::ResourceNotFound(format!("Requested resource not found: Table: {} not found", id.name))
        })?;
        let table = lock(&cell);
        Ok(describe(&table))
    }

    /// Table names of the account and region after `start`, at most `limit`; the last name when
    /// more remain.
    pub fn list_tables(
        &self,
        account: &str,
        region: &str,
        start: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let mut names: Vec<String> = self
            .registry()
            .keys()
            .filter(|id| id.account == account && id.region == region)
            .filter(|id| start.is_none_or(|s| id.name.as_str() > s))
            .map(|id| id.name.clone())
            .collect();
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        let last = if more { names.last().cloned() } else { None };
        (names, last)
    }

    pub async fn delete_table(&self, id: &TableId) -> Result<TableDescription, DynamoError> {
        let (description, commit) = {
            let mut tables = self.registry_mut();
            let cell = tables.get(id).cloned().ok_or_else(|| {
                DynamoError::ResourceNotFound(format!("Requested resource not found: Table: {} not found", id.name))
            })?;
            let table = lock(&cell);
            if table.def.deletion_protection {
                return Err(DynamoError::validation(
                    "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.",
                ));
            }
            let mut description = describe(&table);
            description.status = "DELETING";
            tables.remove(id);
            let prefix = storage::items_prefix(&table.def.uid);
            let streams = storage::stream_prefix(&table.def.uid);
            let ops = vec![
                Op::delete(storage::table_key(id)),
                Op::DeleteRange { end: store::prefix_end(&prefix), start: prefix },
                Op::DeleteRange { end: store::prefix_end(&streams), start: streams },
            ];
            (description, self.store.txn(Txn::ops(ops)))
        };
        commit.await?;
        Ok(description)
    }

    pub async fn update_table(&self, id: &TableId, update: TableUpdate) -> Result<TableDescription, DynamoError> {
        let cell = self.table(id)?;
        let (description, commit) = {
            let mut table = lock(&cell);
            let mut def = table.def.clone();
            let mut changed = false;
            for a in update.attributes {
                match def.attributes.iter().find(|d| d.name == a.name) {
                    Some(d) if d.kind != a.kind => {
                        return Err(DynamoError::validation(format!(
                            "One or more parameter values were invalid: Attribute {} was already defined with a different type",
                            a.name
                        )));
                    }
                    Some(_) => {}
                    None => def.attributes.push(a),
                }
            }
            match update.billing_mode.as_deref() {
                Some("PAY_PER_REQUEST") => {
                    def.throughput = None;
                    for g in &mut def.global {
                        g.throughput = None;
                    }
                    changed = true;
                }
                Some("PROVISIONED") => {
                    let t = update.throughput.or(def.throughput).ok_or_else(|| {
                        DynamoError::validation("One or more parameter values were invalid: ProvisionedThroughput must be specified when BillingMode is PROVISIONED")
                    })?;
                    validate_throughput(&t)?;
                    def.throughput = Some(t);
                    changed = true;
                }
                Some(other) => {
                    return Err(DynamoError::validation(format!(
                        "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
                    )));
                }
                None => {}
            }
            if let (Some(t), None) = (update.throughput, &update.billing_mode) {
                if def.throughput.is_none() {
                    return Err(DynamoError::validation(
                        "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                    ));
                }
                validate_throughput(&t)?;
                if def.throughput == Some(t) {
                    return Err(DynamoError::validation(format!(
                        "The provisioned throughput for the table will not change. The requested value equals the current value. Current ReadCapacityUnits provisioned for the table: {}. Requested ReadCapacityUnits: {}. Current WriteCapacityUnits provisioned for the table: {}. Requested WriteCapacityUnits: {}. Refer to the Amazon DynamoDB Developer Guide for current limits and how to request higher limits.",
                        t.read, t.read, t.write, t.write
                    )));
                }
                def.throughput = Some(t);
                changed = true;
            }
            let mut new_indexes = Vec::new();
            let mut dropped_stream = None;
            for change in update.indexes {
                changed = true;
                match change {
                    IndexUpdate::Create(NewIndex { name, key, projection, throughput }) => {
                        if def.index(&name).is_some() {
                            return Err(DynamoError::validation(format!(
                                "One or more parameter values were invalid: Index with name: {name} already exists"
                            )));
                        }
                        validate_projection(&projection)?;
                        let key = key_schema(&key, &def.attributes, "")?;
                        let throughput = match (def.throughput.is_some(), throughput) {
                            (true, Some(t)) => Some(t),
                            (true, None) => {
                                return Err(DynamoError::validation(format!(
                                    "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {name}"
                                )));
                            }
                            (false, _) => None,
                        };
                        let spec = IndexSpec { name, key, projection, throughput };
                        new_indexes.push(spec.clone());
                        def.global.push(spec);
                    }
                    IndexUpdate::Update { name, throughput } => {
                        let g = def.global.iter_mut().find(|g| g.name == name).ok_or_else(|| {
                            DynamoError::ResourceNotFound(format!(
                                "Requested resource not found: Index: {name} not found"
                            ))
                        })?;
                        g.throughput = throughput;
                    }
                    IndexUpdate::Delete { name } => {
                        let before = def.global.len();
                        def.global.retain(|g| g.name != name);
                        if def.global.len() == before {
                            return Err(DynamoError::ResourceNotFound(format!(
                                "Requested resource not found: Index: {name} not found"
                            )));
                        }
                    }
                }
            }
            if let Some(spec) = update.stream {
                let current = def.stream.as_ref().filter(|s| s.enabled);
                match (spec, current) {
                    ((true, _), Some(_)) => {
                        return Err(DynamoError::validation(format!(
                            "Table already has an enabled stream: TableName: {}",
                            id.name
                        )));
                    }
                    ((false, _), None) => {
                        return Err(DynamoError::validation(format!(
                            "Table has no stream to disable: TableName: {}",
                            id.name
                        )));
                    }
                    ((false, _), Some(_)) => {
                        if let Some(s) = def.stream.as_mut() {
                            s.enabled = false;
                        }
                    }
                    (spec @ (true, _), None) => {
                        // The old stream's records go: only the new stream is described and read.
                        if let Some(old) = &def.stream {
                            let prefix = format!("dynamodb/stream/{}/{}/", def.uid, old.label).into_bytes();
                            dropped_stream = Some(Op::DeleteRange { end: store::prefix_end(&prefix), start: prefix });
                        }
                        def.stream = stream_from(Some(spec))?;
                        table.stream.clear();
                    }
                }
                changed = true;
            }
            if let Some(p) = update.deletion_protection {
                def.deletion_protection = p;
                changed = true;
            }
            if let Some(c) = update.table_class {
                def.table_class = c;
                changed = true;
            }
            if !changed {
                return Err(DynamoError::validation(
                    "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates or SSESpecification or ReplicaUpdates is required",
                ));
            }
            let keys: Vec<&KeySchema> =
                std::iter::once(&def.key).chain(def.global.iter().chain(&def.local).map(|i| &i.key)).collect();
            let used: HashSet<&str> = keys.iter().flat_map(|k| k.names()).collect();
            def.attributes.retain(|a| used.contains(a.name.as_str()));
            table.indexes.retain(|i| !i.global || def.global.iter().any(|g| g.name == i.spec.name));
            for spec in new_indexes {
                table.indexes.push(SecondaryIndex {
                    spec,
                    global: true,
                    parts: Partitions::new(&[0], self.options.partition_bytes),
                });
                let at = table.indexes.len() - 1;
                table.backfill(at);
            }
            for index in &mut table.indexes {
                if let Some(g) = def.global.iter().find(|g| g.name == index.spec.name) {
                    index.spec = g.clone();
                }
            }
            table.def = def;
            table.def.partitions = table.partition_map();
            let description = describe(&table);
            let mut ops = vec![Op::put(storage::table_key(id), storage::encode(&table.def))];
            ops.extend(dropped_stream);
            let commit = self.store.txn(Txn::ops(ops));
            (description, commit)
        };
        commit.await?;
        Ok(description)
    }

    /// (enabled, attribute) of the table's TTL.
    pub fn describe_ttl(&self, id: &TableId) -> Result<Option<String>, DynamoError> {
        Ok(lock(&self.table(id)?).def.ttl_attribute.clone())
    }

    pub async fn update_ttl(&self, id: &TableId, enabled: bool, attribute: &str) -> Result<(), DynamoError> {
        let cell = self.table(id)?;
        let commit = {
            let mut table = lock(&cell);
            match (&table.def.ttl_attribute, enabled) {
                (Some(a), _) if a != attribute => {
                    return Err(DynamoError::validation(format!(
                        "TimeToLive is active on a different AttributeName: current AttributeName is {a}"
                    )));
                }
                (Some(_), true) => return Err(DynamoError::validation("TimeToLive is already enabled")),
                (None, false) => return Err(DynamoError::validation("TimeToLive is already disabled")),
                _ => {}
            }
            // DynamoDB takes up to an hour to apply a change and refuses another meanwhile.
            let now = now_ms();
            if table.def.ttl_changed_ms.is_some_and(|at| now < at + TTL_CHANGE_WINDOW_MS) {
                return Err(DynamoError::validation(
                    "Time to live has been modified multiple times within a fixed interval",
                ));
            }
            table.def.ttl_changed_ms = Some(now);
            table.def.ttl_attribute = enabled.then(|| attribute.to_string());
            table.reindex_expiries();
            self.store.txn(Txn::ops(vec![Op::put(storage::table_key(id), storage::encode(&table.def))]))
        };
        commit.await?;
        Ok(())
    }

    fn table_by_arn(&self, arn: &str) -> Result<(TableId, crate::TableCell), DynamoError> {
        let id = TableId::from_arn(arn).ok_or_else(|| {
            DynamoError::validation(format!("Invalid TableArn: Invalid ResourceArn provided as input {arn}"))
        })?;
        let cell = self.registry().get(&id).cloned().ok_or_else(|| {
            DynamoError::ResourceNotFound(format!("Requested resource not found: ResourcArn: {arn} not found"))
        })?;
        Ok((id, cell))
    }

    pub fn list_tags(&self, arn: &str) -> Result<Vec<(String, String)>, DynamoError> {
        let (_, cell) = self.table_by_arn(arn)?;
        Ok(lock(&cell).def.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Adds `add` and removes `remove` from the table's tags.
    pub async fn change_tags(
        &self,
        arn: &str,
        add: Vec<(String, String)>,
        remove: Vec<String>,
    ) -> Result<(), DynamoError> {
        let (id, cell) = self.table_by_arn(arn)?;
        let commit = {
            let mut table = lock(&cell);
            if let Some((k, _)) = add.iter().find(|(k, _)| k.starts_with("aws:")) {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Tag key {k} uses the reserved prefix aws:, which is for AWS use only"
                )));
            }
            let mut tags = table.def.tags.clone();
            for (k, v) in add {
                tags.insert(k, v);
            }
            for k in remove {
                tags.remove(&k);
            }
            if tags.len() > MAX_TAGS {
                return Err(DynamoError::LimitExceeded("The number of tags exceeds the limit of 50".into()));
            }
            table.def.tags = tags;
            self.store.txn(Txn::ops(vec![Op::put(storage::table_key(&id), storage::encode(&table.def))]))
        };
        commit.await?;
        Ok(())
    }

    /// The partition map of the table (`""`) and of each index.
    pub fn partitions(&self, id: &TableId) -> Result<BTreeMap<String, Vec<PartitionView>>, DynamoError> {
        let cell = self.table(id)?;
        let table = lock(&cell);
        let now = now_s();
        let view = |parts: &Partitions| {
            parts
                .parts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (read, write) = p.meter.last_minute(now);
                    PartitionView {
                        id: i,
                        hash_start: p.start,
                        hash_end: parts.parts.get(i + 1).map_or(u64::MAX, |n| n.start - 1),
                        items: p.items,
                        bytes: p.bytes,
                        read_units: read,
                        write_units: write,
                    }
                })
                .collect::<Vec<_>>()
        };
        Ok(std::iter::once((String::new(), view(&table.parts)))
            .chain(table.indexes.iter().map(|i| (i.spec.name.clone(), view(&i.parts))))
            .collect())
    }

    /// Names of the tables of an account and region (for the console).
    pub fn table_ids(&self) -> Vec<TableId> {
        let mut ids: Vec<TableId> = self.registry().keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn describe(table: &Table) -> TableDescription {
    TableDescription {
        def: table.def.clone(),
        status: "ACTIVE",
        item_count: table.parts.len_items(),
        size_bytes: table.parts.len_bytes(),
        index_sizes: table
            .indexes
            .iter()
            .map(|i| (i.spec.name.clone(), (i.parts.len_items(), i.parts.len_bytes())))
            .collect(),
    }
}
