//! Amazon DynamoDB, the domain: tables whose items live on partitions chosen by hashing the
//! partition key, the expression language, indexes, transactions, streams and TTL.
//!
//! Like SQS, the working state is in memory (`Table`, behind a mutex per table) and written
//! through to the store: a change is made in memory under the table's lock, its store
//! transaction is submitted before the lock is released (so the store sees one table's changes in
//! the order the lock gave them), and the request answers once that transaction is durable.

mod control;
mod data;
pub mod expr;
pub mod model;
pub mod number;
pub mod partiql;
mod partition;
mod statement;
mod storage;
mod streams;
mod table;
mod transact;
pub mod value;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use store::Store;

pub use control::{CreateTable, IndexUpdate, NewIndex, PartitionView, TableDescription, TableUpdate};
pub use data::{
    BatchGet, BatchWrite, Consumed, DeleteItem, Exprs, GetItem, ItemCollection, KeySource, PageOutput, PutItem,
    QueryInput, ReadOutput, ReturnValues, ScanInput, Select, Source, UpdateItem, WriteOutput, WriteRequest,
};
pub use model::{
    CancellationReason, DynamoError, IndexSpec, KeyAttr, KeySchema, Projection, ScalarType, StreamView, TableDef,
    TableId, Throughput,
};
pub use number::Number;
pub use statement::StatementOutput;
pub use streams::{ShardIteratorType, StreamDescription, StreamRecordView};
pub use table::StreamRecord;
pub use transact::{TransactGet, TransactWrite, TransactWriteKind};
pub use value::{Item, KeyValue, Value};

use table::Table;

/// How the service behaves, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// A partition splits when it holds more than this many bytes (DynamoDB: 10 GB).
    pub partition_bytes: usize,
    /// How often expired items (TTL) are looked for.
    pub ttl_interval: Duration,
    /// Throttle requests per partition by provisioned (or on-demand partition) capacity.
    pub enforce_capacity: bool,
    /// The largest item collection of a table with local secondary indexes (DynamoDB: 10 GB).
    pub item_collection_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partition_bytes: 1 << 20,
            ttl_interval: Duration::from_secs(5),
            enforce_capacity: false,
            item_collection_bytes: 10 << 30,
        }
    }
}

type TableCell = Arc<Mutex<Table>>;

pub struct DynamoDb {
    store: Arc<dyn Store>,
    options: Options,
    tables: RwLock<HashMap<TableId, TableCell>>,
    /// TransactWriteItems client tokens of the last 10 minutes: token → (request fingerprint, when).
    tokens: Mutex<HashMap<(String, String), (u64, u64)>>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_s() -> u64 {
    now_ms() / 1000
}

fn lock(cell: &TableCell) -> MutexGuard<'_, Table> {
    cell.lock().unwrap_or_else(|p| p.into_inner())
}

impl DynamoDb {
    pub async fn open(store: Arc<dyn Store>, options: Options) -> Result<Arc<DynamoDb>, DynamoError> {
        let tables = storage::load(store.as_ref(), options.partition_bytes).await?;
        let tables = tables.into_iter().map(|t| (t.def.id.clone(), Arc::new(Mutex::new(t)))).collect();
        let tokens = storage::load_tokens(store.as_ref()).await?.into_iter().collect();
        let db = Arc::new(DynamoDb {
            store,
            options: options.clone(),
            tables: RwLock::new(tables),
            tokens: Mutex::new(tokens),
        });
        let weak = Arc::downgrade(&db);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(options.ttl_interval);
            loop {
                tick.tick().await;
                let Some(db) = weak.upgrade() else { return };
                if let Err(error) = db.expire().await {
                    tracing::warn!(error = &error as &dyn std::error::Error, "expiring DynamoDB items failed");
                }
            }
        });
        Ok(db)
    }

    /// Forgets everything held in memory; the caller has wiped the store.
    pub fn reset(&self) {
        self.registry_mut().clear();
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// (tables, items) for the state summary.
    pub fn summary(&self) -> (usize, usize) {
        let tables = self.registry();
        (tables.len(), tables.values().map(|t| lock(t).parts.len_items()).sum())
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TableId, TableCell>> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TableId, TableCell>> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self, id: &TableId) -> Result<TableCell, DynamoError> {
        self.registry().get(id).cloned().ok_or_else(DynamoError::table_not_found)
    }

    /// With `--enforce-capacity`, refuses a request when the partition owning `pk` has used its
    /// share of the table's capacity and its burst. Provisioned tables share their provisioned
    /// units; on-demand tables get DynamoDB's per-partition maximum (3,000 reads, 1,000 writes).
    pub(crate) fn admit(&self, table: &mut Table, pk: &KeyValue, write: bool) -> Result<(), DynamoError> {
        if !self.options.enforce_capacity {
            return Ok(());
        }
        let rates = match table.def.throughput {
            Some(t) => (t.read as f64, t.write as f64),
            None => (3000.0 * table.parts.parts.len() as f64, 1000.0 * table.parts.parts.len() as f64),
        };
        if table.parts.admit(pk, now_ms(), rates, write) {
            Ok(())
        } else {
            Err(DynamoError::ProvisionedThroughputExceeded)
        }
    }

    /// Deletes items whose TTL has passed, as the service (stream records say so).
    async fn expire(&self) -> Result<(), DynamoError> {
        let now = now_s();
        let cells: Vec<TableCell> = self.registry().values().cloned().collect();
        let mut pending = Vec::new();
        for cell in cells {
            let mut table = lock(&cell);
            if table.def.ttl_attribute.is_none() {
                continue;
            }
            let due: Vec<_> = table.expiries.iter().take_while(|(at, _, _)| *at <= now as i64).cloned().collect();
            if due.is_empty() {
                continue;
            }
            let mut ops = Vec::new();
            for (_, pk, sk) in due {
                table.write(pk, sk, None, now, true, &mut ops);
            }
            pending.push(self.store.txn(store::Txn::ops(ops)));
        }
        for commit in pending {
            commit.await?;
        }
        Ok(())
    }
}
