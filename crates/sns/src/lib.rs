//! Amazon SNS, the domain: topics, subscriptions, filter policies and durable fan-out.
//!
//! The control plane (topics, subscriptions, the SMS sandbox) is kept in memory behind one lock
//! and written through to the store. Publish is an *outbox*: the message and the subscriptions it
//! is for are stored in one transaction before Publish answers, and deliveries run afterwards
//! (`delivery.rs`), deleting the outbox record once every target is done. On start, whatever is
//! left in the outbox is delivered again, so nothing acknowledged is lost.

mod control;
mod delivery;
pub mod filter;
mod model;
mod policy;
mod publish;
pub mod signing;
mod storage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sqs::Sqs;
use store::Store;

pub use control::{Page, SubscriptionSummary};
pub use model::{Subscription, Topic, TopicId};
pub use publish::{Publish, Published};
pub use sqs::{AttributeValue, MessageAttribute};
use storage::Records;

/// Protocols a subscription may use.
pub const PROTOCOLS: &[&str] =
    &["http", "https", "email", "email-json", "sms", "sqs", "application", "lambda", "firehose"];

/// SNS's errors, each with the message SNS sends. The adapter maps each to its wire code.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("Invalid parameter: {0}")]
    InvalidParameter(String),
    /// `ParameterValueInvalid` on the wire (message attributes).
    #[error("{0}")]
    ParameterValueInvalid(String),
    #[error("{0} does not exist")]
    NotFound(&'static str),
    #[error("Resource does not exist")]
    ResourceNotFound,
    #[error("{0}")]
    AuthorizationError(String),
    #[error("Could not complete request: tag quota of per resource exceeded")]
    TagLimitExceeded,
    #[error("The batch request doesn't contain any entries.")]
    EmptyBatchRequest,
    #[error("The batch request contains more entries than permissible.")]
    TooManyEntriesInBatchRequest,
    #[error("Two or more batch entries in the request have the same Id.")]
    BatchEntryIdsNotDistinct,
    #[error(
        "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."
    )]
    InvalidBatchEntryId,
    #[error("The length of all the messages put together is more than the limit.")]
    BatchRequestTooLong,
    #[error("Invalid one-time password")]
    Verification,
    #[error("no signing key")]
    Signing(#[source] signing::SigningError),
    #[error("storage failed")]
    Store(#[from] store::StoreError),
}

impl SnsError {
    fn invalid(what: impl Into<String>) -> SnsError {
        SnsError::InvalidParameter(what.into())
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// ISO 8601 with milliseconds, as SNS writes timestamps.
pub(crate) fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// How the edge is reached from outside, for the URLs SNS puts in messages (SubscribeURL,
/// UnsubscribeURL, SigningCertURL): e.g. `http://localhost:4566`.
#[derive(Clone, Debug)]
pub struct Endpoint(pub String);

pub struct Sns {
    store: Arc<dyn Store>,
    state: Mutex<State>,
    delivery: Arc<delivery::Delivery>,
    /// The next outbox sequence number.
    next_seq: AtomicU64,
}

/// The control plane. One lock: SNS's control calls are rare next to Publish, which only reads.
#[derive(Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    subscriptions: BTreeMap<String, Subscription>,
    /// FIFO deduplication: (topic ARN, deduplication id) → (expiry ms, message id, sequence number).
    dedup: HashMap<(String, String), (u64, String, String)>,
    /// The same keys by expiry, oldest first, so that expiring them costs no scan.
    dedup_expiry: VecDeque<(u64, (String, String))>,
    sandbox: BTreeMap<(String, String, String), storage::SandboxNumber>,
    sms_attributes: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// HTTP(S) subscriptions removed by Unsubscribe, by token: the SubscribeURL of their
    /// UnsubscribeConfirmation restores them for three days, as in SNS. (expiry ms, subscription)
    departed: HashMap<String, (u64, Subscription)>,
}

impl State {
    /// A topic's subscriptions, found by their ARNs' prefix (`<topic arn>:`), not by a scan.
    fn subscriptions_of<'a>(&'a self, topic_arn: &str) -> impl Iterator<Item = &'a Subscription> + 'a {
        let prefix = format!("{topic_arn}:");
        self.subscriptions.range(prefix.clone()..).take_while(move |(arn, _)| arn.starts_with(&prefix)).map(|(_, s)| s)
    }
}

impl Sns {
    /// Loads topics and subscriptions and resumes the deliveries left in the outbox.
    pub async fn open(store: Arc<dyn Store>, sqs: Arc<Sqs>, endpoint: Endpoint) -> Result<Arc<Sns>, SnsError> {
        let Records { topics, subscriptions, sandbox, sms_attributes, signer, outbox, dedup, departed } =
            storage::load(store.as_ref()).await?;
        let now = now_ms();
        let (live, expired): (Vec<_>, Vec<_>) = dedup.into_iter().partition(|(_, (expiry, _, _))| *expiry > now);
        let gone: Vec<store::Op> =
            expired.iter().map(|((t, id), _)| store::Op::delete(storage::dedup_key(t, id))).collect();
        if !gone.is_empty() {
            store.txn(store::Txn::ops(gone)).await?;
        }
        let mut dedup_expiry: Vec<(u64, (String, String))> =
            live.iter().map(|(k, (e, _, _))| (*e, k.clone())).collect();
        dedup_expiry.sort();
        // Outbox sequence numbers double as FIFO sequence numbers, so they must keep growing
        // across restarts even when the outbox is empty: they start from the clock.
        let next_seq = outbox.last().map_or(0, |o| o.seq + 1).max(now_ms() * 1000);
        let state = State {
            topics: topics.into_iter().map(|t| (t.arn.clone(), t)).collect(),
            subscriptions: subscriptions.into_iter().map(|s| (s.arn.clone(), s)).collect(),
            sandbox,
            sms_attributes,
            dedup: live.into_iter().collect(),
            dedup_expiry: dedup_expiry.into(),
            departed: departed.into_iter().collect(),
        };
        let delivery = delivery::Delivery::new(store.clone(), sqs, signer, endpoint);
        let sns = Arc::new(Sns { store, state: Mutex::new(state), delivery, next_seq: AtomicU64::new(next_seq) });
        // Resuming may wait for room in the lanes; it must not hold up the start.
        let (delivery, weak) = (sns.delivery.clone(), Arc::downgrade(&sns));
        tokio::spawn(async move { delivery.start(weak, outbox).await });
        Ok(sns)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets everything; the caller has wiped the store.
    pub fn reset(&self) {
        *self.state() = State::default();
        self.delivery.reset();
    }

    /// (topics, subscriptions)
    pub fn summary(&self) -> (usize, usize) {
        let state = self.state();
        (state.topics.len(), state.subscriptions.len())
    }

    /// The signing certificate, in PEM, served at SigningCertURL.
    pub async fn signing_certificate(&self) -> Result<String, SnsError> {
        self.delivery.certificate_pem().await
    }

    /// The inspection view: topics with their subscriptions, and recent messages with each
    /// delivery attempt (newest first), optionally for one topic.
    pub fn inspect(&self, topic_arn: Option<&str>) -> serde_json::Value {
        let topics: Vec<serde_json::Value> = {
            let state = self.state();
            let selected = state.topics.values().filter(|t| topic_arn.is_none_or(|arn| t.arn == arn));
            selected
                .map(|t| {
                    let subscriptions: Vec<serde_json::Value> = state
                        .subscriptions_of(&t.arn)
                        .map(|s| {
                            serde_json::json!({
                                "subscriptionArn": s.arn,
                                "protocol": s.protocol,
                                "endpoint": s.endpoint,
                                "confirmed": s.confirmed,
                                "raw": s.raw(),
                                "filterPolicy": s.attributes.get("FilterPolicy"),
                                "filterPolicyScope": s.attributes.get("FilterPolicyScope"),
                                "deadLetterQueue": s.dead_letter_queue().map(|q| q.arn()),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "topicArn": t.arn,
                        "fifo": t.fifo(),
                        "subscriptions": subscriptions,
                    })
                })
                .collect()
        };
        serde_json::json!({ "topics": topics, "messages": self.delivery.recent(topic_arn) })
    }

    /// What was sent to endpoints outside the machine (email, SMS, mobile, Firehose, Lambda),
    /// oldest first, each filter applied when given.
    pub async fn outbox(&self, filter: &OutboxFilter) -> Result<Vec<serde_json::Value>, SnsError> {
        let prefix = storage::mail_prefix();
        let records = self.store.range(&prefix, &store::prefix_end(&prefix), None).await?;
        let mut out = Vec::new();
        for kv in records {
            let Ok(mail) = serde_json::from_slice::<delivery::Mail>(&kv.value) else { continue };
            let keep = [
                (&filter.protocol, Some(&mail.protocol)),
                (&filter.endpoint, Some(&mail.endpoint)),
                (&filter.topic_arn, mail.topic_arn.as_ref()),
                (&filter.account, Some(&mail.account)),
            ]
            .iter()
            .all(|(wanted, actual)| wanted.as_ref().is_none_or(|w| Some(w) == *actual));
            if keep {
                out.push(serde_json::json!({
                    "account": mail.account,
                    "region": mail.region,
                    "protocol": mail.protocol,
                    "endpoint": mail.endpoint,
                    "source": mail.source,
                    "topicArn": mail.topic_arn,
                    "subscriptionArn": mail.subscription_arn,
                    "messageId": mail.message_id,
                    "subject": mail.subject,
                    "body": mail.body,
                    "timestamp": timestamp(mail.timestamp_ms),
                }));
            }
        }
        Ok(out)
    }

    /// Empties the outbox of mail.
    pub async fn clear_outbox(&self) -> Result<(), SnsError> {
        let prefix = storage::mail_prefix();
        let clear = store::Op::DeleteRange { start: prefix.clone(), end: store::prefix_end(&prefix) };
        self.store.txn(store::Txn::ops(vec![clear])).await?;
        Ok(())
    }
}

/// Filters for [`Sns::outbox`].
#[derive(Clone, Debug, Default)]
pub struct OutboxFilter {
    pub protocol: Option<String>,
    pub endpoint: Option<String>,
    pub topic_arn: Option<String>,
    pub account: Option<String>,
}
