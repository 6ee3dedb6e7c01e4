//! [`LocalStore`]: the [`Store`] trait over an embedded [`Engine`], with group commit and watch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot};

use crate::engine::Engine;
use crate::{Event, KeyValue, Result, Revision, Store, StoreError, Txn, TxnFuture, TxnResponse, Watch};

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Every interval, history older than the previous interval's last revision is dropped, so a
    /// watch can always resume from any revision of at least the last interval (kube-apiserver
    /// compacts etcd the same way, every 5 minutes).
    pub compaction_interval: Duration,
    /// The most transactions one group commit takes.
    pub max_batch: usize,
    /// History is also compacted, oldest first, when what it holds passes this many bytes (keys
    /// and values), so that heavy write load cannot grow it without bound.
    pub history_limit_bytes: u64,
    /// The on-disk engine checkpoints (makes its B-tree durable and empties its write-ahead log)
    /// whenever the log grows past this. Larger means fewer page flushes, but more memory and a
    /// longer replay after a crash.
    pub checkpoint_bytes: u64,
    /// When the on-disk engine's log reaches the disk.
    pub fsync: crate::Fsync,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compaction_interval: Duration::from_secs(300),
            max_batch: 1024,
            history_limit_bytes: 256 << 20,
            checkpoint_bytes: 8 << 20,
            fsync: crate::Fsync::Always,
        }
    }
}

/// Revisions replayed per history read while a watch catches up.
const REPLAY_CHUNK: u64 = 256;
/// Committed batches buffered for live watchers; one that falls further behind replays from history.
const LIVE_BUFFER: usize = 1024;

enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

struct Shared {
    engine: Arc<dyn Engine>,
    revision: AtomicU64,
    compacted: AtomicU64,
    /// (revision, bytes) of the history kept, oldest first, and their sum.
    history: Mutex<(VecDeque<(Revision, u64)>, u64)>,
    history_limit_bytes: u64,
}

impl Shared {
    /// Called by whoever committed `events`, in commit order: counts them into the history kept
    /// and compacts the oldest half when the limit is passed.
    fn account(&self, events: &[Event]) -> Result<()> {
        let compact_to = {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            let (entries, total) = &mut *history;
            for event in events {
                let bytes = (event.kv.key.len() + event.kv.value.len() + 32) as u64;
                match entries.back_mut() {
                    Some((revision, sum)) if *revision == event.revision() => *sum += bytes,
                    _ => entries.push_back((event.revision(), bytes)),
                }
                *total += bytes;
            }
            if *total <= self.history_limit_bytes {
                return Ok(());
            }
            let mut compact_to = 0;
            while *total > self.history_limit_bytes / 2
                && let Some((revision, bytes)) = entries.pop_front()
            {
                *total -= bytes;
                compact_to = revision + 1;
            }
            compact_to
        };
        self.compact(compact_to)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let revision = revision.min(self.revision.load(Ordering::Acquire));
        if revision <= self.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        // Announce before deleting, so a watcher that read a partly compacted history sees it.
        self.compacted.store(revision, Ordering::Release);
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            let (entries, total) = &mut *history;
            while entries.front().is_some_and(|(r, _)| *r < revision) {
                if let Some((_, bytes)) = entries.pop_front() {
                    *total -= bytes;
                }
            }
        }
        self.engine.compact(revision)
    }
}

pub struct LocalStore {
    shared: Arc<Shared>,
    /// Held while committing in the caller, for engines that do not group commits.
    inline_commit: Mutex<()>,
    requests: RwLock<Option<mpsc::Sender<Request>>>,
    changes: RwLock<Option<broadcast::Sender<Arc<[Event]>>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl LocalStore {
    pub fn start(engine: Arc<dyn Engine>, options: StoreOptions) -> Result<Self> {
        let (revision, compacted) = engine.revisions()?;
        let shared = Arc::new(Shared {
            engine,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            history: Mutex::new((VecDeque::new(), 0)),
            history_limit_bytes: options.history_limit_bytes,
        });
        let (requests, inbox) = mpsc::channel();
        let (changes, _) = broadcast::channel(LIVE_BUFFER);
        let (stopped_tx, stopped) = oneshot::channel();
        let committer = Committer { shared: shared.clone(), inbox, changes: changes.clone(), options };
        std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || {
                committer.run();
                let _ = stopped_tx.send(());
            })
            .map_err(StoreError::engine)?;
        Ok(LocalStore {
            shared,
            inline_commit: Mutex::new(()),
            requests: RwLock::new(Some(requests)),
            changes: RwLock::new(Some(changes)),
            stopped: Mutex::new(Some(stopped)),
        })
    }

    fn submit(&self, request: Request) -> Result<()> {
        let requests = self.requests.read().unwrap_or_else(PoisonError::into_inner);
        requests.as_ref().ok_or(StoreError::Closed)?.send(request).map_err(|_| StoreError::Closed)
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.shared.engine.get(key)
    }

    async fn range(&self, start: &[u8], end: &[u8], limit: Option<usize>) -> Result<Vec<KeyValue>> {
        self.shared.engine.range(start, end, limit)
    }

    async fn count(&self, start: &[u8], end: &[u8]) -> Result<u64> {
        self.shared.engine.count(start, end)
    }

    fn txn(&self, txn: Txn) -> TxnFuture {
        if !self.shared.engine.group_commits() {
            return Box::pin(std::future::ready(self.commit_inline(txn)));
        }
        let (reply, response) = oneshot::channel();
        let submitted = self.submit(Request::Txn(txn, reply));
        Box::pin(async move {
            submitted?;
            response.await.map_err(|_| StoreError::Closed)?
        })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch> {
        // Subscribe before reading the revision: every commit is then in history, live, or both.
        let live =
            self.changes.read().unwrap_or_else(PoisonError::into_inner).as_ref().ok_or(StoreError::Closed)?.subscribe();
        let next = if from == 0 { self.shared.revision.load(Ordering::Acquire) + 1 } else { from };
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if next < compacted {
            return Err(StoreError::Compacted { requested: next, compacted });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let feed = WatchFeed { shared: self.shared.clone(), prefix: prefix.to_vec(), next, tx };
        tokio::spawn(feed.run(live));
        Ok(Watch { rx })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, response) = oneshot::channel();
        self.submit(Request::Compact(revision, reply))?;
        response.await.map_err(|_| StoreError::Closed)?
    }

    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    async fn close(&self) {
        self.requests.write().unwrap_or_else(PoisonError::into_inner).take();
        self.changes.write().unwrap_or_else(PoisonError::into_inner).take();
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }

    fn backend(&self) -> &'static str {
        self.shared.engine.name()
    }
}

impl LocalStore {
    /// Commits in the caller's thread: the same steps as the committer's, one transaction at a time.
    fn commit_inline(&self, txn: Txn) -> Result<TxnResponse> {
        let _turn = self.inline_commit.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = self.changes.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or(StoreError::Closed)?;
        let revision = self.shared.revision.load(Ordering::Acquire);
        let applied = self.shared.engine.write(vec![txn], revision)?;
        self.shared.revision.store(applied.revision, Ordering::Release);
        if let Err(error) = self.shared.account(&applied.events) {
            tracing::warn!(error = &error as &dyn std::error::Error, "compacting history failed");
        }
        if !applied.events.is_empty() {
            let _ = changes.send(applied.events);
        }
        applied.responses.into_iter().next().ok_or(StoreError::Closed)
    }
}

/// The one writer. It takes every request waiting in its inbox, commits the transactions among
/// them as one engine write (one fsync), then answers each.
struct Committer {
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Request>,
    changes: broadcast::Sender<Arc<[Event]>>,
    options: StoreOptions,
}

impl Committer {
    fn run(self) {
        let mut next_compaction = Instant::now() + self.options.compaction_interval;
        let mut compact_to = self.shared.revision.load(Ordering::Acquire);
        loop {
            let first = match self.inbox.recv_timeout(next_compaction.saturating_duration_since(Instant::now())) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.compact(compact_to) {
                        tracing::error!(error = &error as &dyn std::error::Error, "scheduled compaction failed");
                    }
                    compact_to = self.shared.revision.load(Ordering::Acquire);
                    next_compaction = Instant::now() + self.options.compaction_interval;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if let Err(error) = self.shared.engine.checkpoint() {
                        tracing::error!(error = &error as &dyn std::error::Error, "final checkpoint failed");
                    }
                    return;
                }
            };
            let mut txns = Vec::new();
            let mut replies = Vec::new();
            let mut request = Some(first);
            while let Some(next) = request.take() {
                match next {
                    Request::Txn(txn, reply) => {
                        txns.push(txn);
                        replies.push(reply);
                    }
                    Request::Compact(revision, reply) => {
                        self.commit(std::mem::take(&mut txns), std::mem::take(&mut replies));
                        let _ = reply.send(self.compact(revision));
                    }
                }
                if txns.len() < self.options.max_batch {
                    request = self.inbox.try_recv().ok();
                }
            }
            self.commit(txns, replies);
        }
    }

    fn commit(&self, txns: Vec<Txn>, replies: Vec<oneshot::Sender<Result<TxnResponse>>>) {
        if txns.is_empty() {
            return;
        }
        let revision = self.shared.revision.load(Ordering::Acquire);
        let count = txns.len();
        match self.shared.engine.write(txns, revision) {
            Ok(applied) => {
                self.shared.revision.store(applied.revision, Ordering::Release);
                if let Err(error) = self.shared.account(&applied.events) {
                    tracing::warn!(error = &error as &dyn std::error::Error, "compacting history failed");
                }
                if !applied.events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    let _ = self.changes.send(applied.events);
                }
                for (reply, response) in replies.into_iter().zip(applied.responses) {
                    let _ = reply.send(Ok(response));
                }
            }
            Err(error) => {
                tracing::error!(error = &error as &dyn std::error::Error, txns = count, "group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        self.shared.compact(revision)
    }
}

/// Feeds one watch: history from `next` on, then live batches, deduplicated by revision.
struct WatchFeed {
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    tx: tokio::sync::mpsc::Sender<Result<Event>>,
}

impl WatchFeed {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<[Event]>>) {
        if self.replay().await.is_err() {
            return;
        }
        loop {
            let batch = tokio::select! {
                _ = self.tx.closed() => return,
                batch = live.recv() => batch,
            };
            let delivered = match batch {
                Ok(events) => self.deliver(&events).await,
                Err(broadcast::error::RecvError::Lagged(_)) => self.replay().await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if delivered.is_err() {
                return;
            }
        }
    }

    /// Sends what history holds from `next` up to the current revision. `Err` ends the watch.
    async fn replay(&mut self) -> Result<(), ()> {
        loop {
            let current = self.shared.revision.load(Ordering::Acquire);
            if self.next > current {
                return Ok(());
            }
            let events = self.shared.engine.history(self.next, REPLAY_CHUNK, &self.prefix);
            let compacted = self.shared.compacted.load(Ordering::Acquire);
            let events = match events {
                Ok(_) if self.next < compacted => Err(StoreError::Compacted { requested: self.next, compacted }),
                other => other,
            };
            match events {
                Ok(events) => {
                    let scanned_to = (self.next + REPLAY_CHUNK).min(current + 1);
                    self.deliver(&events).await?;
                    self.next = self.next.max(scanned_to);
                }
                Err(error) => {
                    let _ = self.tx.send(Err(error)).await;
                    return Err(());
                }
            }
        }
    }

    async fn deliver(&mut self, events: &[Event]) -> Result<(), ()> {
        for event in events {
            if event.revision() < self.next {
                continue;
            }
            if event.kv.key.starts_with(&self.prefix) {
                self.tx.send(Ok(event.clone())).await.map_err(|_| ())?;
            }
            // Advance only past whole revisions: the rest of this one may follow in the batch.
            self.next = event.revision();
        }
        if let Some(last) = events.last() {
            self.next = self.next.max(last.revision() + 1);
        }
        Ok(())
    }
}
