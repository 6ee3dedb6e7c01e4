//! PartiQL statements executed against tables: ExecuteStatement, BatchExecuteStatement and
//! ExecuteTransaction. A SELECT whose WHERE fixes the partition key reads only that item
//! collection (a Query); otherwise it scans. INSERT fails on an existing key; UPDATE and DELETE
//! need the whole primary key in their WHERE, which must hold for the item, as in DynamoDB.

use std::sync::Arc;

use crate::data::{Consumed, check_item, key_from};
use crate::expr::{self, Condition, Path};
use crate::model::{DynamoError, KeySchema, TableId};
use crate::partiql::{self, Statement};
use crate::partition::SortKey;
use crate::storage;
use crate::table::{Table, read_units};
use crate::transact::{Action, Planned, lock_all};
use crate::value::{Item, KeyValue, Value, item_size};
use crate::{DynamoDb, lock};

/// What one statement returned.
#[derive(Clone, Debug, Default)]
pub struct StatementOutput {
    pub items: Vec<Item>,
    pub next_token: Option<String>,
    pub consumed: Consumed,
}

fn validation(e: expr::ExprError) -> DynamoError {
    DynamoError::Validation(e.0)
}

/// The item key named by a WHERE's equalities (the whole primary key, or an error).
fn key_of_where(key: &KeySchema, condition: &Condition) -> Result<Item, DynamoError> {
    let equalities = partiql::key_equalities(condition);
    let mut item = Item::new();
    for name in key.names() {
        let Some((_, v)) = equalities.iter().find(|(n, _)| n == name) else {
            return Err(DynamoError::validation(
                "Where clause does not contain a mandatory equality on all key attributes",
            ));
        };
        item.insert(name.to_string(), v.clone());
    }
    Ok(item)
}

/// NextToken: the position after the last item read, hex-encoded.
fn token(pk: &KeyValue, sk: &SortKey) -> String {
    storage::encode(&(pk, sk)).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_token(text: &str) -> Result<(KeyValue, SortKey), DynamoError> {
    let invalid = || DynamoError::validation("Invalid NextToken");
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    postcard::from_bytes(&bytes).map_err(|_| invalid())
}

impl DynamoDb {
    fn table_named(&self, account: &str, region: &str, name: &str) -> TableId {
        TableId { account: account.to_string(), region: region.to_string(), name: name.to_string() }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn execute_statement(
        &self,
        account: &str,
        region: &str,
        text: &str,
        params: &[Value],
        consistent: bool,
        limit: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<StatementOutput, DynamoError> {
        let statement = partiql::parse(text, params).map_err(validation)?;
        match statement {
            Statement::Select { table, index, projection, condition } => {
                let id = self.table_named(account, region, &table);
                let start = next_token.map(parse_token).transpose()?;
                self.select(&id, index.as_deref(), projection.as_deref(), condition.as_ref(), consistent, limit, start)
            }
            Statement::Insert { table, item } => {
                self.write_statement(account, region, &table, |t| {
                    let (pk, sk) = check_item(&t.def, &item)?;
                    if t.get(&pk, &sk).is_some() {
                        return Err(DynamoError::DuplicateItem);
                    }
                    Ok(Some((pk, sk, Some(item))))
                })
                .await
            }
            Statement::Update { table, update, condition } => {
                self.write_statement(account, region, &table, |t| {
                    let (pk, sk) = key_from(&t.def, &key_of_where(&t.def.key, &condition)?)?;
                    let Some(current) = t.get(&pk, &sk).filter(|c| condition.eval(c)) else {
                        return Err(DynamoError::ConditionalCheckFailed(None));
                    };
                    let mut new = current.as_ref().clone();
                    update.apply(&mut new).map_err(validation)?;
                    check_item(&t.def, &new)?;
                    Ok(Some((pk, sk, Some(new))))
                })
                .await
            }
            Statement::Delete { table, condition } => {
                self.write_statement(account, region, &table, |t| {
                    let (pk, sk) = key_from(&t.def, &key_of_where(&t.def.key, &condition)?)?;
                    // Deleting what is not there succeeds and changes nothing, as in DynamoDB.
                    match t.get(&pk, &sk) {
                        None => Ok(None),
                        Some(current) if condition.eval(current) => Ok(Some((pk, sk, None))),
                        Some(_) => Err(DynamoError::ConditionalCheckFailed(None)),
                    }
                })
                .await
            }
        }
    }

    /// One PartiQL write: `decide` looks at the table and names the change to make, if any.
    async fn write_statement(
        &self,
        account: &str,
        region: &str,
        table: &str,
        decide: impl FnOnce(&Table) -> Result<Option<(KeyValue, SortKey, Option<Item>)>, DynamoError>,
    ) -> Result<StatementOutput, DynamoError> {
        let id = self.table_named(account, region, table);
        let cell = self.table(&id)?;
        let (written, commit) = {
            let mut t = lock(&cell);
            match decide(&t)? {
                Some((pk, sk, new)) => {
                    let committed = self.commit(&mut t, pk, sk, new)?;
                    (committed.written, Some(committed.commit))
                }
                None => (Default::default(), None),
            }
        };
        if let Some(commit) = commit {
            commit.await?;
        }
        Ok(StatementOutput { consumed: Consumed::writes(&id.name, &written, 1.0), ..Default::default() })
    }

    /// A SELECT: the item collection the WHERE names, or every item, filtered by the WHERE.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        id: &TableId,
        index: Option<&str>,
        projection: Option<&[Path]>,
        condition: Option<&Condition>,
        consistent: bool,
        limit: Option<usize>,
        start: Option<(KeyValue, SortKey)>,
    ) -> Result<StatementOutput, DynamoError> {
        let cell = self.table(id)?;
        let table = lock(&cell);
        let (parts, key) = match index {
            None => (&table.parts, &table.def.key),
            Some(name) => {
                let i = table.indexes.iter().find(|i| i.spec.name == name).ok_or_else(|| {
                    DynamoError::validation(format!("The table does not have the specified index: {name}"))
                })?;
                if i.global && consistent {
                    return Err(DynamoError::validation(
                        "Consistent reads are not supported on global secondary indexes",
                    ));
                }
                (&i.parts, &i.spec.key)
            }
        };
        let hash = condition
            .map(partiql::key_equalities)
            .unwrap_or_default()
            .into_iter()
            .find(|(n, v)| *n == key.hash.name && key.hash.kind.matches(v))
            .and_then(|(_, v)| KeyValue::from_value(&v));
        let mut read: Vec<(KeyValue, SortKey, Arc<Item>)> = Vec::new();
        let mut bytes = 0;
        let mut stopped = false;
        let mut take = |pk: &KeyValue, sk: &SortKey, item: &Arc<Item>| {
            bytes += item_size(item);
            if condition.is_none_or(|c| c.eval(item)) {
                read.push((pk.clone(), sk.clone(), item.clone()));
            }
            if limit.is_some_and(|l| read.len() >= l) || bytes >= 1 << 20 {
                stopped = true;
                return false;
            }
            true
        };
        match &hash {
            Some(pk) => {
                if let Some(collection) = parts.collection(pk) {
                    let after = start.as_ref().filter(|(spk, _)| spk == pk).map(|(_, sk)| sk);
                    for (sk, item) in collection.iter().filter(|(sk, _)| after.is_none_or(|a| *sk > a)) {
                        if !take(pk, sk, item) {
                            break;
                        }
                    }
                }
            }
            None => parts.scan(start.as_ref().map(|(pk, sk)| (pk, sk)), (0, u64::MAX), take),
        }
        let next_token = if stopped { read.last().map(|(pk, sk, _)| token(pk, sk)) } else { None };
        let mut consumed = Consumed { table: id.name.clone(), ..Default::default() };
        consumed.read = read_units(bytes, consistent);
        consumed.table_units = consumed.read;
        let items = read
            .into_iter()
            .map(|(_, _, item)| match projection {
                Some(paths) => expr::project(&item, paths),
                None => item.as_ref().clone(),
            })
            .collect();
        Ok(StatementOutput { items, next_token, consumed })
    }

    /// BatchExecuteStatement's statements must be all reads or all writes (those that parse; the
    /// others fail on their own).
    pub fn check_batch_statements(&self, statements: &[(String, Vec<Value>)]) -> Result<(), DynamoError> {
        let reads: Vec<bool> = statements
            .iter()
            .filter_map(|(text, params)| partiql::parse(text, params).ok())
            .map(|s| matches!(s, Statement::Select { .. }))
            .collect();
        if reads.iter().any(|r| *r) && reads.iter().any(|r| !*r) {
            return Err(DynamoError::validation(
                "Supplied statements must be either all reads or all writes; a batch cannot mix them",
            ));
        }
        Ok(())
    }

    /// ExecuteTransaction: all writes (applied together, or none) or all reads (by full key).
    pub async fn execute_transaction(
        &self,
        account: &str,
        region: &str,
        statements: Vec<(String, Vec<Value>)>,
    ) -> Result<Vec<Option<Item>>, DynamoError> {
        if statements.is_empty() || statements.len() > 100 {
            return Err(DynamoError::validation(
                "1 validation error detected: Value at 'transactStatements' failed to satisfy constraint: Member must have length less than or equal to 100",
            ));
        }
        let parsed: Vec<Statement> = statements
            .iter()
            .map(|(text, params)| partiql::parse(text, params))
            .collect::<Result<_, _>>()
            .map_err(validation)?;
        let reads = parsed.iter().filter(|s| matches!(s, Statement::Select { .. })).count();
        if reads != 0 && reads != parsed.len() {
            return Err(DynamoError::validation("Transaction must contain either all reads or all writes"));
        }
        if reads > 0 {
            // One snapshot of every table read, as TransactGetItems takes.
            let ids = parsed.iter().filter_map(|s| match s {
                Statement::Select { table, .. } => Some(self.table_named(account, region, table)),
                _ => None,
            });
            let cells = self.cells(ids)?;
            let guards = lock_all(&cells);
            let mut out = Vec::new();
            for statement in parsed {
                let Statement::Select { table, projection, condition, .. } = statement else { continue };
                let id = self.table_named(account, region, &table);
                let Some((_, t)) = guards.iter().find(|(g, _)| *g == id) else { continue };
                let condition = condition.ok_or_else(|| {
                    DynamoError::validation("Where clause does not contain a mandatory equality on all key attributes")
                })?;
                let key = key_of_where(&t.def.key, &condition)?;
                let (pk, sk) = key_from(&t.def, &key)?;
                let item = t.get(&pk, &sk).filter(|i| condition.eval(i)).map(|i| match &projection {
                    Some(paths) => expr::project(i, paths),
                    None => i.as_ref().clone(),
                });
                out.push(item);
            }
            return Ok(out);
        }
        let mut planned = Vec::new();
        for statement in parsed {
            let (table, action, condition, failure_code) = match statement {
                Statement::Insert { table, item } => {
                    let id = self.table_named(account, region, &table);
                    let key = lock(&self.table(&id)?).def.key.clone();
                    let not_there = Condition::AttributeNotExists(Path::attr(&key.hash.name));
                    (table, Action::Put(item), Some(not_there), "DuplicateItem")
                }
                Statement::Update { table, update, condition } => {
                    let id = self.table_named(account, region, &table);
                    let key = key_of_where(&lock(&self.table(&id)?).def.key, &condition)?;
                    (table, Action::Update(key, update), Some(condition), "ConditionalCheckFailed")
                }
                Statement::Delete { table, condition } => {
                    let id = self.table_named(account, region, &table);
                    let key = key_of_where(&lock(&self.table(&id)?).def.key, &condition)?;
                    (table, Action::Delete(key), Some(condition), "ConditionalCheckFailed")
                }
                Statement::Select { .. } => continue,
            };
            planned.push(Planned {
                table: self.table_named(account, region, &table),
                action,
                condition,
                return_old_on_failure: false,
                failure_code,
            });
        }
        self.apply_transaction(planned, Vec::new()).await?;
        Ok(Vec::new())
    }
}
