//! The one store under every Stratus service.
//!
//! Its model is etcd's: a flat, ordered map of byte keys; every committed transaction that changes
//! something gets the next value of one global revision; a transaction is a list of comparisons
//! followed by the operations to run when they all hold (or the ones to run when one does not);
//! `watch(prefix, from_revision)` replays the history kept since `from_revision`, then streams live
//! changes. The [`Store`] trait is that model and nothing more, so an etcd cluster can back it later.
//!
//! [`LocalStore`] implements it over an embedded [`Engine`]: redb on disk, or a `BTreeMap` for
//! `--ephemeral`. Concurrent writes go through one committer thread that batches whatever
//! transactions are waiting into one engine commit (one fsync of a write-ahead log), and
//! acknowledges each only after that commit is durable (group commit); with [`Fsync::Every`], once
//! it is written to the log, which survives the process but not a power loss, and a transaction
//! that finds itself alone is committed by its caller ([`CommitPath`]).

mod engine;
mod history;
mod local;
mod memory;
mod paced;
mod redb_engine;
mod wal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;

pub use engine::{CommitPath, Engine};
pub use local::{LocalStore, StoreOptions};
pub use wal::Fsync;

/// A store revision. 0 means "before anything was written"; the first write is revision 1.
pub type Revision = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    // Shared, not owned: the ephemeral engine's map, its history and every reader hold the same
    // bytes, so a record costs one copy of its key and value however many hold it.
    pub key: Arc<[u8]>,
    pub value: Arc<[u8]>,
    /// The revision that created this key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last change to this key.
    pub mod_revision: Revision,
    /// How many times the key was put since it was created; 1 after the first put.
    pub version: u64,
}

/// A condition checked at commit time, inside the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's last change was at `revision`; 0 means the key must not exist.
    ModRevision { key: Vec<u8>, revision: Revision },
    /// The key exists and holds exactly `value`.
    Value { key: Vec<u8>, value: Vec<u8> },
}

impl Compare {
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Compare::ModRevision { key: key.into(), revision: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        /// Shared: the engine keeps these bytes as they are, so a caller that keeps the value
        /// too (SQS keeps each message's record) holds no second copy.
        value: Arc<[u8]>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`; an empty `end` means "to the end of the keyspace".
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Op {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Arc<[u8]>>) -> Self {
        Op::Put { key: key.into(), value: value.into() }
    }
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// If every comparison holds, run `success`, else run `failure`; atomically either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// An unconditional transaction.
    pub fn ops(ops: Vec<Op>) -> Self {
        Txn { compares: Vec::new(), success: ops, failure: Vec::new() }
    }
}

/// When a transaction's future resolves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once the transaction is as durable as the store is configured to make it: with
    /// [`Fsync::Always`], synced to the disk.
    #[default]
    Synced,
    /// Once it is written to the store's log, before the sync that follows within milliseconds:
    /// it survives the process being killed, and a power loss may lose it (as it may lose
    /// everything of the last interval with [`Fsync::Every`]). For changes that may be lost
    /// without breaking a promise, such as a queue receive's in-flight state, whose loss only
    /// delivers the message again, which at-least-once delivery allows.
    Written,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the comparisons held (and so `success` ran).
    pub succeeded: bool,
    /// The store's revision after this transaction: its own if it changed anything.
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For a delete, `kv` holds the key and the deleting revision only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Cloneable, because one failed group commit fails every transaction in it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine failed")]
    Engine(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("revision {requested} was compacted; history starts at revision {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn engine(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Engine(Arc::new(source))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store, as every service sees it. Object-safe, so services hold an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;
    /// Keys in `[start, end)` in key order; an empty `end` means no upper bound.
    async fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>>;
    async fn count(&self, start: &[u8], end: &[u8]) -> Result<u64>;
    /// Submits the transaction now, in call order, and returns a future that resolves once it is
    /// durable. Submitting is synchronous so that a caller holding its own lock commits in that
    /// lock's order, and so that dropping the future does not withdraw the transaction. The commit
    /// itself may run when the future is first polled, in the caller's thread: await it outside
    /// such a lock.
    fn txn(&self, txn: Txn) -> TxnFuture {
        self.txn_with(txn, Durability::Synced)
    }
    /// [`Store::txn`], resolving as `durability` says.
    fn txn_with(&self, txn: Txn, durability: Durability) -> TxnFuture;
    /// Events on keys starting with `prefix`, from `from` (0: only changes after now).
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch>;
    /// Drops history before `revision`; watches from before it fail with `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// The last committed revision.
    fn revision(&self) -> Revision;
    /// Finishes the writes already submitted and refuses new ones.
    async fn close(&self);
    /// `"redb"`, `"memory"`, later `"etcd"`.
    fn backend(&self) -> &'static str;

    fn put(&self, key: &[u8], value: &[u8]) -> TxnFuture {
        self.txn(Txn::ops(vec![Op::put(key, value)]))
    }
    fn delete(&self, key: &[u8]) -> TxnFuture {
        self.txn(Txn::ops(vec![Op::delete(key)]))
    }
}

/// A submitted transaction, resolving once it is durable.
pub struct TxnFuture(Submitted);

enum Submitted {
    /// Committed when it was submitted (the memory engine commits in the caller's thread); `None`
    /// once the outcome was taken.
    Done(Option<Result<TxnResponse>>),
    Waiting(Pin<Box<dyn Future<Output = Result<TxnResponse>> + Send + 'static>>),
}

impl TxnFuture {
    pub(crate) fn done(outcome: Result<TxnResponse>) -> Self {
        Self(Submitted::Done(Some(outcome)))
    }

    pub(crate) fn waiting(commit: impl Future<Output = Result<TxnResponse>> + Send + 'static) -> Self {
        Self(Submitted::Waiting(Box::pin(commit)))
    }

    /// The outcome, if the transaction was committed (or refused) when it was submitted: its
    /// caller can then finish under the lock it submitted under instead of taking it again. The
    /// future is spent once this returns it.
    pub fn outcome_now(&mut self) -> Option<Result<TxnResponse>> {
        match &mut self.0 {
            Submitted::Done(outcome) => outcome.take(),
            Submitted::Waiting(_) => None,
        }
    }
}

impl Future for TxnFuture {
    type Output = Result<TxnResponse>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Submitted::Done(outcome) => Poll::Ready(outcome.take().expect("a TxnFuture polled after it resolved")),
            Submitted::Waiting(commit) => commit.as_mut().poll(cx),
        }
    }
}

/// A stream of events from [`Store::watch`].
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<Event>>,
}

impl Watch {
    /// The next event; `None` once the store closes. An `Err` ends the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

/// The end of the range holding every key that starts with `prefix` (etcd's `prefix_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new() // all 0xff (or empty): no upper bound
}

/// One service's slice of the store: every key it writes starts with `<name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    prefix: Vec<u8>,
}

impl Keyspace {
    pub fn new(name: &str) -> Self {
        Keyspace { prefix: format!("{name}/").into_bytes() }
    }
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }
}

/// A durable store in `dir` (created if missing).
pub fn open(dir: &std::path::Path, options: StoreOptions) -> Result<Arc<dyn Store>> {
    let engine = redb_engine::RedbEngine::open(dir, options.checkpoint_bytes, options.fsync)?;
    Ok(Arc::new(LocalStore::start(Arc::new(engine), options)?))
}

/// A store that lives in memory only, with the same semantics as [`open`].
pub fn ephemeral(options: StoreOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(LocalStore::start(Arc::new(memory::MemoryEngine::default()), options)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"sqs/"), b"sqs0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(prefix_end(b""), Vec::<u8>::new());
    }

    #[test]
    fn keyspace_prefixes_keys() {
        let ks = Keyspace::new("sqs");
        assert_eq!(ks.key(b"q1"), b"sqs/q1".to_vec());
    }
}
