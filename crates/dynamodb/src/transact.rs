//! TransactWriteItems and TransactGetItems: all-or-nothing across tables. Every table involved
//! is locked (in a fixed order), every condition is checked, then every write is applied and
//! committed in one store transaction, so a crash leaves all of it or none of it.

use std::sync::{Arc, MutexGuard};

use md5::{Digest, Md5};
use store::{Op, Txn};

use crate::data::{Consumed, Exprs, check_item, key_from};
use crate::expr::{self, Condition, Placeholders, Update};
use crate::model::{CancellationReason, DynamoError, TableId};
use crate::table::{Table, read_units};
use crate::value::{Item, item_size};
use crate::{DynamoDb, TableCell, lock, now_s, storage};

#[derive(Clone, Debug)]
pub enum TransactWriteKind {
    Put { item: Item },
    Update { key: Item, update: String },
    Delete { key: Item },
    ConditionCheck { key: Item },
}

#[derive(Clone, Debug)]
pub struct TransactWrite {
    pub table: TableId,
    pub kind: TransactWriteKind,
    pub condition: Option<String>,
    pub return_old_on_failure: bool,
    pub exprs: Exprs,
}

#[derive(Clone, Debug)]
pub struct TransactGet {
    pub table: TableId,
    pub key: Item,
    pub projection: Option<String>,
    pub exprs: Exprs,
}

/// A write of a transaction, parsed: from TransactWriteItems or from PartiQL's ExecuteTransaction.
pub(crate) struct Planned {
    pub table: TableId,
    pub action: Action,
    pub condition: Option<Condition>,
    pub return_old_on_failure: bool,
    /// The cancellation reason when the condition fails (PartiQL's INSERT says DuplicateItem).
    pub failure_code: &'static str,
}

pub(crate) enum Action {
    Put(Item),
    Update(Item, Update),
    Delete(Item),
    Check(Item),
}

/// How long a ClientRequestToken makes a retry idempotent.
const TOKEN_WINDOW_S: u64 = 600;

/// Locks the tables named by `ids` in id order; the guards come back in `ids` order of first use.
pub(crate) fn lock_all<'a>(cells: &'a [(TableId, TableCell)]) -> Vec<(TableId, MutexGuard<'a, Table>)> {
    cells.iter().map(|(id, cell)| (id.clone(), lock(cell))).collect()
}

impl DynamoDb {
    pub(crate) fn cells(&self, ids: impl Iterator<Item = TableId>) -> Result<Vec<(TableId, TableCell)>, DynamoError> {
        let mut cells: Vec<(TableId, TableCell)> = Vec::new();
        for id in ids {
            if !cells.iter().any(|(c, _)| *c == id) {
                let cell = self.table(&id)?;
                cells.push((id, cell));
            }
        }
        // A fixed order, so that two transactions never wait on each other.
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(cells)
    }

    pub async fn transact_write(
        &self,
        account: &str,
        actions: Vec<TransactWrite>,
        token: Option<String>,
    ) -> Result<Vec<Consumed>, DynamoError> {
        if actions.is_empty() || actions.len() > 100 {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length {}",
                if actions.is_empty() { "greater than or equal to 1" } else { "less than or equal to 100" }
            )));
        }
        // The token is kept in the store with the transaction's writes, so a retry after a
        // restart is recognised too; expired tokens leave with the next transaction that has one.
        let mut token_ops = Vec::new();
        if let Some(token) = &token {
            let digest = Md5::digest(format!("{actions:?}").as_bytes());
            let fingerprint = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
            let now = now_s();
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.retain(|(account, token), (_, at)| {
                let live = *at + TOKEN_WINDOW_S > now;
                if !live {
                    token_ops.push(Op::delete(storage::token_key(account, token)));
                }
                live
            });
            match tokens.get(&(account.to_string(), token.clone())) {
                Some((f, _)) if *f != fingerprint => {
                    return Err(DynamoError::IdempotentParameterMismatch(
                        "Transaction request cannot be retried with a different set of parameters using the same client request token".into(),
                    ));
                }
                // A retry of a transaction that succeeded: it is not applied again.
                Some(_) => return Ok(Vec::new()),
                None => {}
            }
            tokens.insert((account.to_string(), token.clone()), (fingerprint, now));
            token_ops.push(Op::put(storage::token_key(account, token), storage::encode(&(fingerprint, now))));
        }
        let result = self.transact_write_once(actions, token_ops).await;
        if result.is_err()
            && let Some(token) = token
        {
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&(account.to_string(), token));
        }
        result
    }

    async fn transact_write_once(
        &self,
        actions: Vec<TransactWrite>,
        extra: Vec<Op>,
    ) -> Result<Vec<Consumed>, DynamoError> {
        // Parse every expression first: a bad one fails the whole request.
        let mut planned = Vec::new();
        for action in actions {
            let mut p = Placeholders::new(&action.exprs.names, &action.exprs.values);
            let kind = match action.kind {
                TransactWriteKind::Put { item } => Action::Put(item),
                TransactWriteKind::Update { key, update } => Action::Update(key, expr::parse_update(&update, &mut p)?),
                TransactWriteKind::Delete { key } => Action::Delete(key),
                TransactWriteKind::ConditionCheck { key } => Action::Check(key),
            };
            let condition = action
                .condition
                .as_deref()
                .map(|c| expr::parse_condition(c, "ConditionExpression", &mut p))
                .transpose()?;
            if matches!(kind, Action::Check(_)) && condition.is_none() {
                return Err(DynamoError::validation(
                    "The ConditionExpression parameter must be specified for a ConditionCheck",
                ));
            }
            p.finish()?;
            planned.push(Planned {
                table: action.table,
                action: kind,
                condition,
                return_old_on_failure: action.return_old_on_failure,
                failure_code: "ConditionalCheckFailed",
            });
        }
        self.apply_transaction(planned, extra).await
    }

    /// Checks every condition of `actions` under the locks of all their tables, then applies
    /// all of them in one store transaction with `extra`, or none.
    pub(crate) async fn apply_transaction(
        &self,
        actions: Vec<Planned>,
        extra: Vec<Op>,
    ) -> Result<Vec<Consumed>, DynamoError> {
        let cells = self.cells(actions.iter().map(|a| a.table.clone()))?;
        let (commit, consumed) = {
            let mut guards = lock_all(&cells);
            let mut planned = Vec::new();
            let mut reasons = Vec::new();
            let mut failed = false;
            for action in &actions {
                let Some(at) = guards.iter().position(|(id, _)| *id == action.table) else { continue };
                let table = &guards[at].1;
                let (pk, sk) = match &action.action {
                    Action::Put(item) => check_item(&table.def, item)?,
                    Action::Update(key, _) | Action::Delete(key) | Action::Check(key) => key_from(&table.def, key)?,
                };
                if planned.iter().any(|(a, p, s, _, _)| *a == at && *p == pk && *s == sk) {
                    return Err(DynamoError::validation(
                        "Transaction request cannot include multiple operations on one item",
                    ));
                }
                let current = table.get(&pk, &sk).cloned();
                let empty = Item::new();
                let holds = action.condition.as_ref().is_none_or(|c| c.eval(current.as_deref().unwrap_or(&empty)));
                if !holds {
                    failed = true;
                    reasons.push(CancellationReason {
                        code: action.failure_code.into(),
                        message: Some("The conditional request failed".into()),
                        item: if action.return_old_on_failure { current.map(|c| c.as_ref().clone()) } else { None },
                    });
                    continue;
                }
                let new = match &action.action {
                    Action::Put(item) => Some(Some(item.clone())),
                    Action::Delete(_) => Some(None),
                    Action::Check(_) => None,
                    Action::Update(key, update) => {
                        let mut new = current.as_ref().map_or_else(|| key.clone(), |c| c.as_ref().clone());
                        update.apply(&mut new)?;
                        check_item(&table.def, &new)?;
                        Some(Some(new))
                    }
                };
                reasons.push(CancellationReason { code: "None".into(), message: None, item: None });
                planned.push((at, pk, sk, new, current.as_ref().map_or(0, |c| item_size(c))));
            }
            // With --enforce-capacity, a write to a partition out of capacity cancels the
            // transaction with a throttling reason, as DynamoDB does.
            for (reason, (at, pk, ..)) in reasons.iter_mut().filter(|r| r.code == "None").zip(&planned) {
                if self.admit(&mut guards[*at].1, pk, true).is_err() {
                    failed = true;
                    reason.code = "ThrottlingError".into();
                    reason.message = Some("Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your table or index so please try again shortly. If exceptions persist, check if you have a hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html.".into());
                }
            }
            if failed {
                return Err(DynamoError::TransactionCanceled(reasons));
            }
            let mut ops = Vec::new();
            let mut consumed: Vec<(usize, Consumed)> = Vec::new();
            let now = now_s();
            for (at, pk, sk, new, size) in planned {
                let table = &mut guards[at].1;
                let c = match new {
                    Some(new) => {
                        let (_, written) = table.write(pk, sk, new, now, false, &mut ops);
                        Consumed::writes(&table.def.id.name, &written, 2.0)
                    }
                    // A condition check reads the item, transactionally: two read units per 4 KB.
                    None => {
                        let mut c = Consumed::writes(&table.def.id.name, &Default::default(), 2.0);
                        c.read = read_units(size, true) * 2.0;
                        c.table_units = c.read;
                        c
                    }
                };
                match consumed.iter_mut().find(|(a, _)| *a == at) {
                    Some((_, existing)) => existing.merge(c),
                    None => consumed.push((at, c)),
                }
            }
            ops.extend(extra);
            (self.store.txn(Txn::ops(ops)), consumed.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
        };
        commit.await?;
        Ok(consumed)
    }

    /// TransactGetItems: a consistent snapshot of every item, in request order.
    pub async fn transact_get(
        &self,
        gets: Vec<TransactGet>,
    ) -> Result<(Vec<Option<Item>>, Vec<Consumed>), DynamoError> {
        if gets.is_empty() || gets.len() > 100 {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length {}",
                if gets.is_empty() { "greater than or equal to 1" } else { "less than or equal to 100" }
            )));
        }
        let mut projections = Vec::new();
        for get in &gets {
            let mut p = Placeholders::new(&get.exprs.names, &get.exprs.values);
            projections.push(get.projection.as_deref().map(|t| expr::parse_projection(t, &mut p)).transpose()?);
            p.finish()?;
        }
        let cells = self.cells(gets.iter().map(|g| g.table.clone()))?;
        let mut found: Vec<Option<Arc<Item>>> = Vec::new();
        let mut consumed: Vec<Consumed> = Vec::new();
        {
            let guards = lock_all(&cells);
            for get in &gets {
                let Some((_, table)) = guards.iter().find(|(id, _)| *id == get.table) else { continue };
                let (pk, sk) = key_from(&table.def, &get.key)?;
                if gets.iter().filter(|g| g.table == get.table && g.key == get.key).count() > 1 {
                    return Err(DynamoError::validation(
                        "Transaction request cannot include multiple operations on one item",
                    ));
                }
                let item = table.get(&pk, &sk).cloned();
                let units = read_units(item.as_ref().map_or(0, |i| item_size(i)), true) * 2.0;
                match consumed.iter_mut().find(|c| c.table == get.table.name) {
                    Some(c) => {
                        c.read += units;
                        c.table_units += units;
                    }
                    None => consumed.push(Consumed {
                        table: get.table.name.clone(),
                        read: units,
                        table_units: units,
                        ..Default::default()
                    }),
                }
                found.push(item);
            }
        }
        let items = found
            .into_iter()
            .zip(projections)
            .map(|(item, projection)| {
                item.map(|i| match &projection {
                    Some(paths) => expr::project(&i, paths),
                    None => i.as_ref().clone(),
                })
            })
            .collect();
        Ok((items, consumed))
    }
}
