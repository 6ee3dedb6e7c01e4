//! Amazon SQS, the domain side: queues, messages and their visibility, FIFO groups and
//! deduplication, dead-letter queues, long polling.
//!
//! Each queue's state lives in memory (`queue::Queue`, behind its own lock) and is written through
//! to the store before any caller is answered: a send is acknowledged only once its message is
//! durable, a receive only once the new visibility deadlines are. On start, [`Sqs::open`] rebuilds
//! the queues from the store. Deadlines are absolute times, so delays, visibility and retention
//! carry on across restarts. A receiver waiting for messages (long polling) sleeps on its queue's
//! `Notify` and holds no thread.

mod attributes;
mod digest;
mod queue;
mod storage;
mod tasks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use store::{Durability, Store, StoreError, Txn};
use tokio::sync::Notify;

pub use digest::content_deduplication_id;
pub use queue::Trace;
use queue::{Message, Queue, Taken};
use storage::{Record, StoredMessage};
pub use tasks::MoveTaskView;

/// A queue's identity: SQS queues are per account and region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    pub account: String,
    pub region: String,
    pub name: String,
}

impl QueueId {
    pub fn arn(&self) -> String {
        format!("arn:aws:sqs:{}:{}:{}", self.region, self.account, self.name)
    }

    /// `arn:aws:sqs:<region>:<account>:<name>`
    pub fn from_arn(arn: &str) -> Option<QueueId> {
        let mut parts = arn.split(':');
        let (Some("arn"), Some(_partition), Some("sqs"), Some(region), Some(account), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(QueueId { account: account.into(), region: region.into(), name: name.into() })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    String(String),
    Binary(Vec<u8>),
}

/// A message attribute; `data_type` is `String`, `Number` or `Binary`, optionally with a
/// custom suffix (`Number.float`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageAttribute {
    pub name: String,
    pub data_type: String,
    pub value: AttributeValue,
}

#[derive(Clone, Debug, Default)]
pub struct SendMessage {
    pub body: String,
    pub delay_seconds: Option<i64>,
    pub attributes: Vec<MessageAttribute>,
    pub system_attributes: Vec<MessageAttribute>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    /// The request's `X-Amzn-Trace-Id`: the message's `AWSTraceHeader` unless it carries one.
    pub trace_header: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
    pub md5_of_body: String,
    pub md5_of_attributes: Option<String>,
    pub md5_of_system_attributes: Option<String>,
    pub sequence_number: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Receive {
    pub max_messages: Option<i64>,
    pub visibility_timeout: Option<i64>,
    pub wait_seconds: Option<i64>,
    /// System attribute names to return (`All` for every one).
    pub system_attribute_names: Vec<String>,
    /// Message attribute names to return: names, `All`, `.*` or `*`, or `prefix.*`.
    pub message_attribute_names: Vec<String>,
    /// FIFO: retrying a receive with the same id within 5 minutes returns the same messages.
    pub attempt_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: String,
    pub md5_of_attributes: Option<String>,
    pub attributes: Vec<MessageAttribute>,
    pub system_attributes: Vec<(String, String)>,
}

/// SQS's errors. The adapter maps each to its wire code.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    #[error("{0}")]
    QueueNameExists(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidAttributeName(String),
    #[error("{0}")]
    InvalidAttributeValue(String),
    #[error("{0}")]
    InvalidMessageContents(String),
    #[error("{0}")]
    ReceiptHandleIsInvalid(String),
    #[error("Only one PurgeQueue operation on {0} is allowed every 60 seconds.")]
    PurgeQueueInProgress(String),
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntriesInBatchRequest(usize),
    #[error("There should be at least one {0} in the request.")]
    EmptyBatchRequest(&'static str),
    #[error("Id {0} repeated.")]
    BatchEntryIdsNotDistinct(String),
    #[error(
        "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."
    )]
    InvalidBatchEntryId,
    #[error("Batch requests cannot be longer than {0} bytes. You have sent {1} bytes.")]
    BatchRequestTooLong(u64, u64),
    #[error("You must wait 60 seconds after deleting a queue before you can create another with the same name.")]
    QueueDeletedRecently,
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

const SEND_BATCH_MAX_BYTES: u64 = 1_048_576;
const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

struct QueueCell {
    queue: Mutex<Queue>,
    /// Woken when messages may have become receivable.
    changed: Notify,
}

impl QueueCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Sqs {
    store: Arc<dyn Store>,
    queues: Mutex<HashMap<QueueId, Arc<QueueCell>>>,
    tasks: Mutex<Vec<Arc<tasks::MoveTask>>>,
    /// When each queue was last deleted: SQS refuses to recreate a name for 60 seconds.
    deleted_at: Mutex<HashMap<QueueId, u64>>,
}

const RECREATE_AFTER_MS: u64 = 60_000;

/// How often messages past their retention period are swept away.
const EXPIRY_SWEEP: Duration = Duration::from_secs(10);
/// Messages a sweep looks at per turn of a queue's lock: ~0.1 ms. In one turn, a sweep of a queue
/// of 2 million messages held sends up for 100-140 ms every 10 s.
const EXPIRY_PART: usize = 4096;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Sqs {
    /// Loads every queue and message from the store.
    pub async fn open(store: Arc<dyn Store>) -> Result<Arc<Sqs>, SqsError> {
        let queues = storage::load(store.as_ref()).await?;
        let cells = queues
            .into_iter()
            .map(|q| (q.id.clone(), Arc::new(QueueCell { queue: Mutex::new(q), changed: Notify::new() })))
            .collect();
        let sqs = Arc::new(Sqs {
            store,
            queues: Mutex::new(cells),
            tasks: Mutex::new(Vec::new()),
            deleted_at: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&sqs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_SWEEP);
            loop {
                tick.tick().await;
                let Some(sqs) = weak.upgrade() else { return };
                if let Err(error) = sqs.expire().await {
                    tracing::warn!(error = &error as &dyn std::error::Error, "expiring SQS messages failed");
                }
            }
        });
        Ok(sqs)
    }

    /// Forgets every queue; the caller has wiped the store.
    pub fn reset(&self) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.deleted_at.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let cells: Vec<_> = self.registry().drain().map(|(_, cell)| cell).collect();
        for cell in cells {
            cell.changed.notify_waiters();
        }
    }

    /// (queues, messages)
    pub fn summary(&self) -> (usize, usize) {
        let cells: Vec<_> = self.registry().values().cloned().collect();
        (cells.len(), cells.iter().map(|c| c.lock().messages.len()).sum())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, Arc<QueueCell>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cell(&self, id: &QueueId) -> Result<Arc<QueueCell>, SqsError> {
        self.registry().get(id).cloned().ok_or(SqsError::QueueDoesNotExist)
    }

    pub async fn create_queue(
        &self,
        id: QueueId,
        requested: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> Result<(), SqsError> {
        if id.name.len() > 80 || !valid_label(id.name.strip_suffix(".fifo").unwrap_or(&id.name)) {
            return Err(SqsError::InvalidParameterValue(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length".into(),
            ));
        }
        let fifo_requested = requested.iter().any(|(k, v)| k == "FifoQueue" && attributes::bool_value(v) == Some(true));
        let fifo = id.name.ends_with(".fifo");
        if fifo_requested != fifo {
            return Err(SqsError::InvalidParameterValue(
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.".into(),
            ));
        }
        let tags: BTreeMap<String, String> = tags.into_iter().collect();
        check_tags(&id, &tags, &[], tags.len())?;
        let mut wanted = attributes::defaults(fifo);
        for (name, value) in &requested {
            attributes::validate(name, value, fifo)?;
            if value.is_empty() && attributes::REMOVED_WHEN_EMPTY.contains(&name.as_str()) {
                continue;
            }
            wanted.insert(name.clone(), value.clone());
        }
        attributes::settle(&mut wanted, &requested)?;
        // Checked as sent, so that an error quotes the caller's text.
        if let Some((_, policy)) = requested.iter().rev().find(|(n, v)| n == "RedrivePolicy" && !v.is_empty()) {
            self.check_dead_letter_target(&id, fifo, policy)?;
        }
        let now = now_ms() / 1000;
        let queue = {
            let mut registry = self.registry();
            if let Some(existing) = registry.get(&id) {
                // Only the attributes the caller names must match, as in SQS.
                let existing = existing.lock();
                let differing: Vec<&str> = requested
                    .iter()
                    // As this create would store them: settled, empty policies removed.
                    .filter(|(name, _)| existing.attributes.get(name) != wanted.get(name))
                    .map(|(name, _)| name.as_str())
                    .collect();
                return if differing.is_empty() {
                    Ok(())
                } else {
                    Err(SqsError::QueueNameExists(format!(
                        "A queue already exists with the same name and a different value for attribute {}",
                        differing.join(", ")
                    )))
                };
            }
            let recently = self.deleted_at.lock().unwrap_or_else(PoisonError::into_inner).get(&id).copied();
            if recently.is_some_and(|at| now_ms() < at + RECREATE_AFTER_MS) {
                return Err(SqsError::QueueDeletedRecently);
            }
            let queue = Queue {
                uid: fastrand::u64(1..),
                id: id.clone(),
                fifo,
                attributes: wanted,
                tags,
                created: now,
                modified: now,
                messages: BTreeMap::new(),
                schedule: Default::default(),
                next_seq: now_ms() * 1000,
                purged_at: None,
                dedup: HashMap::new(),
                dedup_expiry: Default::default(),
                dedup_records: Default::default(),
                attempts: HashMap::new(),
                recent: Default::default(),
                deleted: false,
                oldest_sent_ms: u64::MAX,
                added_during_sweep: u64::MAX,
            };
            let record = storage::queue_op(&queue);
            registry.insert(id.clone(), Arc::new(QueueCell { queue: Mutex::new(queue), changed: Notify::new() }));
            // Submitted under the registry lock, so creates and deletes of a name commit in order.
            self.store.txn(Txn::ops(vec![record]))
        };
        if let Err(error) = queue.await {
            self.registry().remove(&id);
            return Err(error.into());
        }
        Ok(())
    }

    pub async fn delete_queue(&self, id: &QueueId) -> Result<(), SqsError> {
        let (cell, committed) = {
            let mut registry = self.registry();
            let cell = registry.remove(id).ok_or(SqsError::QueueDoesNotExist)?;
            let mut queue = cell.lock();
            queue.deleted = true;
            self.deleted_at.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone(), now_ms());
            let committed = self.store.txn(Txn::ops(storage::delete_queue_ops(id, queue.uid)));
            drop(queue);
            (cell, committed)
        };
        cell.changed.notify_waiters();
        committed.await?;
        Ok(())
    }

    /// The queues whose names start with `prefix`, a page at a time (see `page`).
    pub fn list_queues(
        &self,
        account: &str,
        region: &str,
        prefix: &str,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<(Vec<QueueId>, Option<String>), SqsError> {
        let names: Vec<QueueId> = self
            .registry()
            .keys()
            .filter(|id| id.account == account && id.region == region && id.name.starts_with(prefix))
            .cloned()
            .collect();
        page(names, max_results, next_token)
    }

    pub fn queue_exists(&self, id: &QueueId) -> Result<(), SqsError> {
        self.cell(id).map(|_| ())
    }

    pub fn get_attributes(&self, id: &QueueId, names: &[String]) -> Result<Vec<(String, String)>, SqsError> {
        let cell = self.cell(id)?;
        let queue = cell.lock();
        let all = names.iter().any(|n| n == "All");
        let known: Vec<&str> = attributes::all_names(queue.fifo).collect();
        for name in names {
            if name != "All" && !known.contains(&name.as_str()) {
                return Err(SqsError::InvalidAttributeName(format!("Unknown Attribute {name}.")));
            }
        }
        // Counting walks the queue, so only when a count is asked for.
        let counted = all || names.iter().any(|n| n.starts_with("ApproximateNumberOfMessages"));
        let (visible, in_flight, delayed) = if counted { queue.counts(now_ms()) } else { (0, 0, 0) };
        let mut out = Vec::new();
        for name in known.into_iter().filter(|n| all || names.iter().any(|w| w == n)) {
            let value = match name {
                "ApproximateNumberOfMessages" => visible.to_string(),
                "ApproximateNumberOfMessagesNotVisible" => in_flight.to_string(),
                "ApproximateNumberOfMessagesDelayed" => delayed.to_string(),
                "CreatedTimestamp" => queue.created.to_string(),
                "LastModifiedTimestamp" => queue.modified.to_string(),
                "QueueArn" => queue.arn(),
                other => match queue.attributes.get(other) {
                    Some(v) => v.clone(),
                    None => continue,
                },
            };
            out.push((name.to_string(), value));
        }
        Ok(out)
    }

    pub async fn set_attributes(&self, id: &QueueId, changes: Vec<(String, String)>) -> Result<(), SqsError> {
        let cell = self.cell(id)?;
        let fifo = cell.lock().fifo;
        for (name, value) in &changes {
            if name == "RedrivePolicy" && !value.is_empty() {
                self.check_dead_letter_target(id, fifo, value)?;
            }
        }
        let record = {
            let mut queue = cell.lock();
            for (name, value) in &changes {
                attributes::validate(name, value, queue.fifo)?;
            }
            let mut changed = queue.attributes.clone();
            for (name, value) in &changes {
                if value.is_empty() && attributes::REMOVED_WHEN_EMPTY.contains(&name.as_str()) {
                    changed.remove(name);
                } else {
                    changed.insert(name.clone(), value.clone());
                }
            }
            attributes::settle(&mut changed, &changes)?;
            let delay_changed = changed.get("DelaySeconds") != queue.attributes.get("DelaySeconds");
            queue.attributes = changed;
            queue.modified = now_ms() / 1000;
            if queue.fifo && delay_changed {
                queue.apply_fifo_delay();
            }
            // Submitted under the queue's lock: snapshots of the queue commit in the order taken.
            self.store.txn(Txn::ops(vec![storage::queue_op(&queue)]))
        };
        record.await?;
        cell.changed.notify_waiters();
        Ok(())
    }

    /// A redrive policy must name an existing queue of the same kind that lets `source` use it.
    fn check_dead_letter_target(&self, source: &QueueId, fifo: bool, policy: &str) -> Result<(), SqsError> {
        let policy_value = attributes::redrive_policy(policy)?;
        let invalid = |why: &str| {
            SqsError::InvalidParameterValue(format!(
                "Value {policy} for parameter RedrivePolicy is invalid. Reason: {why}"
            ))
        };
        let target = QueueId::from_arn(&policy_value.target_arn)
            .filter(|t| t.account == source.account && t.region == source.region)
            .ok_or_else(|| invalid("Dead letter target does not exist."))?;
        let cell = self.cell(&target).map_err(|_| invalid("Dead letter target does not exist."))?;
        let target = cell.lock();
        if target.fifo != fifo {
            return Err(invalid("Dead-letter queue must be same type of queue as the source."));
        }
        let allow = match target.attributes.get("RedriveAllowPolicy") {
            Some(text) => attributes::redrive_allow_policy(text)?,
            None => attributes::RedriveAllow::All,
        };
        let allowed = match allow {
            attributes::RedriveAllow::All => true,
            attributes::RedriveAllow::Nobody => false,
            attributes::RedriveAllow::Only(arns) => arns.contains(&source.arn()),
        };
        if !allowed {
            return Err(invalid(
                "Dead letter target queue's RedriveAllowPolicy does not allow this queue as a source.",
            ));
        }
        Ok(())
    }

    pub fn list_tags(&self, id: &QueueId) -> Result<Vec<(String, String)>, SqsError> {
        Ok(self.cell(id)?.lock().tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Adds `add` and removes `remove` from the queue's tags (TagQueue, UntagQueue).
    pub async fn change_tags(
        &self,
        id: &QueueId,
        add: Vec<(String, String)>,
        remove: Vec<String>,
    ) -> Result<(), SqsError> {
        let cell = self.cell(id)?;
        if add.is_empty() && remove.is_empty() {
            return Err(SqsError::InvalidParameterValue(TAG_KEYS.into()));
        }
        let add: BTreeMap<String, String> = add.into_iter().collect();
        let record = {
            let mut queue = cell.lock();
            // A key the queue has already is overwritten, not added.
            let mut tags = queue.tags.clone();
            tags.extend(add.clone());
            for key in &remove {
                tags.remove(key);
            }
            check_tags(id, &add, &remove, tags.len())?;
            queue.tags = tags;
            // Submitted under the queue's lock: snapshots of the queue commit in the order taken.
            self.store.txn(Txn::ops(vec![storage::queue_op(&queue)]))
        };
        record.await?;
        Ok(())
    }

    /// The queues whose redrive policy names `id` as their dead-letter queue, a page at a time
    /// (see `page`).
    pub fn dead_letter_source_queues(
        &self,
        id: &QueueId,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<(Vec<QueueId>, Option<String>), SqsError> {
        let sources = self.all_dead_letter_sources(id)?;
        page(sources, max_results, next_token)
    }

    pub(crate) fn all_dead_letter_sources(&self, id: &QueueId) -> Result<Vec<QueueId>, SqsError> {
        let arn = self.cell(id)?.lock().arn();
        let cells: Vec<_> = self.registry().values().cloned().collect();
        Ok(cells
            .iter()
            .filter_map(|c| {
                let q = c.lock();
                q.redrive_policy().filter(|p| p.target_arn == arn).map(|_| q.id.clone())
            })
            .collect())
    }

    pub async fn send(&self, id: &QueueId, sender: &str, message: SendMessage) -> Result<Sent, SqsError> {
        let mut results = self.send_many(id, sender, vec![message]).await?;
        results.pop().unwrap_or(Err(SqsError::EmptyBatchRequest("SendMessageBatchRequestEntry")))
    }

    /// SendMessageBatch: entries are (id, message); answers are in the same order.
    pub async fn send_batch(
        &self,
        id: &QueueId,
        sender: &str,
        entries: Vec<(String, Result<SendMessage, SqsError>)>,
    ) -> Result<Vec<(String, Result<Sent, SqsError>)>, SqsError> {
        check_batch_ids(entries.iter().map(|(entry_id, _)| entry_id.as_str()), "SendMessageBatchRequestEntry")?;
        let total: u64 = entries.iter().filter_map(|(_, m)| m.as_ref().ok()).map(message_size).sum();
        if total > SEND_BATCH_MAX_BYTES {
            return Err(SqsError::BatchRequestTooLong(SEND_BATCH_MAX_BYTES, total));
        }
        // In a FIFO queue, an entry without a group, or without a deduplication id the queue cannot
        // make, fails the whole batch (recorded), where other invalid entries fail alone.
        let (fifo, content_based) = {
            let queue = self.cell(id)?;
            let queue = queue.lock();
            (queue.fifo, queue.content_based_deduplication())
        };
        let messages = entries.iter().filter_map(|(_, message)| message.as_ref().ok());
        for message in messages.filter(|_| fifo) {
            if message.group_id.is_none() {
                return Err(SqsError::InvalidParameterValue(NO_GROUP.into()));
            }
            if message.dedup_id.is_none() && !content_based {
                return Err(SqsError::InvalidParameterValue(NO_DEDUPLICATION_ID.into()));
            }
        }
        // An entry the caller could not read fails alone, in its place among the results.
        let mut messages = Vec::with_capacity(entries.len());
        let slots: Vec<(String, Result<(), SqsError>)> =
            entries.into_iter().map(|(entry_id, m)| (entry_id, m.map(|m| messages.push(m)))).collect();
        let mut sent = self.send_many(id, sender, messages).await?.into_iter();
        Ok(slots
            .into_iter()
            .filter_map(|(entry_id, slot)| {
                let result = match slot {
                    Ok(()) => sent.next()?, // one result per message sent, in order
                    Err(error) => Err(error),
                };
                Some((entry_id, result))
            })
            .collect())
    }

    /// Validates each message, then makes all valid ones durable in one transaction. No batch
    /// limits: this is also how other services (SNS) deliver many messages at once.
    pub async fn send_many(
        &self,
        id: &QueueId,
        sender: &str,
        messages: Vec<SendMessage>,
    ) -> Result<Vec<Result<Sent, SqsError>>, SqsError> {
        self.send_many_with(id, sender, messages, |_| Vec::new()).await
    }

    /// [`Sqs::send_many`], with the caller's own store operations in the same transaction:
    /// `also` sees each message's result and returns them (SNS removes what it delivered from
    /// its outbox, so that delivered and removed commit together).
    pub async fn send_many_with(
        &self,
        id: &QueueId,
        sender: &str,
        messages: Vec<SendMessage>,
        also: impl FnOnce(&[Result<Sent, SqsError>]) -> Vec<store::Op>,
    ) -> Result<Vec<Result<Sent, SqsError>>, SqsError> {
        let cell = self.cell(id)?;
        let now = now_ms();
        let mut results = Vec::with_capacity(messages.len());
        let mut ops = Vec::new();
        let mut added = Vec::new();
        let pending = {
            let mut queue = cell.lock();
            if queue.deleted {
                return Err(SqsError::QueueDoesNotExist);
            }
            let stale = queue.expire_dedup(now);
            ops.extend(stale.into_iter().map(|seq| storage::forget_dedup_op(queue.uid, seq)));
            for message in messages {
                match prepare(&mut queue, sender, message, now) {
                    Ok(Prepared::New(message, sent)) => {
                        ops.extend(storage::message_ops(queue.uid, &message));
                        added.push(message.seq);
                        queue.add_pending(message);
                        results.push(Ok(sent));
                    }
                    Ok(Prepared::Duplicate(sent)) => results.push(Ok(sent)),
                    Err(error) => results.push(Err(error)),
                }
            }
            ops.extend(also(&results));
            if ops.is_empty() {
                return Ok(results);
            }
            submit(&*self.store, &mut queue, ops, &added, "sent")
        };
        settle_in_background(cell, added, pending, "sent").await?;
        Ok(results)
    }

    pub async fn receive(&self, id: &QueueId, request: Receive) -> Result<Vec<Received>, SqsError> {
        let cell = self.cell(id)?;
        let max = request.max_messages.unwrap_or(1);
        if !(1..=10).contains(&max) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
            )));
        }
        if let Some(vt) = request.visibility_timeout.filter(|vt| !(0..=43_200).contains(vt)) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {vt} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided."
            )));
        }
        if let Some(wait) = request.wait_seconds.filter(|w| !(0..=20).contains(w)) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
            )));
        }
        let (max, visibility_timeout, wait_seconds) =
            (max as usize, request.visibility_timeout.map(|v| v as u64), request.wait_seconds.map(|w| w as u64));
        // Never take the registry lock while holding a queue's: read the policy, release, resolve.
        let (wait, redrive) = {
            let queue = cell.lock();
            let wait = wait_seconds.unwrap_or_else(|| queue.attribute_u64("ReceiveMessageWaitTimeSeconds"));
            (wait, queue.redrive_policy())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let changed = cell.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Resolved on every pass: the dead-letter queue may come and go during a long poll. A
            // queue may name itself (SQS accepts that); moving a message to where it is changes
            // nothing, so it is delivered.
            let dead_letter = redrive.as_ref().and_then(|p| {
                let target = QueueId::from_arn(&p.target_arn).filter(|target| target != id)?;
                Some((self.cell(&target).ok()?, p.max_receive_count, target.name))
            });

            let now = now_ms();
            let (received, ops, dead, next_visible, pending) = {
                let mut queue = cell.lock();
                let visibility = visibility_timeout.unwrap_or_else(|| queue.attribute_u64("VisibilityTimeout"));
                if let Some(earlier) =
                    request.attempt_id.as_ref().and_then(|a| queue.repeat_attempt(a, now, visibility * 1000))
                {
                    return Ok(earlier);
                }
                let taken = queue.take(max, now, visibility * 1000, dead_letter.as_ref().map(|(_, max, _)| *max));
                let mut received = Vec::new();
                let mut ops = Vec::new();
                let mut dead = Vec::new();
                for taken in taken {
                    match taken {
                        Taken::Delivered(seq) => {
                            if let Some(message) = queue.messages.get(&seq) {
                                ops.push(storage::state_op(queue.uid, message));
                                received.push(deliver(&queue, message, &request));
                            }
                        }
                        Taken::Expired(seq) => ops.extend(storage::delete_message_ops(queue.uid, seq)),
                        Taken::DeadLettered(message) => {
                            ops.extend(storage::delete_message_ops(queue.uid, message.seq));
                            ops.extend(storage::keep_dedup_op(&mut queue, &message, now));
                            dead.push(*message);
                        }
                    }
                }
                for message in &received {
                    queue.trace(now, &message.message_id, "received", None);
                }
                let dlq_name = dead_letter.as_ref().map(|(_, _, name)| name.clone());
                for message in &dead {
                    queue.trace(now, message.record.id(), "dead-lettered", dlq_name.clone());
                }
                if let (Some(attempt), true) = (&request.attempt_id, queue.fifo && !received.is_empty()) {
                    queue.attempts.retain(|_, (expires, _)| *expires > now);
                    queue.attempts.insert(attempt.clone(), (now + DEDUP_WINDOW_MS, received.clone()));
                }
                // Without dead letters to move, commit under the lock, in the queue's order. A
                // receive's records need only be written, not synced: a power loss that loses them
                // delivers the messages again, which at-least-once delivery allows.
                let pending = (dead.is_empty() && !ops.is_empty())
                    .then(|| self.store.txn_with(Txn::ops(std::mem::take(&mut ops)), Durability::Written));
                (received, ops, dead, queue.next_visible_after(now), pending)
            };
            if let Some(pending) = pending {
                pending.await?;
            }
            if let Some((dlq, _, _)) = &dead_letter
                && !dead.is_empty()
            {
                self.transfer(dlq, dead, Some(id.arn()), ops).await?;
            }
            let now = tokio::time::Instant::now();
            if !received.is_empty() || now >= deadline {
                return Ok(received);
            }
            let mut wake = deadline;
            if let Some(at) = next_visible {
                wake = wake.min(now + Duration::from_millis(at.saturating_sub(now_ms())));
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            // Deleted (or deleted and created anew) while we waited.
            if !self.cell(id).is_ok_and(|current| Arc::ptr_eq(&current, &cell)) {
                return Err(SqsError::QueueDoesNotExist);
            }
        }
    }

    pub async fn delete_message(&self, id: &QueueId, receipt_handle: &str) -> Result<(), SqsError> {
        let mut results = self.delete_many(id, vec![receipt_handle.to_string()]).await?;
        results.pop().unwrap_or(Ok(()))
    }

    pub async fn delete_batch(
        &self,
        id: &QueueId,
        entries: Vec<(String, String)>,
    ) -> Result<Vec<(String, Result<(), SqsError>)>, SqsError> {
        check_batch_ids(entries.iter().map(|(entry_id, _)| entry_id.as_str()), "DeleteMessageBatchRequestEntry")?;
        let (ids, handles): (Vec<String>, Vec<String>) = entries.into_iter().unzip();
        let results = self.delete_many(id, handles).await?;
        Ok(ids.into_iter().zip(results).collect())
    }

    /// Deletes the messages the handles name. A handle from an earlier receive of a message that
    /// has been received again since succeeds without deleting it, as in SQS; in a FIFO queue, a
    /// handle whose visibility timeout has passed has expired.
    async fn delete_many(&self, id: &QueueId, handles: Vec<String>) -> Result<Vec<Result<(), SqsError>>, SqsError> {
        let cell = self.cell(id)?;
        let now = now_ms();
        let mut ops = Vec::new();
        let (results, pending) = {
            let mut queue = cell.lock();
            let results = handles
                .into_iter()
                .map(|handle| {
                    let (seq, token) = receipt_for(&queue, &handle)?;
                    let uid = queue.uid;
                    let current = queue.messages.get(&seq).filter(|m| m.token == token && !m.pending);
                    if queue.fifo && current.is_some_and(|m| m.visible_at_ms <= now) {
                        return Err(expired_handle(&handle));
                    }
                    if current.is_some()
                        && let Some(message) = queue.remove(seq)
                    {
                        queue.trace(now, message.record.id(), "deleted", None);
                        ops.extend(storage::delete_message_ops(uid, seq));
                        ops.extend(storage::keep_dedup_op(&mut queue, &message, now));
                    }
                    Ok(())
                })
                .collect();
            (results, (!ops.is_empty()).then(|| (queue.fifo, self.store.txn(Txn::ops(ops)))))
        };
        if let Some((fifo, pending)) = pending {
            pending.await?;
            // A FIFO message deleted may free the rest of its group for a waiting receive.
            if fifo {
                cell.changed.notify_waiters();
            }
        }
        Ok(results)
    }

    pub async fn change_visibility(&self, id: &QueueId, receipt_handle: &str, timeout: i64) -> Result<(), SqsError> {
        let mut results = self.change_visibility_many(id, vec![(receipt_handle.to_string(), timeout)]).await?;
        results.pop().unwrap_or(Ok(()))
    }

    pub async fn change_visibility_batch(
        &self,
        id: &QueueId,
        entries: Vec<(String, String, i64)>,
    ) -> Result<Vec<(String, Result<(), SqsError>)>, SqsError> {
        check_batch_ids(
            entries.iter().map(|(entry_id, _, _)| entry_id.as_str()),
            "ChangeMessageVisibilityBatchRequestEntry",
        )?;
        let ids: Vec<String> = entries.iter().map(|(entry_id, _, _)| entry_id.clone()).collect();
        let changes = entries.into_iter().map(|(_, handle, timeout)| (handle, timeout)).collect();
        let results = self.change_visibility_many(id, changes).await?;
        Ok(ids.into_iter().zip(results).collect())
    }

    async fn change_visibility_many(
        &self,
        id: &QueueId,
        changes: Vec<(String, i64)>,
    ) -> Result<Vec<Result<(), SqsError>>, SqsError> {
        let cell = self.cell(id)?;
        let now = now_ms();
        let mut ops = Vec::new();
        let (results, pending) = {
            let mut queue = cell.lock();
            let results: Vec<Result<(), SqsError>> = changes
                .into_iter()
                .map(|(handle, timeout)| {
                    if !(0..=43_200).contains(&timeout) {
                        return Err(SqsError::InvalidParameterValue(format!(
                            "Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided."
                        )));
                    }
                    let timeout = timeout as u64;
                    let (seq, token) = receipt_for(&queue, &handle)?;
                    let uid = queue.uid;
                    // The latest receive's handle, even once its visibility timeout has passed (the
                    // message is then hidden again), as in SQS. An earlier receive's handle, or one
                    // of a message since deleted, is refused as SQS refuses it (not with
                    // `MessageNotInflight`, which SQS's model lists but SQS is not seen to send).
                    let Some(message) = queue.messages.get(&seq).filter(|m| m.token == token && !m.pending) else {
                        return Err(SqsError::InvalidParameterValue(format!(
                            "Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
                        )));
                    };
                    // In a FIFO queue a handle expires with its visibility timeout (see `delete_many`).
                    if queue.fifo && message.visible_at_ms <= now {
                        return Err(expired_handle(&handle));
                    }
                    // In whole seconds: 43,200 set at once after a receive is allowed.
                    if message.received_ms > 0 && now.saturating_sub(message.received_ms) / 1000 + timeout > 43_200 {
                        return Err(SqsError::InvalidParameterValue(format!(
                            "Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [43200 seconds]"
                        )));
                    }
                    queue.set_visible_at(seq, now + timeout * 1000);
                    if let Some(message) = queue.messages.get(&seq) {
                        ops.push(storage::state_op(uid, message));
                    }
                    Ok(())
                })
                .collect();
            (results, (!ops.is_empty()).then(|| self.store.txn(Txn::ops(ops))))
        };
        if let Some(pending) = pending {
            pending.await?;
            cell.changed.notify_waiters();
        }
        Ok(results)
    }

    pub async fn purge(&self, id: &QueueId) -> Result<(), SqsError> {
        let cell = self.cell(id)?;
        let now = now_ms();
        let pending = {
            let mut queue = cell.lock();
            if queue.purged_at.is_some_and(|at| now < at + 60_000) {
                return Err(SqsError::PurgeQueueInProgress(id.arn()));
            }
            queue.purged_at = Some(now);
            let before = queue.next_seq;
            let doomed: Vec<u64> =
                queue.messages.range(..before).filter(|(_, m)| !m.pending).map(|(s, _)| *s).collect();
            // Exactly the messages removed: a send still being committed is not purged.
            let uid = queue.uid;
            let mut ops = Vec::with_capacity(doomed.len() * 2);
            for seq in doomed {
                if let Some(message) = queue.remove(seq) {
                    queue.trace(now, message.record.id(), "purged", None);
                    ops.extend(storage::delete_message_ops(uid, seq));
                    ops.extend(storage::keep_dedup_op(&mut queue, &message, now));
                }
            }
            self.store.txn(Txn::ops(ops))
        };
        pending.await?;
        Ok(())
    }
}

impl Sqs {
    /// Puts `messages`, already taken out of their queue (whose deletions are in `ops`), into
    /// `target` as new arrivals, committing both sides in one transaction.
    async fn transfer(
        &self,
        target: &Arc<QueueCell>,
        messages: Vec<Message>,
        dead_letter_source: Option<String>,
        mut ops: Vec<store::Op>,
    ) -> Result<(), SqsError> {
        let now = now_ms();
        let mut moved = Vec::new();
        let pending = {
            let mut queue = target.lock();
            if queue.deleted {
                // The messages are not in their old queue any more either: fail the whole move,
                // whose deletions were not committed, so a restart finds them where they were.
                return Err(SqsError::QueueDoesNotExist);
            }
            for mut message in messages {
                message.seq = queue.next_seq;
                queue.next_seq += 1;
                // A dead letter counts its receives on (SQS was recorded doing so); a message
                // moved back starts over, or it would be dead-lettered again at once.
                if dead_letter_source.is_none() {
                    message.receive_count = 0;
                    message.first_receive_ms = None;
                }
                message.received_ms = 0;
                message.token = 0;
                message.visible_at_ms = now;
                let sequence_number = queue.fifo.then(|| format!("{:020}", message.seq));
                message.record = message.record.moved(dead_letter_source.as_deref(), sequence_number.as_deref());
                message.pending = true;
                ops.extend(storage::message_ops(queue.uid, &message));
                moved.push(message.seq);
                queue.add_pending(message);
            }
            submit(&*self.store, &mut queue, ops, &moved, "arrived")
        };
        settle_in_background(target.clone(), moved, pending, "arrived").await
    }

    /// AddPermission: a statement in the queue's `Policy`, which is stored and returned (Stratus
    /// does not enforce policies).
    pub async fn add_permission(
        &self,
        id: &QueueId,
        label: &str,
        accounts: &[String],
        actions: &[String],
    ) -> Result<(), SqsError> {
        // What another account may be granted; the rest of SQS's actions are the owner's alone.
        const GRANTABLE: &[&str] = &[
            "*",
            "ChangeMessageVisibility",
            "DeleteMessage",
            "GetQueueAttributes",
            "GetQueueUrl",
            "ListDeadLetterSourceQueues",
            "PurgeQueue",
            "ReceiveMessage",
            "SendMessage",
        ];
        const OWNER_ONLY: &[&str] = &[
            "AddPermission",
            "CancelMessageMoveTask",
            "CreateQueue",
            "DeleteQueue",
            "ListMessageMoveTasks",
            "ListQueueTags",
            "ListQueues",
            "RemovePermission",
            "SetQueueAttributes",
            "StartMessageMoveTask",
            "TagQueue",
            "UntagQueue",
        ];
        if !valid_label(label) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {label} for parameter Label is invalid. Reason: Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length."
            )));
        }
        if actions.is_empty() {
            return Err(SqsError::MissingParameter("The request must contain the parameter Actions.".into()));
        }
        if accounts.is_empty() {
            return Err(SqsError::InvalidParameterValue(
                "Value [] for parameter PrincipalId is invalid. Reason: Unable to verify.".into(),
            ));
        }
        if actions.len() > 7 {
            return Err(SqsError::OverLimit(format!("{} Actions were found, maximum allowed is 7.", actions.len())));
        }
        if let Some(action) = actions.iter().find(|a| !GRANTABLE.contains(&a.as_str())) {
            let why = if OWNER_ONLY.contains(&action.as_str()) {
                "Only the queue owner is allowed to invoke this action."
            } else {
                "Please refer to the appropriate WSDL for a list of valid actions."
            };
            return Err(SqsError::InvalidParameterValue(format!(
                "Value SQS:{action} for parameter ActionName is invalid. Reason: {why}"
            )));
        }
        let arn = id.arn();
        self.edit_policy(id, |statements| {
            if statements.iter().any(|s| s["Sid"] == label) {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {label} for parameter Label is invalid. Reason: Already exists."
                )));
            }
            // One principal or action is a string, several a list, as SQS writes them.
            let one_or_list = |items: Vec<String>| match <[String; 1]>::try_from(items) {
                Ok([item]) => serde_json::Value::from(item),
                Err(items) => items.into(),
            };
            let principals = one_or_list(accounts.iter().map(|a| format!("arn:aws:iam::{a}:root")).collect());
            let actions = one_or_list(actions.iter().map(|a| format!("SQS:{a}")).collect());
            statements.push(serde_json::json!({
                "Sid": label, "Effect": "Allow", "Principal": { "AWS": principals }, "Action": actions, "Resource": arn,
            }));
            Ok(())
        })
        .await
    }

    pub async fn remove_permission(&self, id: &QueueId, label: &str) -> Result<(), SqsError> {
        self.edit_policy(id, |statements| {
            let before = statements.len();
            statements.retain(|s| s["Sid"] != label);
            if statements.len() == before {
                return Err(SqsError::InvalidParameterValue(format!(
                    "Value {label} for parameter Label is invalid. Reason: can't find label."
                )));
            }
            Ok(())
        })
        .await
    }

    async fn edit_policy(
        &self,
        id: &QueueId,
        edit: impl FnOnce(&mut Vec<serde_json::Value>) -> Result<(), SqsError>,
    ) -> Result<(), SqsError> {
        let cell = self.cell(id)?;
        let record = {
            let mut queue = cell.lock();
            let mut policy: serde_json::Value =
                queue.attributes.get("Policy").and_then(|p| serde_json::from_str(p).ok()).unwrap_or_else(
                    || serde_json::json!({ "Version": "2008-10-17", "Id": format!("{}/SQSDefaultPolicy", id.arn()) }),
                );
            let mut statements = match policy["Statement"].take() {
                serde_json::Value::Array(statements) => statements,
                _ => Vec::new(),
            };
            edit(&mut statements)?;
            if statements.is_empty() {
                queue.attributes.remove("Policy");
            } else {
                policy["Statement"] = statements.into();
                queue.attributes.insert("Policy".into(), policy.to_string());
            }
            // Submitted under the queue's lock: snapshots of the queue commit in the order taken.
            self.store.txn(Txn::ops(vec![storage::queue_op(&queue)]))
        };
        record.await?;
        Ok(())
    }

    /// Every queue with its counts and the latest events of its messages.
    pub fn inspect(&self) -> Vec<QueueView> {
        let cells: Vec<_> = self.registry().values().cloned().collect();
        let now = now_ms();
        let mut views: Vec<QueueView> = cells
            .iter()
            .map(|cell| {
                let queue = cell.lock();
                let (visible, in_flight, delayed) = queue.counts(now);
                QueueView {
                    id: queue.id.clone(),
                    fifo: queue.fifo,
                    visible,
                    in_flight,
                    delayed,
                    recent: queue.recent.iter().cloned().collect(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Drops messages past their retention period (receives skip them anyway; this keeps the
    /// counts and the store honest).
    async fn expire(&self) -> Result<(), SqsError> {
        let cells: Vec<_> = self.registry().values().cloned().collect();
        let now = now_ms();
        for cell in cells {
            {
                let mut queue = cell.lock();
                if !queue.may_have_expired(now) {
                    continue;
                }
                queue.added_during_sweep = u64::MAX;
            }
            let (mut from, mut oldest) = (Some(0), u64::MAX);
            while let Some(start) = from {
                let pending = {
                    let mut queue = cell.lock();
                    let uid = queue.uid;
                    let (expired, next, oldest_kept) = queue.expired(now, start, EXPIRY_PART);
                    (from, oldest) = (next, oldest.min(oldest_kept));
                    if from.is_none() {
                        // A whole pass: the oldest kept, or added since it began.
                        queue.oldest_sent_ms = oldest.min(queue.added_during_sweep);
                    }
                    let mut ops = Vec::new();
                    for seq in expired {
                        if let Some(message) = queue.remove(seq) {
                            queue.trace(now, message.record.id(), "expired", None);
                            ops.extend(storage::delete_message_ops(uid, seq));
                            ops.extend(storage::keep_dedup_op(&mut queue, &message, now));
                        }
                    }
                    (!ops.is_empty()).then(|| self.store.txn(Txn::ops(ops)))
                };
                match pending {
                    Some(pending) => _ = pending.await?,
                    // The requests this runtime thread also serves go first.
                    None => tokio::task::yield_now().await,
                }
            }
        }
        Ok(())
    }
}

/// A queue as `/_stratus/sqs` shows it.
pub struct QueueView {
    pub id: QueueId,
    pub fifo: bool,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub recent: Vec<Trace>,
}

/// The transaction that makes new messages durable, submitted under their queue's lock.
enum Commit {
    /// Committed as it was submitted (the memory engine), its messages settled under that lock.
    Settled(store::Result<store::TxnResponse>),
    Pending(store::TxnFuture),
}

/// Submits `ops`, which add the messages `added` to `queue`, whose lock the caller holds. When the
/// store commits in this thread, settles them at once, rather than in a second turn of the lock
/// (with 16 connections on one queue, that second turn was most of the lock's contention).
fn submit(store: &dyn Store, queue: &mut Queue, ops: Vec<store::Op>, added: &[u64], event: &'static str) -> Commit {
    let mut pending = store.txn(Txn::ops(ops));
    match pending.outcome_now() {
        Some(outcome) => {
            settle(queue, added, outcome.is_ok(), event);
            Commit::Settled(outcome)
        }
        None => Commit::Pending(pending),
    }
}

/// Once the commit is durable, makes the messages `added` to the queue receivable (or drops them
/// if the commit failed) and wakes receivers. It runs in the request's own task; if that is
/// cancelled mid-commit, `Settle`'s drop finishes the work in a task of its own, so that no message
/// stays pending forever. (Spawning that task for every send cost a spawn and a wake-up each.)
async fn settle_in_background(
    cell: Arc<QueueCell>,
    added: Vec<u64>,
    commit: Commit,
    event: &'static str,
) -> Result<(), SqsError> {
    let pending = match commit {
        Commit::Settled(outcome) => {
            cell.changed.notify_waiters();
            outcome?;
            return Ok(());
        }
        Commit::Pending(pending) => pending,
    };
    let mut settle = Settle { cell, added, event, pending: Some(pending) };
    let Some(pending) = settle.pending.as_mut() else { return Ok(()) };
    let committed = pending.await;
    settle.pending = None;
    settle_now(&settle.cell, &settle.added, committed.is_ok(), settle.event);
    committed?;
    Ok(())
}

struct Settle {
    cell: Arc<QueueCell>,
    added: Vec<u64>,
    event: &'static str,
    /// The commit, until it resolves.
    pending: Option<store::TxnFuture>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (cell, added, event) = (self.cell.clone(), std::mem::take(&mut self.added), self.event);
            runtime.spawn(async move {
                let committed = pending.await.is_ok();
                settle_now(&cell, &added, committed, event);
            });
        }
    }
}

fn settle_now(cell: &QueueCell, added: &[u64], committed: bool, event: &'static str) {
    settle(&mut cell.lock(), added, committed, event);
    cell.changed.notify_waiters();
}

fn settle(queue: &mut Queue, added: &[u64], committed: bool, event: &'static str) {
    let now = now_ms();
    for &seq in added {
        if committed {
            queue.commit(seq);
            if let Some(id) = queue.messages.get(&seq).map(|m| m.record.id().to_string()) {
                queue.trace(now, id, event, None);
            }
        } else if let Some(message) = queue.remove(seq) {
            queue.dedup.retain(|_, (_, id, _)| id != message.record.id());
        }
    }
}

enum Prepared {
    New(Box<Message>, Sent),
    /// A FIFO message whose deduplication id was seen in the last 5 minutes.
    Duplicate(Sent),
}

fn message_size(message: &SendMessage) -> u64 {
    let attributes: usize = message
        .attributes
        .iter()
        .map(|a| {
            a.name.len()
                + a.data_type.len()
                + match &a.value {
                    AttributeValue::String(s) => s.len(),
                    AttributeValue::Binary(b) => b.len(),
                }
        })
        .sum();
    (message.body.len() + attributes) as u64
}

fn valid_characters(text: &str) -> bool {
    text.chars().all(
        |c| matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..),
    )
}

fn prepare(queue: &mut Queue, sender: &str, message: SendMessage, now: u64) -> Result<Prepared, SqsError> {
    if message.body.is_empty() {
        return Err(SqsError::MissingParameter("The request must contain the parameter MessageBody.".into()));
    }
    if !valid_characters(&message.body) {
        return Err(SqsError::InvalidMessageContents("Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF".into()));
    }
    let limit = queue.attribute_u64("MaximumMessageSize");
    let size = message_size(&message);
    if size > limit {
        return Err(SqsError::InvalidParameterValue(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
        )));
    }
    check_message_attributes(&message.attributes)?;
    let delay = match message.delay_seconds {
        // FIFO messages have no delay of their own; 0 asks for none, and gets the queue's.
        Some(0) if queue.fifo => queue.attribute_u64("DelaySeconds"),
        Some(d) if queue.fifo => {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {d} for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type."
            )));
        }
        Some(d) if !(0..=900).contains(&d) => {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {d} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
            )));
        }
        Some(d) => d as u64,
        None => queue.attribute_u64("DelaySeconds"),
    };
    for (parameter, value) in [("MessageGroupId", &message.group_id), ("MessageDeduplicationId", &message.dedup_id)] {
        if let Some(value) = value.as_deref().filter(|v| !valid_fifo_id(v)) {
            return Err(SqsError::InvalidParameterValue(format!(
                "Value {value} for parameter {parameter} is invalid. Reason: {parameter} can only include alphanumeric and punctuation characters. 1 to 128 in length."
            )));
        }
    }
    let md5_of_body = digest::md5_hex(message.body.as_bytes());
    let md5_of_attributes = digest::md5_of_attributes(&message.attributes);
    let md5_of_system_attributes = digest::md5_of_attributes(&message.system_attributes);
    let (group_id, dedup_id) = if queue.fifo {
        let group = message.group_id.ok_or_else(|| SqsError::MissingParameter(NO_GROUP.into()))?;
        let dedup = match message.dedup_id {
            Some(d) => d,
            None if queue.content_based_deduplication() => digest::content_deduplication_id(&message.body),
            None => {
                return Err(SqsError::InvalidParameterValue(NO_DEDUPLICATION_ID.into()));
            }
        };
        (Some(group), Some(dedup))
    } else if let Some(dedup) = message.dedup_id {
        // A standard queue takes a group id (fair queues), never a deduplication id.
        return Err(SqsError::InvalidParameterValue(format!(
            "Value {dedup} for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type."
        )));
    } else {
        (message.group_id, None)
    };
    let dedup_key = dedup_id.as_ref().map(|dedup| queue.dedup_key(group_id.as_deref(), dedup));
    // The window was expired by the caller (`send_many`), which also clears stored ids.
    if let Some((_, message_id, sequence_number)) = dedup_key.as_ref().and_then(|key| queue.dedup.get(key)) {
        return Ok(Prepared::Duplicate(Sent {
            message_id: message_id.clone(),
            md5_of_body,
            md5_of_attributes,
            md5_of_system_attributes,
            sequence_number: Some(sequence_number.clone()),
        }));
    }
    let seq = queue.next_seq;
    queue.next_seq += 1;
    let message_id = uuid::Uuid::new_v4().to_string();
    let sequence_number = queue.fifo.then(|| format!("{seq:020}"));
    if let Some(key) = dedup_key {
        queue.remember_dedup(
            key,
            now + DEDUP_WINDOW_MS,
            message_id.clone(),
            sequence_number.clone().unwrap_or_default(),
        );
    }
    // After the checksums: the client computed MD5OfMessageSystemAttributes over what it sent.
    let mut system_attributes = message.system_attributes;
    if let Some(trace) = message.trace_header.filter(|_| !system_attributes.iter().any(|a| a.name == "AWSTraceHeader"))
    {
        let value = AttributeValue::String(trace);
        system_attributes.push(MessageAttribute { name: "AWSTraceHeader".into(), data_type: "String".into(), value });
    }
    let record = Record::new(&StoredMessage {
        id: &message_id,
        body: &message.body,
        attributes: storage::to_stored(&message.attributes),
        system_attributes: storage::to_stored(&system_attributes),
        sender_id: sender,
        sent_ms: now,
        group_id: group_id.as_deref(),
        dedup_id: dedup_id.as_deref(),
        sequence_number: sequence_number.as_deref(),
        dead_letter_source: None,
    });
    let sent = Sent { message_id, md5_of_body, md5_of_attributes, md5_of_system_attributes, sequence_number };
    let message = Message {
        seq,
        record,
        sent_ms: now,
        receive_count: 0,
        first_receive_ms: None,
        received_ms: 0,
        visible_at_ms: now + delay * 1000,
        token: 0,
        group_id,
        pending: true,
    };
    Ok(Prepared::New(Box::new(message), sent))
}

/// A message group or deduplication id: 1 to 128 alphanumeric and punctuation characters
/// (printable ASCII but the space). SNS's FIFO topics take the same.
pub fn valid_fifo_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

const NO_GROUP: &str = "The request must contain the parameter MessageGroupId.";

const NO_DEDUPLICATION_ID: &str =
    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly";

const TAG_KEYS: &str = "Tag keys must be between 1 and 128 characters in length.";

/// A change of a queue's tags: keys of 1 to 128 characters, values of up to 256, and at most 50
/// tags after it (the developer guide's limits). The messages follow moto's: SQS's own are not
/// recorded anywhere we found.
fn check_tags(
    id: &QueueId,
    added: &BTreeMap<String, String>,
    removed: &[String],
    count: usize,
) -> Result<(), SqsError> {
    let invalid = |why: &str| Err(SqsError::InvalidParameterValue(why.into()));
    if added.keys().chain(removed).any(|k| k.is_empty() || k.chars().count() > 128) {
        return invalid(TAG_KEYS);
    }
    if added.values().any(|v| v.chars().count() > 256) {
        return invalid("Tag values must be between 0 and 256 characters in length.");
    }
    if count > 50 {
        return invalid(&format!("Too many tags added for queue {}.", id.name));
    }
    Ok(())
}

fn check_message_attributes(attributes: &[MessageAttribute]) -> Result<(), SqsError> {
    if attributes.len() > 10 {
        return Err(SqsError::InvalidParameterValue(
            "Number of message attributes [11] exceeds the allowed maximum [10].".into(),
        ));
    }
    for attribute in attributes {
        if let Some(problem) = attribute_name_problem(&attribute.name) {
            return Err(SqsError::InvalidParameterValue(problem.into()));
        }
        let base = attribute.data_type.split('.').next().unwrap_or("");
        let empty = match &attribute.value {
            AttributeValue::String(s) => s.is_empty(),
            AttributeValue::Binary(b) => b.is_empty(),
        };
        if empty && matches!(base, "String" | "Number" | "Binary") {
            return Err(SqsError::InvalidParameterValue(format!(
                "Message (user) attribute '{}' must contain a non-empty value of type '{base}'.",
                attribute.name
            )));
        }
        if let (AttributeValue::String(s), "Number") = (&attribute.value, base)
            && s.trim().parse::<f64>().is_err()
        {
            return Err(SqsError::InvalidParameterValue(format!(
                "Can't cast the value of message (user) attribute '{}' to a number.",
                attribute.name
            )));
        }
        let fits = match (&attribute.value, base) {
            (AttributeValue::String(s), "String") => valid_characters(s),
            (AttributeValue::String(_), "Number") => true, // a number, checked above
            (AttributeValue::Binary(_), "Binary") => true,
            _ => false,
        };
        if !fits {
            return Err(SqsError::InvalidParameterValue(format!(
                "The message attribute '{}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String.",
                attribute.name
            )));
        }
    }
    Ok(())
}

/// A queue name (before any `.fifo`), a permission label or a batch entry id: 1 to 80 letters,
/// digits, `-` or `_`.
fn valid_label(text: &str) -> bool {
    (1..=80).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What is wrong with a message attribute's name, if anything, by the developer guide's rules
/// (SNS documents the same): letters, digits, `_`, `-` and `.`, not starting with `AWS.` or
/// `Amazon.` in any case, not starting or ending with `.`, no `..`. The messages and the 256-byte
/// bound are SQS's as LocalStack's AWS-checked tests record them; the letters include U+00C0 to
/// U+017F, which SQS was seen to accept.
pub fn attribute_name_problem(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    if name.is_empty() {
        Some("The request must contain non-empty message (user) attribute names.")
    } else if name.len() >= 256 {
        Some("Message (user) attribute names must be shorter than 256 Bytes")
    } else if !name.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.')
            || ('\u{c0}'..='\u{17f}').contains(&c) && c.is_alphabetic()
    }) {
        Some(
            "Message (user) attributes name can only contain upper and lower score characters, digits, periods, hyphens and underscores. ",
        )
    } else if lower.starts_with("aws.") || lower.starts_with("amazon.") || name.starts_with('.') || name.ends_with('.')
    {
        Some(
            "You can't use message attribute names beginning with 'AWS.' or 'Amazon.'. These strings are reserved for internal use. Additionally, they cannot start or end with '.'.",
        )
    } else if name.contains("..") {
        Some("Message (user) attribute name must not have successive '.' characters.")
    } else {
        None
    }
}

/// Ids are alphanumeric, `-` or `_`, at most 80 long, distinct, 1 to 10 of them.
fn check_batch_ids<'a>(ids: impl Iterator<Item = &'a str>, entry_name: &'static str) -> Result<(), SqsError> {
    let ids: Vec<&str> = ids.collect();
    if ids.is_empty() {
        return Err(SqsError::EmptyBatchRequest(entry_name));
    }
    if ids.len() > 10 {
        return Err(SqsError::TooManyEntriesInBatchRequest(ids.len()));
    }
    for (i, id) in ids.iter().enumerate() {
        if !valid_label(id) {
            return Err(SqsError::InvalidBatchEntryId);
        }
        if ids[..i].contains(id) {
            return Err(SqsError::BatchEntryIdsNotDistinct(id.to_string()));
        }
    }
    Ok(())
}

fn deliver(queue: &Queue, message: &Message, request: &Receive) -> Received {
    let fields = message.record.fields();
    let wants = |name: &str| request.system_attribute_names.iter().any(|n| n == "All" || n == name);
    let mut system = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value.filter(|_| wants(name)) {
            system.push((name.to_string(), value));
        }
    };
    add("SenderId", Some(fields.sender_id.to_string()));
    add("SentTimestamp", Some(message.sent_ms.to_string()));
    add("ApproximateReceiveCount", Some(message.receive_count.to_string()));
    add("ApproximateFirstReceiveTimestamp", message.first_receive_ms.map(|t| t.to_string()));
    add("SequenceNumber", fields.sequence_number.map(String::from));
    add("MessageDeduplicationId", fields.dedup_id.map(String::from));
    add("MessageGroupId", fields.group_id.map(String::from));
    add("DeadLetterQueueSourceArn", fields.dead_letter_source.map(String::from));
    for &(name, _, value, _) in &fields.system_attributes {
        if let Some(value) = value {
            add(name, Some(value.to_string()));
        }
    }
    let selected: Vec<MessageAttribute> = fields
        .attributes
        .iter()
        .filter(|(name, ..)| {
            // `*` too: SQS was recorded returning every attribute for it.
            request.message_attribute_names.iter().any(|n| {
                matches!(n.as_str(), "All" | ".*" | "*")
                    || n == name
                    || n.strip_suffix(".*").is_some_and(|prefix| name.starts_with(prefix))
            })
        })
        .map(storage::from_stored)
        .collect();
    Received {
        message_id: fields.id.to_string(),
        receipt_handle: receipt(queue.uid, message.seq, message.token),
        body: fields.body.to_string(),
        md5_of_body: digest::md5_hex(fields.body.as_bytes()),
        md5_of_attributes: digest::md5_of_attributes(&selected),
        attributes: selected,
        system_attributes: system,
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An opaque handle naming the queue, the message and which receive of it this was.
fn receipt(uid: u64, seq: u64, token: u64) -> String {
    BASE64.encode(format!("{uid:x}:{seq:x}:{token:x}:{:016x}", fastrand::u64(..)))
}

/// The (sequence, token) a receipt handle names, if it is one of this queue's.
fn receipt_for(queue: &Queue, handle: &str) -> Result<(u64, u64), SqsError> {
    match parse_receipt(handle) {
        Some((uid, seq, token)) if uid == queue.uid => Ok((seq, token)),
        Some(_) => Err(SqsError::ReceiptHandleIsInvalid(format!(
            "The receipt handle \"{handle}\" is not valid for this queue."
        ))),
        None => Err(SqsError::ReceiptHandleIsInvalid(format!(
            "The input receipt handle \"{handle}\" is not a valid receipt handle."
        ))),
    }
}

fn expired_handle(handle: &str) -> SqsError {
    SqsError::InvalidParameterValue(format!(
        "Value {handle} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
    ))
}

fn parse_receipt(handle: &str) -> Option<(u64, u64, u64)> {
    let text = String::from_utf8(BASE64.decode(handle).ok()?).ok()?;
    let mut parts = text.split(':').map(|p| u64::from_str_radix(p, 16).ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// One page of queues of one account and region, by name: those after the one `next_token`
/// names, at most `max_results` (1 to 1,000) of them, and the token of the next page. As in SQS,
/// only a request that sets `max_results` gets a token.
fn page(
    mut ids: Vec<QueueId>,
    max_results: Option<usize>,
    next_token: Option<&str>,
) -> Result<(Vec<QueueId>, Option<String>), SqsError> {
    if max_results.is_some_and(|m| !(1..=1000).contains(&m)) {
        return Err(SqsError::InvalidParameterValue(
            "Value for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and 1000."
                .into(),
        ));
    }
    if let Some(token) = next_token {
        let after =
            decode_token(token).ok_or_else(|| SqsError::InvalidParameterValue("Invalid NextToken value.".into()))?;
        ids.retain(|id| id.name > after);
    }
    ids.sort();
    let limit = max_results.unwrap_or(1000);
    let more = ids.len() > limit && max_results.is_some();
    ids.truncate(limit);
    let token = if more { ids.last().map(|id| encode_token(&id.name)) } else { None };
    Ok((ids, token))
}

fn encode_token(name: &str) -> String {
    BASE64.encode(name)
}

fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(BASE64.decode(token).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_garbage() {
        let handle = receipt(7, 99, 3);
        assert_eq!(parse_receipt(&handle), Some((7, 99, 3)));
        assert_ne!(receipt(7, 99, 3), handle, "each receipt is unique");
        assert_eq!(parse_receipt("not a handle"), None);
        assert_eq!(parse_receipt(""), None);
    }

    #[test]
    fn batch_ids() {
        assert!(check_batch_ids(["a", "b"].into_iter(), "E").is_ok());
        assert!(matches!(check_batch_ids(["a", "a"].into_iter(), "E"), Err(SqsError::BatchEntryIdsNotDistinct(_))));
        assert!(matches!(check_batch_ids(std::iter::empty(), "E"), Err(SqsError::EmptyBatchRequest(_))));
        assert!(matches!(check_batch_ids(["x"; 11].into_iter(), "E"), Err(SqsError::TooManyEntriesInBatchRequest(11))));
        assert!(matches!(check_batch_ids(["bad id"].into_iter(), "E"), Err(SqsError::InvalidBatchEntryId)));
    }

    #[test]
    fn arns() {
        let id = QueueId { account: "000000000000".into(), region: "eu-west-1".into(), name: "q".into() };
        assert_eq!(QueueId::from_arn(&id.arn()), Some(id));
        assert_eq!(QueueId::from_arn("arn:aws:sns:eu-west-1:0:q"), None);
    }
}
