//! Delivery. Each topic has a *lane*: a task that takes the topic's outbox entries in publish
//! order, up to 64 at a time, and makes the first attempt at all their local targets (queues and
//! the mail outbox) together, each queue's share in one SQS transaction. HTTP(S) targets, and
//! targets to be retried, continue in a task per entry that follows the delivery policy. Targets
//! that succeed, or fail for good (then going to their dead-letter queue), are done. An outbox
//! record is rewritten with the targets still to go after a round that leaves some, and deleted
//! when none remain, so a restart redelivers only what was not done. When all of an entry's
//! targets are in one queue, its record is deleted in the transaction that delivers it there:
//! delivered and done commit together, once.
//!
//! Protocols: `sqs` into Stratus's own queues, `http`/`https` as a real POST, and everything
//! that would leave the machine (email, SMS, mobile push, Firehose, and Lambda until Stratus runs
//! functions) as a *mail* record the user reads back from `/_stratus/sns/outbox`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqs::{AttributeValue, MessageAttribute, QueueId, SendMessage, Sqs, SqsError};
use store::Store;
use tokio::sync::mpsc;

use crate::model::{Subscription, Topic};
use crate::policy::{RetryPolicy, queue_allows_topic};
use crate::signing::{Signer, canonical_string};
use crate::storage::{self, put};
use crate::{Endpoint, Sns, SnsError, now_ms, timestamp};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// SNS gives an HTTP endpoint 15 seconds to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries into queues fail only while the store is failing; a few spaced retries.
const QUEUE_RETRIES: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(20)];
/// How many recent messages the inspection view keeps.
const TRACE_MESSAGES: usize = 256;
/// At most this many outbox entries are delivered together.
const LANE_BATCH: usize = 64;
/// Entries waiting in a topic's lane before Publish waits for room.
const LANE_CAPACITY: usize = 1024;
/// The cores to sign on, read once: asking reads the cgroup's files each time (it cost 8% of
/// the CPU of a raw-delivery load when asked per batch).
static SIGNING_THREADS: LazyLock<usize> = LazyLock::new(|| std::thread::available_parallelism().map_or(1, usize::from));

/// A target still to try: its next attempt number and when that is due.
type Scheduled = (Target, usize, tokio::time::Instant);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Notification => "Notification",
            Kind::SubscriptionConfirmation => "SubscriptionConfirmation",
            Kind::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// (name, data type, string value, binary value)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredAttribute(String, String, Option<String>, Option<Vec<u8>>);

impl From<&MessageAttribute> for StoredAttribute {
    fn from(a: &MessageAttribute) -> Self {
        match &a.value {
            AttributeValue::String(s) => StoredAttribute(a.name.clone(), a.data_type.clone(), Some(s.clone()), None),
            AttributeValue::Binary(b) => StoredAttribute(a.name.clone(), a.data_type.clone(), None, Some(b.clone())),
        }
    }
}

impl StoredAttribute {
    fn to_attribute(&self) -> MessageAttribute {
        let value = match (&self.2, &self.3) {
            (_, Some(binary)) => AttributeValue::Binary(binary.clone()),
            (string, None) => AttributeValue::String(string.clone().unwrap_or_default()),
        };
        MessageAttribute { name: self.0.clone(), data_type: self.1.clone(), value }
    }

    /// `{"Type": ..., "Value": ...}` as the SNS envelope shows an attribute (binary in base64).
    fn envelope_value(&self) -> Value {
        let value = match (&self.2, &self.3) {
            (_, Some(binary)) => BASE64.encode(binary),
            (string, None) => string.clone().unwrap_or_default(),
        };
        json!({ "Type": self.1, "Value": value })
    }
}

/// One subscription a message is still to be delivered to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Target {
    pub subscription_arn: String,
    pub protocol: String,
    pub endpoint: String,
    pub raw: bool,
}

/// An outbox entry: a message and the deliveries still to make.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    pub seq: u64,
    pub kind: Kind,
    pub message_id: String,
    pub topic_arn: String,
    pub account: String,
    pub region: String,
    pub subject: Option<String>,
    pub message: String,
    /// MessageStructure=json: the message for each protocol, "default" for the others.
    pub per_protocol: Option<BTreeMap<String, String>>,
    pub attributes: Vec<StoredAttribute>,
    pub timestamp_ms: u64,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub sequence_number: Option<String>,
    pub signature_version: String,
    /// SubscriptionConfirmation: the token ConfirmSubscription takes.
    pub token: Option<String>,
    pub targets: Vec<Target>,
}

impl Outgoing {
    /// A SubscriptionConfirmation (Subscribe) or an UnsubscribeConfirmation (Unsubscribe).
    pub fn confirmation(seq: u64, kind: Kind, topic: &Topic, subscription: &Subscription) -> Outgoing {
        let message = match kind {
            Kind::UnsubscribeConfirmation => format!(
                "You have chosen to deactivate subscription {}.\nTo cancel this operation and restore the subscription, visit the SubscribeURL included in this message.",
                subscription.arn
            ),
            _ => format!(
                "You have chosen to subscribe to the topic {}.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
                topic.arn
            ),
        };
        Outgoing {
            seq,
            kind,
            message_id: uuid::Uuid::new_v4().to_string(),
            topic_arn: topic.arn.clone(),
            account: topic.account.clone(),
            region: topic.region.clone(),
            subject: None,
            message,
            per_protocol: None,
            attributes: Vec::new(),
            timestamp_ms: now_ms(),
            group_id: None,
            dedup_id: None,
            sequence_number: None,
            signature_version: topic.signature_version().to_string(),
            token: Some(subscription.token.clone()),
            targets: vec![Target {
                subscription_arn: subscription.arn.clone(),
                protocol: subscription.protocol.clone(),
                endpoint: subscription.endpoint.clone(),
                raw: false,
            }],
        }
    }

    fn message_for(&self, protocol: &str) -> &str {
        let chosen = self.per_protocol.as_ref().and_then(|m| m.get(protocol).or_else(|| m.get("default")));
        chosen.map_or(self.message.as_str(), String::as_str)
    }
}

/// A message for an endpoint outside the machine, kept for the user to read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Mail {
    pub account: String,
    pub region: String,
    pub protocol: String,
    pub endpoint: String,
    /// What produced it: Notification, SubscriptionConfirmation, Publish (SMS), SMSSandbox.
    pub source: String,
    pub topic_arn: Option<String>,
    pub subscription_arn: Option<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub timestamp_ms: u64,
}

impl Mail {
    pub fn new(account: &str, region: &str, protocol: &str, endpoint: &str, source: &str, body: String) -> Mail {
        Mail {
            account: account.into(),
            region: region.into(),
            protocol: protocol.into(),
            endpoint: endpoint.into(),
            source: source.into(),
            topic_arn: None,
            subscription_arn: None,
            message_id: None,
            subject: None,
            body,
            timestamp_ms: now_ms(),
        }
    }
}

#[derive(Clone)]
enum Outcome {
    Delivered,
    /// Worth another attempt.
    Retry(String),
    /// Will not succeed (no such queue, denied, rejected): straight to the dead-letter queue.
    Failed(String),
}

pub(crate) struct Delivery {
    store: Arc<dyn Store>,
    sqs: Arc<Sqs>,
    /// Made on first use (RSA key generation takes 40-120 ms), then kept in the store.
    signer: tokio::sync::OnceCell<Arc<Signer>>,
    pub endpoint: Endpoint,
    /// HTTP and HTTPS (TLS through the system's OpenSSL, verifying against its trusted roots,
    /// as SNS requires a certificate from a trusted authority). Made on first use: loading the
    /// roots took ~50 ms and 8 MiB, which every start would otherwise pay.
    http: std::sync::OnceLock<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    /// One lane per topic.
    lanes: Mutex<HashMap<String, mpsc::Sender<Outgoing>>>,
    traces: Mutex<VecDeque<MessageTrace>>,
}

struct MessageTrace {
    /// The outbox sequence: traces are pushed under the state lock, so in this order.
    seq: u64,
    message_id: String,
    topic_arn: String,
    kind: Kind,
    at_ms: u64,
    deliveries: Vec<DeliveryTrace>,
}

struct DeliveryTrace {
    subscription_arn: String,
    protocol: String,
    endpoint: String,
    status: &'static str,
    attempts: Vec<(u64, String)>,
}

impl Delivery {
    pub fn new(store: Arc<dyn Store>, sqs: Arc<Sqs>, signer: Option<Signer>, endpoint: Endpoint) -> Arc<Delivery> {
        Arc::new(Delivery {
            store,
            sqs,
            signer: tokio::sync::OnceCell::new_with(signer.map(Arc::new)),
            endpoint,
            http: std::sync::OnceLock::new(),
            lanes: Mutex::new(HashMap::new()),
            traces: Mutex::new(VecDeque::new()),
        })
    }

    fn http(&self) -> &Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
        self.http.get_or_init(|| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(HTTP_TIMEOUT));
            connector.set_nodelay(true);
            connector.enforce_http(false);
            let https = HttpsConnector::new_with_connector(connector);
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
        })
    }

    pub async fn certificate_pem(&self) -> Result<String, SnsError> {
        Ok(self.signer().await?.certificate_pem())
    }

    async fn signer(&self) -> Result<&Arc<Signer>, SnsError> {
        self.signer
            .get_or_try_init(|| async {
                let signer = tokio::task::spawn_blocking(Signer::generate)
                    .await
                    .map_err(|_| SnsError::Store(store::StoreError::Closed))?
                    .map_err(SnsError::Signing)?;
                storage::save_signer(self.store.as_ref(), &signer).await?;
                Ok(Arc::new(signer))
            })
            .await
    }

    pub fn certificate_url(&self) -> String {
        format!("{}/_stratus/sns/SimpleNotificationService.pem", self.endpoint.0)
    }

    pub fn reset(&self) {
        lock(&self.lanes).clear();
        lock(&self.traces).clear();
    }

    /// Hands durable outbox entries to their topics' delivery lanes, waiting while a lane is
    /// full: that wait is Publish's backpressure, which keeps what is published but not yet
    /// delivered (in memory) bounded. Entries go straight in while their lanes have room; the
    /// rest in a task of its own, so a caller that goes away (a client hanging up) cannot drop
    /// entries between the outbox and their lane.
    pub async fn start(self: &Arc<Self>, sns: Weak<Sns>, entries: Vec<Outgoing>) {
        let mut entries = entries.into_iter().filter(|o| !o.targets.is_empty());
        let mut waiting = None;
        for outgoing in entries.by_ref() {
            match self.lane(&sns, &outgoing.topic_arn).try_send(outgoing) {
                Err(mpsc::error::TrySendError::Full(outgoing)) => {
                    waiting = Some(outgoing);
                    break;
                }
                // Closed only when the lane was dropped (reset); the entry then stays in the
                // outbox for the next start.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        let Some(first) = waiting else { return };
        let rest: Vec<Outgoing> = entries.collect();
        let delivery = self.clone();
        let hand_off = async move {
            for outgoing in std::iter::once(first).chain(rest) {
                let lane = delivery.lane(&sns, &outgoing.topic_arn);
                let _ = lane.send(outgoing).await;
            }
        };
        let _ = tokio::spawn(hand_off).await;
    }

    /// The topic's lane: a task delivering its entries in batches, in publish order.
    fn lane(self: &Arc<Self>, sns: &Weak<Sns>, topic_arn: &str) -> mpsc::Sender<Outgoing> {
        let mut lanes = lock(&self.lanes);
        let lane = lanes.entry(topic_arn.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Outgoing>(LANE_CAPACITY);
            tokio::spawn(self.clone().run_lane(sns.clone(), rx));
            tx
        });
        lane.clone()
    }

    /// A lane's task: batches of up to [`LANE_BATCH`] entries, in order. A batch is signed while
    /// the one before it is delivered, so that signing (the dearest step) goes on while a
    /// delivery waits for its commit.
    async fn run_lane(self: Arc<Self>, sns: Weak<Sns>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut signed: Option<(Vec<Outgoing>, Signing)> = None;
        loop {
            let mut batch = Vec::new();
            // Wait for entries only with nothing signed to deliver.
            if signed.is_none() {
                let Some(first) = rx.recv().await else { return };
                batch.push(first);
            }
            while batch.len() < LANE_BATCH {
                let Ok(next) = rx.try_recv() else { break };
                batch.push(next);
            }
            let signing = Signing::new(self.signer_or_wait().await);
            let previous = signed.take();
            let deliver = async {
                if let Some((previous, signing)) = previous {
                    self.first_round(&sns, previous, signing).await;
                }
            };
            tokio::join!(deliver, signing.prepare(&self, &batch));
            signed = (!batch.is_empty()).then_some((batch, signing));
        }
    }

    /// The first attempt at a batch of one topic's entries, signed. Deliveries into queues and the mail
    /// outbox are local and quick: they are made here, each queue's share of the batch in one
    /// SQS transaction, in order (which keeps FIFO topics' order). HTTP endpoints may take up to
    /// 15 s, so they, and everything to be retried, continue in a task of each entry's own.
    async fn first_round(self: &Arc<Self>, sns: &Weak<Sns>, batch: Vec<Outgoing>, signing: Signing) {
        let Some(sns) = sns.upgrade() else { return };
        let mut schedules: Vec<Vec<Scheduled>> = vec![Vec::new(); batch.len()];
        let mut queues: BTreeMap<&str, Vec<(usize, &Target)>> = BTreeMap::new();
        let mut mail = Vec::new();
        for (index, outgoing) in batch.iter().enumerate() {
            for target in &outgoing.targets {
                match target.protocol.as_str() {
                    "sqs" => queues.entry(target.endpoint.as_str()).or_default().push((index, target)),
                    "http" | "https" => schedules[index].push((target.clone(), 0, tokio::time::Instant::now())),
                    _ => mail.push((index, target)),
                }
            }
        }
        // The queues concurrently, so that their transactions share one group commit. An entry
        // whose targets are all in one queue leaves the outbox in that queue's transaction.
        let delivered = queues.iter().map(|(endpoint, targets)| {
            let entries: Vec<(&Outgoing, &Target)> = targets.iter().map(|&(i, t)| (&batch[i], t)).collect();
            let signing = &signing;
            async move { self.to_queue(signing, endpoint, &entries, Completes::IfAllIn(endpoint)).await }
        });
        let delivered = futures_util::future::join_all(delivered).await;
        let mut outcomes = Vec::new();
        for ((_, targets), results) in queues.into_iter().zip(delivered) {
            outcomes.extend(targets.into_iter().zip(results).map(|((i, t), outcome)| (i, t, outcome)));
        }
        // Entries that left the outbox with their delivery: every target in one queue, delivered.
        let mut cleared: Vec<bool> = batch.iter().map(|o| sole_queue(o).is_some()).collect();
        for (index, _, outcome) in &outcomes {
            cleared[*index] &= matches!(outcome, Outcome::Delivered);
        }
        let mailed = mail.iter().map(|&(i, t)| self.to_mail(&sns, &signing, &batch[i], t));
        let results = futures_util::future::join_all(mailed).await;
        outcomes.extend(mail.into_iter().zip(results).map(|((i, t), outcome)| (i, t, outcome)));
        for (index, target, outcome) in outcomes {
            self.settle(&sns, &signing, &batch[index], target.clone(), 0, outcome, &mut schedules[index]).await;
        }
        let mut done = Vec::new();
        for ((outgoing, schedule), cleared) in batch.into_iter().zip(schedules).zip(cleared) {
            if cleared {
                continue;
            }
            if schedule.is_empty() {
                done.push(store::Op::delete(storage::outbox_key(outgoing.seq)));
            } else {
                let (delivery, sns) = (self.clone(), Arc::downgrade(&sns));
                tokio::spawn(async move { delivery.run(&sns, outgoing, schedule).await });
            }
        }
        if !done.is_empty() {
            // The lane goes on without waiting: these targets are done, and a crash before the
            // deletion commits only delivers them again (at least once).
            let clearing = self.store.txn(store::Txn::ops(done));
            tokio::spawn(async move {
                if let Err(error) = clearing.await {
                    tracing::warn!(error = &error as &dyn std::error::Error, "could not clear SNS outbox entries");
                }
            });
        }
    }

    /// Delivers a Publish's entries that [`deliverable_directly`] chose into their queue before
    /// Publish answers, each queue's share in one SQS transaction: no outbox record, nothing
    /// to sign. Returns the entries whose delivery failed, for the outbox (which retries them or
    /// sends them to their dead-letter queue).
    pub async fn deliver_directly(self: &Arc<Self>, entries: Vec<Outgoing>) -> Vec<Outgoing> {
        if entries.is_empty() {
            return entries;
        }
        let signing = Signing::new(self.signer_or_wait().await);
        let mut queues: BTreeMap<&str, Vec<(usize, &Target)>> = BTreeMap::new();
        for (index, outgoing) in entries.iter().enumerate() {
            for target in &outgoing.targets {
                queues.entry(target.endpoint.as_str()).or_default().push((index, target));
            }
        }
        let attempts = queues.iter().map(|(endpoint, targets)| {
            let pairs: Vec<(&Outgoing, &Target)> = targets.iter().map(|&(i, t)| (&entries[i], t)).collect();
            let signing = &signing;
            async move { self.to_queue(signing, endpoint, &pairs, Completes::Nothing).await }
        });
        let outcomes = futures_util::future::join_all(attempts).await;
        let mut delivered = vec![true; entries.len()];
        for ((_, targets), outcomes) in queues.iter().zip(outcomes) {
            for (&(index, target), outcome) in targets.iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => {
                        self.trace_attempt(entries[index].seq, &target.subscription_arn, "delivered", "delivered");
                    }
                    Outcome::Retry(_) | Outcome::Failed(_) => delivered[index] = false,
                }
            }
        }
        entries.into_iter().zip(delivered).filter(|(_, delivered)| !delivered).map(|(o, _)| o).collect()
    }

    async fn signer_or_wait(&self) -> Arc<Signer> {
        loop {
            match self.signer().await {
                Ok(signer) => return signer.clone(),
                Err(error) => {
                    tracing::warn!(error = &error as &dyn std::error::Error, "no SNS signing key; retrying");
                    tokio::time::sleep(QUEUE_RETRIES[0]).await;
                }
            }
        }
    }

    /// Records an attempt's outcome: done, scheduled for a retry, or failed for good (then to
    /// the dead-letter queue).
    #[allow(clippy::too_many_arguments)] // one call site each in first_round and run
    async fn settle(
        &self,
        sns: &Sns,
        signing: &Signing,
        outgoing: &Outgoing,
        target: Target,
        attempt: usize,
        outcome: Outcome,
        schedule: &mut Vec<Scheduled>,
    ) {
        let retries = self.retry_delays(sns, &target);
        let (status, note) = match outcome {
            Outcome::Delivered => ("delivered", "delivered".to_string()),
            Outcome::Retry(reason) if attempt < retries.len() => {
                self.trace_attempt(outgoing.seq, &target.subscription_arn, "retrying", &reason);
                let at = tokio::time::Instant::now() + retries[attempt];
                schedule.push((target, attempt + 1, at));
                return;
            }
            Outcome::Retry(reason) | Outcome::Failed(reason) => {
                (self.dead_letter(sns, signing, outgoing, &target, &reason).await, reason)
            }
        };
        self.trace_attempt(outgoing.seq, &target.subscription_arn, status, &note);
    }

    /// Delivers an entry's remaining targets as they fall due, rewriting its outbox record after
    /// each round that leaves some, deleting it when none remain.
    async fn run(&self, sns: &Weak<Sns>, mut outgoing: Outgoing, mut schedule: Vec<Scheduled>) {
        let signing = Signing::new(self.signer_or_wait().await);
        loop {
            let Some(sns) = sns.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = schedule.into_iter().partition(|(_, _, at)| *at <= now);
            let attempts = due.into_iter().map(|(target, attempt, _)| {
                let (sns, outgoing, signing) = (&sns, &outgoing, &signing);
                async move {
                    let outcome = match target.protocol.as_str() {
                        "sqs" => {
                            let entries = [(outgoing, &target)];
                            self.to_queue(signing, &target.endpoint, &entries, Completes::Nothing).await.remove(0)
                        }
                        "http" | "https" => self.to_http(sns, signing, outgoing, &target).await,
                        _ => self.to_mail(sns, signing, outgoing, &target).await,
                    };
                    (target, attempt, outcome)
                }
            });
            let results = futures_util::future::join_all(attempts).await;
            schedule = later;
            for (target, attempt, outcome) in results {
                self.settle(&sns, &signing, &outgoing, target, attempt, outcome, &mut schedule).await;
            }
            let key = storage::outbox_key(outgoing.seq);
            let Some(next) = schedule.iter().map(|(_, _, at)| *at).min() else {
                if let Err(error) = self.store.delete(&key).await {
                    tracing::warn!(error = &error as &dyn std::error::Error, "could not clear an SNS outbox entry");
                }
                return;
            };
            outgoing.targets = schedule.iter().map(|(t, _, _)| t.clone()).collect();
            if let Err(error) = self.store.txn(store::Txn::ops(vec![put(key, &outgoing)])).await {
                tracing::warn!(error = &error as &dyn std::error::Error, "could not update an SNS outbox entry");
            }
            outgoing.targets.clear();
            drop(sns);
            tokio::time::sleep_until(next).await;
        }
    }

    fn retry_delays(&self, sns: &Sns, target: &Target) -> Vec<Duration> {
        match target.protocol.as_str() {
            "http" | "https" => {
                let state = sns.state();
                let Some(subscription) = state.subscriptions.get(&target.subscription_arn) else { return Vec::new() };
                RetryPolicy::for_subscription(state.topics.get(&subscription.topic_arn), subscription).delays
            }
            _ => QUEUE_RETRIES.to_vec(),
        }
    }

    /// The fields SNS signs, in its order (the envelope holds them and a few more).
    fn signed_fields(&self, outgoing: &Outgoing, message: &str) -> Vec<(&'static str, String)> {
        let mut signed = vec![("Message", message.to_string()), ("MessageId", outgoing.message_id.clone())];
        let timestamp = timestamp(outgoing.timestamp_ms);
        match (outgoing.kind, &outgoing.token) {
            (Kind::SubscriptionConfirmation | Kind::UnsubscribeConfirmation, Some(token)) => {
                let subscribe_url = format!(
                    "{}/?Action=ConfirmSubscription&Version=2010-03-31&TopicArn={}&Token={token}",
                    self.endpoint.0,
                    encode(&outgoing.topic_arn)
                );
                signed.extend([("SubscribeURL", subscribe_url), ("Timestamp", timestamp), ("Token", token.clone())]);
            }
            _ => {
                if let Some(subject) = &outgoing.subject {
                    signed.push(("Subject", subject.clone()));
                }
                signed.push(("Timestamp", timestamp));
            }
        }
        signed.extend([("TopicArn", outgoing.topic_arn.clone()), ("Type", outgoing.kind.name().to_string())]);
        signed
    }

    fn canonical(&self, outgoing: &Outgoing, message: &str) -> String {
        let fields = self.signed_fields(outgoing, message);
        canonical_string(&fields.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
    }

    /// The JSON document SNS delivers when the message is not raw.
    fn envelope(&self, signer: &Signing, outgoing: &Outgoing, target: &Target) -> Value {
        let message = outgoing.message_for(&target.protocol);
        let signed = self.signed_fields(outgoing, message);
        let signature = signer.sign(outgoing, message, || self.canonical(outgoing, message));
        let mut envelope: Map<String, Value> =
            signed.into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
        envelope.insert("SignatureVersion".into(), outgoing.signature_version.clone().into());
        envelope.insert("Signature".into(), signature.into());
        envelope.insert("SigningCertURL".into(), self.certificate_url().into());
        if outgoing.kind == Kind::Notification {
            let unsubscribe = format!(
                "{}/?Action=Unsubscribe&Version=2010-03-31&SubscriptionArn={}",
                self.endpoint.0,
                encode(&target.subscription_arn)
            );
            envelope.insert("UnsubscribeURL".into(), unsubscribe.into());
            if let Some(number) = &outgoing.sequence_number {
                envelope.insert("SequenceNumber".into(), number.clone().into());
            }
            if !outgoing.attributes.is_empty() {
                let attributes = outgoing.attributes.iter().map(|a| (a.0.clone(), a.envelope_value())).collect();
                envelope.insert("MessageAttributes".into(), Value::Object(attributes));
            }
        }
        Value::Object(envelope)
    }

    /// What the endpoint receives as its body: the raw message, or the envelope.
    fn payload(&self, signer: &Signing, outgoing: &Outgoing, target: &Target) -> String {
        if target.raw && outgoing.kind == Kind::Notification {
            outgoing.message_for(&target.protocol).to_string()
        } else {
            self.envelope(signer, outgoing, target).to_string()
        }
    }

    /// Delivers entries (in order) into one queue, in one SQS transaction; an outcome each.
    async fn to_queue(
        &self,
        signer: &Signing,
        endpoint: &str,
        entries: &[(&Outgoing, &Target)],
        completes: Completes<'_>,
    ) -> Vec<Outcome> {
        let every = |outcome: Outcome| entries.iter().map(|_| outcome.clone()).collect();
        let (Some(queue), Some((first, _))) = (QueueId::from_arn(endpoint), entries.first()) else {
            return every(Outcome::Failed("invalid queue ARN".into()));
        };
        // One lane carries one topic, so the queue's policy answers once for all.
        let allowed = match self.sqs.get_attributes(&queue, &["Policy".to_string()]) {
            Err(SqsError::QueueDoesNotExist) => return every(Outcome::Failed("the queue does not exist".into())),
            Err(error) => return every(Outcome::Retry(error.to_string())),
            Ok(attributes) => match attributes.iter().find(|(name, _)| name == "Policy") {
                Some((_, policy)) if !policy.is_empty() => {
                    queue_allows_topic(policy, endpoint, &first.topic_arn, &first.account)
                }
                _ => queue.account == first.account,
            },
        };
        if !allowed {
            return every(Outcome::Failed("the queue's policy does not allow this topic to send".into()));
        }
        let fifo_queue = queue.name.ends_with(".fifo");
        let messages = entries
            .iter()
            .map(|(outgoing, target)| {
                let raw = target.raw && outgoing.kind == Kind::Notification;
                SendMessage {
                    body: self.payload(signer, outgoing, target),
                    attributes: if raw {
                        let sent = outgoing.attributes.iter().filter(|a| !crate::publish::sns_reserved(&a.0));
                        sent.map(StoredAttribute::to_attribute).collect()
                    } else {
                        Vec::new()
                    },
                    group_id: outgoing.group_id.clone().filter(|_| fifo_queue),
                    dedup_id: fifo_queue
                        .then(|| outgoing.dedup_id.clone().unwrap_or_else(|| outgoing.message_id.clone())),
                    ..SendMessage::default()
                }
            })
            .collect();
        // The outbox records of the entries this delivery completes go in its transaction.
        let clear = |results: &[Result<sqs::Sent, SqsError>]| {
            let Completes::IfAllIn(queue) = completes else { return Vec::new() };
            let mut seqs: Vec<u64> =
                entries.iter().filter(|(o, _)| sole_queue(o) == Some(queue)).map(|(o, _)| o.seq).collect();
            seqs.dedup();
            let delivered = |seq: u64| entries.iter().zip(results).all(|((o, _), r)| o.seq != seq || r.is_ok());
            seqs.into_iter()
                .filter(|&seq| delivered(seq))
                .map(|seq| store::Op::delete(storage::outbox_key(seq)))
                .collect()
        };
        match self.sqs.send_many_with(&queue, &first.account, messages, clear).await {
            Ok(results) => results
                .into_iter()
                .map(|result| match result {
                    Ok(_) => Outcome::Delivered,
                    Err(error) => Outcome::Failed(error.to_string()),
                })
                .collect(),
            Err(SqsError::QueueDoesNotExist) => every(Outcome::Failed("the queue does not exist".into())),
            Err(error) => every(Outcome::Retry(error.to_string())),
        }
    }

    async fn to_http(&self, sns: &Sns, signer: &Signing, outgoing: &Outgoing, target: &Target) -> Outcome {
        let content_type = {
            let state = sns.state();
            let subscription = state.subscriptions.get(&target.subscription_arn);
            match subscription {
                Some(s) => RetryPolicy::for_subscription(state.topics.get(&s.topic_arn), s).content_type,
                None if outgoing.kind == Kind::Notification => return Outcome::Failed("unsubscribed".into()),
                None => "text/plain; charset=UTF-8".into(),
            }
        };
        let request = http::Request::post(target.endpoint.as_str())
            .header("content-type", content_type)
            .header("user-agent", "Amazon Simple Notification Service Agent")
            .header("x-amz-sns-message-type", outgoing.kind.name())
            .header("x-amz-sns-message-id", outgoing.message_id.as_str())
            .header("x-amz-sns-topic-arn", outgoing.topic_arn.as_str());
        let request = match outgoing.kind {
            Kind::Notification => request.header("x-amz-sns-subscription-arn", target.subscription_arn.as_str()),
            Kind::SubscriptionConfirmation | Kind::UnsubscribeConfirmation => request,
        };
        let request = if target.raw { request.header("x-amz-sns-rawdelivery", "true") } else { request };
        let request = match request.body(Full::new(Bytes::from(self.payload(signer, outgoing, target)))) {
            Ok(request) => request,
            Err(error) => return Outcome::Failed(format!("invalid endpoint: {error}")),
        };
        match tokio::time::timeout(HTTP_TIMEOUT, self.http().request(request)).await {
            Err(_) => Outcome::Retry("timed out".into()),
            Ok(Err(error)) => {
                // The client's error says only "Connect"; the reason (refused, TLS) is in its sources.
                let mut reason = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    reason = format!("{reason}: {cause}");
                    source = cause.source();
                }
                Outcome::Retry(format!("connection failed: {reason}"))
            }
            Ok(Ok(response)) if response.status().is_success() => Outcome::Delivered,
            Ok(Ok(response)) => Outcome::Retry(format!("HTTP {}", response.status().as_u16())),
        }
    }

    async fn to_mail(&self, sns: &Sns, signer: &Signing, outgoing: &Outgoing, target: &Target) -> Outcome {
        let message = outgoing.message_for(&target.protocol);
        let body = match target.protocol.as_str() {
            "email" if outgoing.kind == Kind::SubscriptionConfirmation => {
                let envelope = self.envelope(signer, outgoing, target);
                format!("{message}\n\n{}", envelope["SubscribeURL"].as_str().unwrap_or_default())
            }
            "email" | "sms" => message.to_string(),
            "lambda" => self.lambda_event(signer, outgoing, target).to_string(),
            _ => self.payload(signer, outgoing, target),
        };
        let mut mail = Mail::new(
            &outgoing.account,
            &outgoing.region,
            &target.protocol,
            &target.endpoint,
            outgoing.kind.name(),
            body,
        );
        mail.topic_arn = Some(outgoing.topic_arn.clone());
        mail.subscription_arn = Some(target.subscription_arn.clone());
        mail.message_id = Some(outgoing.message_id.clone());
        mail.subject = outgoing.subject.clone();
        match self.store.put(&storage::mail_key(sns.next_seq()), &storage::encode(&mail)).await {
            Ok(_) => Outcome::Delivered,
            Err(error) => Outcome::Retry(error.to_string()),
        }
    }

    /// The event a Lambda function subscribed to the topic receives.
    fn lambda_event(&self, signer: &Signing, outgoing: &Outgoing, target: &Target) -> Value {
        let mut sns = self.envelope(signer, outgoing, target);
        if let Value::Object(fields) = &mut sns {
            fields.entry("Subject").or_insert(Value::Null);
            fields.entry("MessageAttributes").or_insert_with(|| json!({}));
        }
        json!({ "Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": target.subscription_arn,
            "Sns": sns,
        }]})
    }

    /// Sends a message that could not be delivered to its subscription's dead-letter queue,
    /// if it has one. Returns the final status for the trace.
    async fn dead_letter(
        &self,
        sns: &Sns,
        signer: &Signing,
        outgoing: &Outgoing,
        target: &Target,
        reason: &str,
    ) -> &'static str {
        // Only notifications are dead-lettered, never subscription confirmations.
        let queue = sns.state().subscriptions.get(&target.subscription_arn).and_then(Subscription::dead_letter_queue);
        let Some(queue) = queue.filter(|_| outgoing.kind == Kind::Notification) else { return "failed" };
        let string = |name: &str, value: &str| MessageAttribute {
            name: name.into(),
            data_type: "String".into(),
            value: AttributeValue::String(value.into()),
        };
        let message = SendMessage {
            body: self.payload(signer, outgoing, target),
            attributes: vec![
                string("ErrorCode", "DeliveryFailed"),
                string("ErrorMessage", reason),
                string("RequestID", &outgoing.message_id),
            ],
            group_id: outgoing.group_id.clone().filter(|_| queue.name.ends_with(".fifo")),
            dedup_id: queue.name.ends_with(".fifo").then(|| outgoing.message_id.clone()),
            ..SendMessage::default()
        };
        match self.sqs.send(&queue, &outgoing.account, message).await {
            Ok(_) => "dead-lettered",
            Err(error) => {
                tracing::warn!(error = &error as &dyn std::error::Error, queue = %queue.arn(), "dead-letter delivery failed");
                "failed"
            }
        }
    }

    pub fn trace_published(&self, outgoing: &Outgoing, filtered: &[Target]) {
        let delivery = |t: &Target, status| DeliveryTrace {
            subscription_arn: t.subscription_arn.clone(),
            protocol: t.protocol.clone(),
            endpoint: t.endpoint.clone(),
            status,
            attempts: Vec::new(),
        };
        let mut deliveries: Vec<DeliveryTrace> = outgoing.targets.iter().map(|t| delivery(t, "pending")).collect();
        deliveries.extend(filtered.iter().map(|t| delivery(t, "filtered out")));
        let mut traces = lock(&self.traces);
        if traces.len() == TRACE_MESSAGES {
            traces.pop_front();
        }
        traces.push_back(MessageTrace {
            seq: outgoing.seq,
            message_id: outgoing.message_id.clone(),
            topic_arn: outgoing.topic_arn.clone(),
            kind: outgoing.kind,
            at_ms: outgoing.timestamp_ms,
            deliveries,
        });
    }

    fn trace_attempt(&self, seq: u64, subscription_arn: &str, status: &'static str, note: &str) {
        let mut traces = lock(&self.traces);
        // A search by sequence, not a scan: every delivery records its outcome here.
        let Ok(index) = traces.binary_search_by_key(&seq, |t| t.seq) else { return };
        let Some(trace) = traces.get_mut(index) else { return };
        if let Some(delivery) = trace.deliveries.iter_mut().find(|d| d.subscription_arn == subscription_arn) {
            delivery.status = status;
            delivery.attempts.push((now_ms(), note.to_string()));
        }
    }

    /// Recent messages, newest first, with each delivery's attempts.
    pub fn recent(&self, topic_arn: Option<&str>) -> Value {
        let traces = lock(&self.traces);
        let selected = traces.iter().rev().filter(|t| topic_arn.is_none_or(|arn| t.topic_arn == arn));
        selected
            .map(|t| {
                let deliveries: Vec<Value> = t
                    .deliveries
                    .iter()
                    .map(|d| {
                        let attempts: Vec<Value> = d
                            .attempts
                            .iter()
                            .map(|(at, outcome)| json!({ "at": timestamp(*at), "outcome": outcome }))
                            .collect();
                        json!({
                            "subscriptionArn": d.subscription_arn,
                            "protocol": d.protocol,
                            "endpoint": d.endpoint,
                            "status": d.status,
                            "attempts": attempts,
                        })
                    })
                    .collect();
                json!({
                    "messageId": t.message_id,
                    "topicArn": t.topic_arn,
                    "type": t.kind.name(),
                    "publishedAt": timestamp(t.at_ms),
                    "deliveries": deliveries,
                })
            })
            .collect()
    }
}

/// Signs an outbox entry's envelopes. A signature covers the message but no subscription, so
/// the envelopes of one message share it: RSA signing (about 2 ms) is the dearest step of a
/// delivery, and a fan-out to ten queues signs once, not ten times.
struct Signing {
    signer: Arc<Signer>,
    /// (message id, message as delivered) → signature: MessageStructure=json gives each
    /// protocol its own message.
    done: Mutex<HashMap<(String, String), String>>,
}

impl Signing {
    fn new(signer: Arc<Signer>) -> Self {
        Signing { signer, done: Mutex::new(HashMap::new()) }
    }

    /// Signs, on a blocking thread, what a batch's envelopes will need (RSA would otherwise
    /// hold up the async workers serving requests).
    async fn prepare(&self, delivery: &Delivery, batch: &[Outgoing]) {
        let mut wanted = HashMap::new();
        for outgoing in batch {
            let enveloped = outgoing.targets.iter().filter(|t| {
                outgoing.kind != Kind::Notification || !(t.raw || matches!(t.protocol.as_str(), "email" | "sms"))
            });
            for target in enveloped {
                let message = outgoing.message_for(&target.protocol);
                let key = (outgoing.message_id.clone(), message.to_string());
                wanted
                    .entry(key)
                    .or_insert_with(|| (outgoing.signature_version.clone(), delivery.canonical(outgoing, message)));
            }
        }
        if wanted.is_empty() {
            return;
        }
        // One share per core: signing is the dearest part of a delivery.
        let shares = *SIGNING_THREADS;
        let mut wanted: Vec<_> = wanted.into_iter().collect();
        let share = wanted.len().div_ceil(shares).max(1);
        let mut signing = Vec::new();
        while !wanted.is_empty() {
            let chunk: Vec<_> = wanted.drain(..share.min(wanted.len())).collect();
            let signer = self.signer.clone();
            signing.push(tokio::task::spawn_blocking(move || {
                let signed =
                    chunk.into_iter().map(|(key, (version, canonical))| (key, signer.sign(&version, &canonical)));
                signed.collect::<Vec<_>>()
            }));
        }
        for signed in futures_util::future::join_all(signing).await.into_iter().flatten() {
            lock(&self.done).extend(signed);
        }
    }

    fn sign(&self, outgoing: &Outgoing, message: &str, canonical: impl FnOnce() -> String) -> String {
        let key = (outgoing.message_id.clone(), message.to_string());
        if let Some(signature) = lock(&self.done).get(&key) {
            return signature.clone();
        }
        let signature = self.signer.sign(&outgoing.signature_version, &canonical());
        lock(&self.done).insert(key, signature.clone());
        signature
    }
}

/// Which outbox records a delivery into a queue may complete.
#[derive(Clone, Copy)]
enum Completes<'a> {
    Nothing,
    /// Those of the entries whose targets are all in this queue, once all are delivered.
    IfAllIn(&'a str),
}

/// Whether Publish can deliver an entry itself ([`Delivery::deliver_directly`]): a raw
/// notification whose targets are all in one queue (a standard topic's: a FIFO topic's entries
/// keep their order by going through its lane).
pub(crate) fn deliverable_directly(outgoing: &Outgoing) -> bool {
    outgoing.kind == Kind::Notification && sole_queue(outgoing).is_some() && outgoing.targets.iter().all(|t| t.raw)
}

/// The queue that holds every target of an entry, if one does.
fn sole_queue(outgoing: &Outgoing) -> Option<&str> {
    let (first, rest) = outgoing.targets.split_first()?;
    let one_queue = first.protocol == "sqs" && rest.iter().all(|t| t.protocol == "sqs" && t.endpoint == first.endpoint);
    one_queue.then_some(first.endpoint.as_str())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
