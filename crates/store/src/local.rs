//! [`LocalStore`]: the [`Store`] trait over an embedded [`Engine`], with group commit and watch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot};

use crate::engine::{CommitPath, Engine};
use crate::{Durability, Event, KeyValue, Result, Revision, Store, StoreError, Txn, TxnFuture, TxnResponse, Watch};

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
    /// The on-disk engine checkpoints (commits what it holds in memory to its B-tree durably and
    /// empties its write-ahead log) whenever the log grows past this, in a thread of its own.
    /// Larger means fewer page flushes, but more memory (the epoch's changes are held until
    /// then) and a longer replay after a crash. 2 MiB was chosen when checkpoints held up commits
    /// (BENCHMARKS.md).
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
            checkpoint_bytes: 2 << 20,
            fsync: crate::Fsync::Always,
        }
    }
}

/// The checkpoint thread's nice value.
const CHECKPOINT_NICE: i32 = 10;
/// Revisions replayed per history read while a watch catches up.
const REPLAY_CHUNK: u64 = 256;
/// Committed batches buffered for live watchers; one that falls further behind replays from history.
const LIVE_BUFFER: usize = 1024;

enum Request {
    Txn(Txn, Durability, oneshot::Sender<Result<TxnResponse>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

/// What was submitted and is not yet being committed, in submission order, and whose turn it is.
#[derive(Default)]
struct Submitted {
    requests: VecDeque<Request>,
    /// Someone (the committer thread, or a caller) is committing. One at a time, each taking from
    /// the front of `requests`: so commits follow submission order whoever makes them.
    committing: bool,
    /// The committer thread waits on `Shared::work`.
    committer_idle: bool,
    /// A caller's commit found a checkpoint due: the committer thread makes it, so that no
    /// caller's thread waits for one.
    checkpoint_due: bool,
    closed: bool,
}

impl Submitted {
    /// Takes the turn and what is waiting, up to `max` requests.
    fn take_turn(&mut self, max: usize) -> VecDeque<Request> {
        self.committing = true;
        if self.requests.len() <= max {
            return std::mem::take(&mut self.requests);
        }
        self.requests.drain(..max).collect()
    }

    /// Whether the committer thread has something to do once no one else is committing.
    fn has_work(&self) -> bool {
        !self.requests.is_empty() || self.checkpoint_due || self.closed
    }
}

struct Shared {
    engine: Arc<dyn Engine>,
    revision: AtomicU64,
    compacted: AtomicU64,
    /// (revision, bytes) of the history kept, oldest first, and their sum.
    history: Mutex<(VecDeque<(Revision, u64)>, u64)>,
    history_limit_bytes: u64,
    submitted: Mutex<Submitted>,
    /// Wakes the committer thread.
    work: Condvar,
    /// Taken at close; the committer thread keeps its own until it stops, ending every watch.
    changes: RwLock<Option<broadcast::Sender<Arc<[Event]>>>>,
}

impl Shared {
    fn submitted(&self) -> MutexGuard<'_, Submitted> {
        self.submitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` behind everything submitted before it. Returns whether its caller is to
    /// commit it: with [`CommitPath::InlineWhenAlone`], when nothing else waits and no one
    /// commits. Otherwise wakes the committer thread.
    fn submit(&self, request: Request, path: CommitPath) -> Result<bool> {
        let mut submitted = self.submitted();
        if submitted.closed {
            return Err(StoreError::Closed);
        }
        let alone = path == CommitPath::InlineWhenAlone && submitted.requests.is_empty() && !submitted.committing;
        submitted.requests.push_back(request);
        if !alone {
            self.wake_committer(&mut submitted);
        }
        Ok(alone)
    }

    fn wake_committer(&self, submitted: &mut Submitted) {
        // Marked busy here, so that the submitters after this one do not each make a futex call.
        if submitted.committer_idle {
            submitted.committer_idle = false;
            self.work.notify_one();
        }
    }

    /// [`CommitPath::InlineWhenAlone`]: commits the one request waiting in this thread, if no one
    /// is committing. Several waiting go to the committer thread, whose group shares the cost of a
    /// commit among them; so does what was submitted during a caller's commit, when it ends.
    fn commit_if_alone(&self) {
        let requests = {
            let mut submitted = self.submitted();
            if submitted.committing || submitted.closed || submitted.requests.is_empty() {
                return;
            }
            if submitted.requests.len() > 1 {
                self.wake_committer(&mut submitted);
                return;
            }
            submitted.take_turn(1)
        };
        self.commit_requests(requests, self.changes.read().unwrap_or_else(PoisonError::into_inner).as_ref());
        let checkpoint_due = self.engine.wants_checkpoint();
        let mut submitted = self.submitted();
        submitted.committing = false;
        submitted.checkpoint_due |= checkpoint_due;
        if submitted.has_work() {
            self.wake_committer(&mut submitted);
        }
    }

    /// For a transaction whose caller stopped waiting before committing it: if no one is
    /// committing, the committer thread does (else the one committing hands it over).
    fn hand_over(&self) {
        let mut submitted = self.submitted();
        if !submitted.committing && !submitted.requests.is_empty() {
            self.wake_committer(&mut submitted);
        }
    }

    /// Commits `requests` in order, holding the turn: runs of transactions as one engine write,
    /// synced if any of them asks for it.
    fn commit_requests(&self, requests: VecDeque<Request>, changes: Option<&broadcast::Sender<Arc<[Event]>>>) {
        let mut txns = Vec::new();
        let mut replies = Vec::new();
        let mut durability = Durability::Written;
        for request in requests {
            match request {
                Request::Txn(txn, asked, reply) => {
                    txns.push(txn);
                    replies.push(reply);
                    if asked == Durability::Synced {
                        durability = asked;
                    }
                }
                Request::Compact(revision, reply) => {
                    self.commit(std::mem::take(&mut txns), std::mem::take(&mut replies), durability, changes);
                    durability = Durability::Written;
                    let _ = reply.send(self.compact(revision));
                }
            }
        }
        self.commit(txns, replies, durability, changes);
    }

    fn commit(
        &self,
        txns: Vec<Txn>,
        replies: Vec<oneshot::Sender<Result<TxnResponse>>>,
        durability: Durability,
        changes: Option<&broadcast::Sender<Arc<[Event]>>>,
    ) {
        if txns.is_empty() {
            return;
        }
        let revision = self.revision.load(Ordering::Acquire);
        let count = txns.len();
        match self.engine.write(txns, revision, durability) {
            Ok(applied) => {
                self.revision.store(applied.revision, Ordering::Release);
                if let Err(error) = self.account(&applied.events) {
                    tracing::warn!(error = &error as &dyn std::error::Error, "compacting history failed");
                }
                if let Some(changes) = changes
                    && !applied.events.is_empty()
                {
                    // No receivers is fine: nobody is watching.
                    let _ = changes.send(applied.events);
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
    /// Held while committing in the caller, for [`CommitPath::Inline`].
    inline_commit: Mutex<()>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl LocalStore {
    pub fn start(engine: Arc<dyn Engine>, options: StoreOptions) -> Result<Self> {
        let (revision, compacted) = engine.revisions()?;
        let (changes, _) = broadcast::channel(LIVE_BUFFER);
        let shared = Arc::new(Shared {
            engine,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            history: Mutex::new((VecDeque::new(), 0)),
            history_limit_bytes: options.history_limit_bytes,
            submitted: Mutex::new(Submitted::default()),
            work: Condvar::new(),
            changes: RwLock::new(Some(changes.clone())),
        });
        let (stopped_tx, stopped) = oneshot::channel();
        let committer = Committer { shared: shared.clone(), changes, options };
        std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || {
                committer.run();
                let _ = stopped_tx.send(());
            })
            .map_err(StoreError::engine)?;
        Ok(LocalStore { shared, inline_commit: Mutex::new(()), stopped: Mutex::new(Some(stopped)) })
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

    fn txn_with(&self, txn: Txn, durability: Durability) -> TxnFuture {
        let path = self.shared.engine.commit_path(durability);
        if path == CommitPath::Inline {
            return TxnFuture::done(self.commit_inline(txn));
        }
        let (reply, response) = oneshot::channel();
        let alone = match self.shared.submit(Request::Txn(txn, durability, reply), path) {
            Ok(alone) => alone,
            Err(error) => return TxnFuture::done(Err(error)),
        };
        let uncommitted = alone.then(|| Uncommitted(Some(self.shared.clone())));
        TxnFuture::waiting(async move {
            if let Some(uncommitted) = uncommitted {
                uncommitted.commit().await;
            }
            response.await.map_err(|_| StoreError::Closed)?
        })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch> {
        // Subscribe before reading the revision: every commit is then in history, live, or both.
        let live = self
            .shared
            .changes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or(StoreError::Closed)?
            .subscribe();
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
        self.shared.submit(Request::Compact(revision, reply), CommitPath::Grouped)?;
        response.await.map_err(|_| StoreError::Closed)?
    }

    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    async fn close(&self) {
        self.refuse_writes();
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }

    fn backend(&self) -> &'static str {
        self.shared.engine.name()
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.refuse_writes();
    }
}

impl LocalStore {
    /// Refuses new writes and ends every watch once the committer thread has committed what was
    /// submitted, made a last checkpoint and stopped.
    fn refuse_writes(&self) {
        {
            let mut submitted = self.shared.submitted();
            submitted.closed = true;
            self.shared.wake_committer(&mut submitted);
        }
        self.shared.changes.write().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Commits in the caller's thread: the same steps as the committer's, one transaction at a time.
    fn commit_inline(&self, txn: Txn) -> Result<TxnResponse> {
        let _turn = self.inline_commit.lock().unwrap_or_else(PoisonError::into_inner);
        let changes =
            self.shared.changes.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or(StoreError::Closed)?;
        let revision = self.shared.revision.load(Ordering::Acquire);
        let applied = self.shared.engine.write(vec![txn], revision, Durability::Synced)?;
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

/// A transaction submitted alone ([`CommitPath::InlineWhenAlone`]), until its caller commits it
/// or hands it over; dropped first, it still commits (see [`Store::txn`]), by the committer thread.
struct Uncommitted(Option<Arc<Shared>>);

impl Uncommitted {
    /// Runs in the caller's first poll, outside the lock it submitted under, so this commit holds
    /// none of the caller's locks. It first yields once: the worker thread runs its other ready
    /// requests, and if they submit theirs meanwhile, the committer thread groups them all rather
    /// than each committing one by one.
    async fn commit(mut self) {
        tokio::task::yield_now().await;
        if let Some(shared) = self.0.take() {
            shared.commit_if_alone();
        }
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.hand_over();
        }
    }
}

/// The committer thread. It commits what callers leave to it, as group commits (every request
/// waiting, up to `max_batch`, as one engine write), and makes the checkpoints and the scheduled
/// compactions.
struct Committer {
    shared: Arc<Shared>,
    changes: broadcast::Sender<Arc<[Event]>>,
    options: StoreOptions,
}

/// What the committer thread does with its turn.
enum Work {
    Commit(VecDeque<Request>),
    Compact,
    Close,
}

impl Committer {
    fn run(self) {
        let mut next_compaction = Instant::now() + self.options.compaction_interval;
        let mut compact_to = self.shared.revision.load(Ordering::Acquire);
        // Checkpoints are made in a thread of their own, so that commits go on meanwhile (the
        // engine takes the writes made during one aside); here, if that thread cannot be made.
        let (due, wanted) = std::sync::mpsc::sync_channel::<()>(1);
        let engine = self.shared.engine.clone();
        let mut checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                // Below the threads that answer requests, which would otherwise wait for this one's
                // CPU-heavy commit on a busy machine: at nice 10, durable receives at one connection
                // had half the p99. It still gets about a tenth of a core they keep busy; a
                // checkpoint that lags only makes the next epoch longer. Linux sets nice per thread.
                let _ = rustix::process::setpriority_process(None, CHECKPOINT_NICE);
                for () in wanted {
                    if engine.wants_checkpoint() {
                        checkpoint(&*engine, "checkpoint failed");
                    }
                }
            })
            .ok()
            .map(|thread| (due, thread));
        loop {
            match self.next_work(next_compaction) {
                Work::Commit(requests) => {
                    self.shared.commit_requests(requests, Some(&self.changes));
                    self.shared.engine.wait_for_a_lagging_checkpoint();
                    if self.shared.engine.wants_checkpoint() {
                        match &checkpointer {
                            // Full: a checkpoint is already asked for.
                            Some((due, _)) => _ = due.try_send(()),
                            None => checkpoint(&*self.shared.engine, "checkpoint failed"),
                        }
                    }
                }
                Work::Compact => {
                    if let Err(error) = self.shared.compact(compact_to) {
                        tracing::error!(error = &error as &dyn std::error::Error, "scheduled compaction failed");
                    }
                    compact_to = self.shared.revision.load(Ordering::Acquire);
                    next_compaction = Instant::now() + self.options.compaction_interval;
                }
                Work::Close => {
                    if let Some((due, thread)) = checkpointer.take() {
                        drop(due);
                        let _ = thread.join();
                    }
                    checkpoint(&*self.shared.engine, "final checkpoint failed");
                    return;
                }
            }
            self.shared.submitted().committing = false;
        }
    }

    /// Waits for work and the turn, and takes both. At close, only once everything submitted is
    /// committed.
    fn next_work(&self, next_compaction: Instant) -> Work {
        let mut submitted = self.shared.submitted();
        loop {
            if !submitted.committing {
                if !submitted.requests.is_empty() || std::mem::take(&mut submitted.checkpoint_due) {
                    return Work::Commit(submitted.take_turn(self.options.max_batch));
                }
                if submitted.closed {
                    submitted.committing = true;
                    return Work::Close;
                }
                if Instant::now() >= next_compaction {
                    submitted.committing = true;
                    return Work::Compact;
                }
            }
            // A caller committing wakes this thread only if it leaves work; a compaction that fell
            // due meanwhile is looked at again within a millisecond.
            let timeout = next_compaction.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            submitted.committer_idle = true;
            submitted = self.shared.work.wait_timeout(submitted, timeout).unwrap_or_else(PoisonError::into_inner).0;
            submitted.committer_idle = false;
        }
    }
}

fn checkpoint(engine: &dyn Engine, what: &str) {
    if let Err(error) = engine.checkpoint() {
        tracing::error!(error = &error as &dyn std::error::Error, "{what}");
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
