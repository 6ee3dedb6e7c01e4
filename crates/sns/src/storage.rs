//! How SNS state is kept in the store, under the `sns/` keyspace, as JSON records:
//!
//! - `sns/topic/<topic arn>` and `sns/sub/<subscription arn>`: the control plane;
//! - `sns/out/<seq>`: the outbox, a published message with the deliveries still to make;
//! - `sns/mail/<seq>`: what was "sent" to email, SMS, mobile and (until Stratus runs functions)
//!   Lambda endpoints, for the user to read back;
//! - `sns/sandbox/<account>/<region>/<phone>`, `sns/sms/<account>/<region>`: the SMS sandbox
//!   and SMS preferences;
//! - `sns/dedup/<topic arn>/<deduplication id>`: FIFO deduplication within the 5-minute window;
//! - `sns/departed/<token>`: an unsubscribed HTTP(S) subscription, restorable for three days;
//! - `sns/signer`: the signing key and certificate, so signatures verify across restarts.
//!
//! `seq` is fixed-width hex, so the outbox replays in publish order.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use store::{Keyspace, Op, Store, prefix_end};

use crate::SnsError;
use crate::delivery::Outgoing;
use crate::model::{Subscription, Topic};
use crate::signing::Signer;

fn key(path: &str) -> Vec<u8> {
    Keyspace::new("sns").key(path.as_bytes())
}

pub(crate) fn topic_key(arn: &str) -> Vec<u8> {
    key(&format!("topic/{arn}"))
}

pub(crate) fn subscription_key(arn: &str) -> Vec<u8> {
    key(&format!("sub/{arn}"))
}

pub(crate) fn outbox_key(seq: u64) -> Vec<u8> {
    key(&format!("out/{seq:016x}"))
}

pub(crate) fn mail_key(seq: u64) -> Vec<u8> {
    key(&format!("mail/{seq:016x}"))
}

pub(crate) fn mail_prefix() -> Vec<u8> {
    key("mail/")
}

/// A FIFO topic's deduplication record: the topic ARN has no `/`, the id may.
pub(crate) fn dedup_key(topic_arn: &str, dedup_id: &str) -> Vec<u8> {
    key(&format!("dedup/{topic_arn}/{dedup_id}"))
}

pub(crate) fn dedup_prefix(topic_arn: &str) -> Vec<u8> {
    key(&format!("dedup/{topic_arn}/"))
}

/// An unsubscribed HTTP(S) subscription that its token can still restore.
pub(crate) fn departed_key(token: &str) -> Vec<u8> {
    key(&format!("departed/{token}"))
}

/// (expiry ms, message id, sequence number)
pub(crate) type DedupRecord = (u64, String, String);

pub(crate) fn sandbox_key(account: &str, region: &str, phone: &str) -> Vec<u8> {
    key(&format!("sandbox/{account}/{region}/{phone}"))
}

pub(crate) fn sms_attributes_key(account: &str, region: &str) -> Vec<u8> {
    key(&format!("sms/{account}/{region}"))
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, maps, numbers) cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

pub(crate) fn put<T: Serialize>(key: Vec<u8>, record: &T) -> Op {
    Op::put(key, encode(record))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SandboxNumber {
    pub phone: String,
    pub verified: bool,
    pub one_time_password: String,
}

#[derive(Serialize, Deserialize)]
struct StoredSigner {
    key_pkcs8: Vec<u8>,
    certificate: Vec<u8>,
}

pub(crate) struct Records {
    pub topics: Vec<Topic>,
    pub subscriptions: Vec<Subscription>,
    pub sandbox: BTreeMap<(String, String, String), SandboxNumber>,
    pub sms_attributes: BTreeMap<(String, String), BTreeMap<String, String>>,
    pub signer: Option<Signer>,
    /// In sequence order.
    pub outbox: Vec<Outgoing>,
    /// ((topic ARN, deduplication id), record)
    pub dedup: Vec<((String, String), DedupRecord)>,
    /// token → (expiry ms, subscription)
    pub departed: Vec<(String, (u64, Subscription))>,
}

async fn load_all<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> Result<Vec<(String, T)>, SnsError> {
    let start = key(prefix);
    let mut records = Vec::new();
    for kv in store.range(&start, &prefix_end(&start), None).await? {
        let name = String::from_utf8_lossy(&kv.key[start.len()..]).into_owned();
        match serde_json::from_slice(&kv.value) {
            Ok(record) => records.push((name, record)),
            // A record this version cannot read is skipped, not fatal: the rest still load.
            Err(error) => tracing::error!(%error, key = %String::from_utf8_lossy(&kv.key), "unreadable SNS record"),
        }
    }
    Ok(records)
}

pub(crate) async fn load(store: &dyn Store) -> Result<Records, SnsError> {
    let topics = load_all::<Topic>(store, "topic/").await?.into_iter().map(|(_, t)| t).collect();
    let mut subscriptions: Vec<Subscription> = load_all(store, "sub/").await?.into_iter().map(|(_, s)| s).collect();
    for subscription in &mut subscriptions {
        if let Err(error) = subscription.compile_filter() {
            tracing::error!(%error, subscription = %subscription.arn, "stored filter policy no longer parses");
        }
    }
    let sandbox = load_all::<SandboxNumber>(store, "sandbox/")
        .await?
        .into_iter()
        .filter_map(|(path, number)| {
            let mut parts = path.splitn(3, '/');
            Some(((parts.next()?.to_string(), parts.next()?.to_string(), parts.next()?.to_string()), number))
        })
        .collect();
    let sms_attributes = load_all::<BTreeMap<String, String>>(store, "sms/")
        .await?
        .into_iter()
        .filter_map(|(path, attributes)| {
            let (account, region) = path.split_once('/')?;
            Some(((account.to_string(), region.to_string()), attributes))
        })
        .collect();
    let signer = match store.get(&key("signer")).await? {
        Some(kv) => {
            let stored: StoredSigner =
                serde_json::from_slice(&kv.value).map_err(|e| SnsError::invalid(format!("stored signer: {e}")))?;
            Some(
                Signer::from_der(&stored.key_pkcs8, &stored.certificate)
                    .map_err(|e| SnsError::invalid(format!("stored signer: {e}")))?,
            )
        }
        None => None,
    };
    let outbox = load_all::<Outgoing>(store, "out/").await?.into_iter().map(|(_, o)| o).collect();
    let dedup = load_all::<DedupRecord>(store, "dedup/")
        .await?
        .into_iter()
        .filter_map(|(path, record)| {
            let (topic, id) = path.split_once('/')?;
            Some(((topic.to_string(), id.to_string()), record))
        })
        .collect();
    let mut departed: Vec<(String, (u64, Subscription))> = load_all(store, "departed/").await?;
    for (_, (_, subscription)) in &mut departed {
        if let Err(error) = subscription.compile_filter() {
            tracing::error!(%error, subscription = %subscription.arn, "stored filter policy no longer parses");
        }
    }
    Ok(Records { topics, subscriptions, sandbox, sms_attributes, signer, outbox, dedup, departed })
}

pub(crate) async fn save_signer(store: &dyn Store, signer: &Signer) -> Result<(), SnsError> {
    let (key_pkcs8, certificate) = signer.to_der();
    store.put(&key("signer"), &encode(&StoredSigner { key_pkcs8, certificate })).await?;
    Ok(())
}
