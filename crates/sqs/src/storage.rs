//! How SQS state is kept in the store, under the `sqs/` keyspace:
//!
//! - `sqs/queue/<account>/<region>/<name>`: the queue (attributes, tags, timestamps, uid);
//! - `sqs/msg/<uid>/<seq>`: a message as sent (never rewritten);
//! - `sqs/state/<uid>/<seq>`: its receive state (count, first receive, visibility, token),
//!   rewritten on each receive, so receives do not copy bodies. A message sent visible at once
//!   has none until its first receive (one record per send instead of two: sends commit, and
//!   checkpoints copy into redb, half the keys); its state is then that of a new message.
//!
//! `uid` and `seq` are fixed-width hex, so a queue's messages sort in send order. Records are
//! postcard-encoded private structs.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use store::{Keyspace, Op, Store, Txn, prefix_end};

use crate::queue::{Message, Queue};
use crate::{AttributeValue, MessageAttribute, QueueId, SqsError};

const SERVICE: &str = "sqs";

fn keyspace() -> Keyspace {
    Keyspace::new(SERVICE)
}

fn queue_key(id: &QueueId) -> Vec<u8> {
    keyspace().key(format!("queue/{}/{}/{}", id.account, id.region, id.name).as_bytes())
}

/// `sqs/<kind>/<uid>/<seq>`, written straight into one allocation: two of these are made for
/// every message sent, and `format!` with the keyspace's concatenation was ~7% of the CPU of a
/// batched send.
fn message_key(kind: &str, uid: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(SERVICE.len() + kind.len() + 35);
    for part in [SERVICE, "/", kind, "/"] {
        key.extend_from_slice(part.as_bytes());
    }
    push_hex(&mut key, uid);
    key.push(b'/');
    push_hex(&mut key, seq);
    key
}

/// `n` as 16 lowercase hex digits, as `{n:016x}` formats it.
fn push_hex(key: &mut Vec<u8>, n: u64) {
    key.extend((0..16).rev().map(|nibble| b"0123456789abcdef"[(n >> (nibble * 4)) as usize & 0xf]));
}

fn queue_prefix(kind: &str, uid: u64) -> Vec<u8> {
    keyspace().key(format!("{kind}/{uid:016x}/").as_bytes())
}

#[derive(Serialize, Deserialize)]
struct StoredQueue {
    uid: u64,
    attributes: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    created: u64,
    modified: u64,
}

/// (name, data type, string value, binary value)
type StoredAttribute<'a> = (Cow<'a, str>, Cow<'a, str>, Option<Cow<'a, str>>, Option<Cow<'a, [u8]>>);

/// Borrows from the `Message` when written (a send encodes without copying the body) and owns
/// what it decodes.
#[derive(Serialize, Deserialize)]
struct StoredMessage<'a> {
    id: Cow<'a, str>,
    body: Cow<'a, str>,
    attributes: Vec<StoredAttribute<'a>>,
    system_attributes: Vec<StoredAttribute<'a>>,
    sender_id: Cow<'a, str>,
    sent_ms: u64,
    group_id: Option<Cow<'a, str>>,
    dedup_id: Option<Cow<'a, str>>,
    sequence_number: Option<Cow<'a, str>>,
    dead_letter_source: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct StoredState {
    receive_count: u32,
    first_receive_ms: Option<u64>,
    visible_at_ms: u64,
    token: u64,
}

impl StoredState {
    /// A message's state when it is sent, visible at once: the state of one without a record.
    fn new(sent_ms: u64) -> Self {
        StoredState { receive_count: 0, first_receive_ms: None, visible_at_ms: sent_ms, token: 0 }
    }

    fn of(message: &Message) -> Self {
        StoredState {
            receive_count: message.receive_count,
            first_receive_ms: message.first_receive_ms,
            visible_at_ms: message.visible_at_ms,
            token: message.token,
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn to_stored(attributes: &[MessageAttribute]) -> Vec<StoredAttribute<'_>> {
    attributes
        .iter()
        .map(|a| {
            let (name, data_type) = (Cow::from(&a.name), Cow::from(&a.data_type));
            match &a.value {
                AttributeValue::String(s) => (name, data_type, Some(Cow::from(s)), None),
                AttributeValue::Binary(b) => (name, data_type, None, Some(Cow::from(b.as_slice()))),
            }
        })
        .collect()
}

fn from_stored(attributes: Vec<StoredAttribute>) -> Vec<MessageAttribute> {
    attributes
        .into_iter()
        .map(|(name, data_type, string, binary)| {
            let value = match (string, binary) {
                (_, Some(b)) => AttributeValue::Binary(b.into_owned()),
                (s, None) => AttributeValue::String(s.map(Cow::into_owned).unwrap_or_default()),
            };
            MessageAttribute { name: name.into_owned(), data_type: data_type.into_owned(), value }
        })
        .collect()
}

pub(crate) fn queue_op(queue: &Queue) -> Op {
    let record = StoredQueue {
        uid: queue.uid,
        attributes: queue.attributes.clone(),
        tags: queue.tags.clone(),
        created: queue.created,
        modified: queue.modified,
    };
    Op::put(queue_key(&queue.id), encode(&record))
}

/// The message's record, and its state's unless that is a new message's.
pub(crate) fn message_ops(uid: u64, message: &Message) -> impl Iterator<Item = Op> {
    fn borrowed(text: &Option<String>) -> Option<Cow<'_, str>> {
        text.as_deref().map(Cow::from)
    }
    let record = StoredMessage {
        id: Cow::from(&message.id),
        body: Cow::from(&message.body),
        attributes: to_stored(&message.attributes),
        system_attributes: to_stored(&message.system_attributes),
        sender_id: Cow::from(&message.sender_id),
        sent_ms: message.sent_ms,
        group_id: borrowed(&message.group_id),
        dedup_id: borrowed(&message.dedup_id),
        sequence_number: borrowed(&message.sequence_number),
        dead_letter_source: borrowed(&message.dead_letter_source),
    };
    let state = (StoredState::of(message) != StoredState::new(message.sent_ms)).then(|| state_op(uid, message));
    std::iter::once(Op::put(message_key("msg", uid, message.seq), encode(&record))).chain(state)
}

pub(crate) fn state_op(uid: u64, message: &Message) -> Op {
    Op::put(message_key("state", uid, message.seq), encode(&StoredState::of(message)))
}

pub(crate) fn delete_message_ops(uid: u64, seq: u64) -> [Op; 2] {
    [Op::delete(message_key("msg", uid, seq)), Op::delete(message_key("state", uid, seq))]
}

/// A FIFO message's deduplication id, kept past the message (deleted, purged, moved) while its
/// window lasts.
#[derive(Serialize, Deserialize)]
struct StoredDedup {
    key: String,
    expires: u64,
    message_id: String,
}

/// For a FIFO message leaving its queue inside its deduplication window: the record that keeps
/// its id across a restart (the message's own record, which also does, is going).
pub(crate) fn keep_dedup_op(queue: &mut Queue, message: &Message, now: u64) -> Option<Op> {
    let key = queue.dedup_key(message.group_id.as_deref(), message.dedup_id.as_deref()?);
    let (expires, message_id, _) = queue.dedup.get(&key).filter(|(e, id, _)| *e > now && *id == message.id)?;
    let record = StoredDedup { key: key.clone(), expires: *expires, message_id: message_id.clone() };
    queue.dedup_records.insert(message.seq);
    Some(Op::put(message_key("dedup", queue.uid, message.seq), encode(&record)))
}

pub(crate) fn forget_dedup_op(uid: u64, seq: u64) -> Op {
    Op::delete(message_key("dedup", uid, seq))
}

pub(crate) fn delete_queue_ops(id: &QueueId, uid: u64) -> Vec<Op> {
    let mut ops: Vec<Op> = ["msg", "state", "dedup"]
        .into_iter()
        .map(|kind| {
            let start = queue_prefix(kind, uid);
            let end = prefix_end(&start);
            Op::DeleteRange { start, end }
        })
        .collect();
    ops.push(Op::delete(queue_key(id)));
    ops
}

fn corrupt(what: &str, key: &[u8]) -> SqsError {
    SqsError::Store(store::StoreError::Engine(std::sync::Arc::new(std::io::Error::other(format!(
        "unreadable SQS {what} record at {}",
        String::from_utf8_lossy(key)
    )))))
}

/// Every queue with its messages, as last stored.
pub(crate) async fn load(store: &dyn Store) -> Result<Vec<Queue>, SqsError> {
    let start = keyspace().key(b"queue/");
    let mut queues = Vec::new();
    let mut stale = Vec::new();
    for kv in store.range(&start, &prefix_end(&start), None).await? {
        let Some(path) = kv.key.strip_prefix(start.as_slice()) else { continue };
        let path = String::from_utf8_lossy(path);
        let mut parts = path.splitn(3, '/');
        let (Some(account), Some(region), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt("queue key", &kv.key));
        };
        let record: StoredQueue = postcard::from_bytes(&kv.value).map_err(|_| corrupt("queue", &kv.key))?;
        let id = QueueId { account: account.into(), region: region.into(), name: name.into() };
        let mut queue = Queue {
            uid: record.uid,
            fifo: id.name.ends_with(".fifo"),
            id,
            attributes: record.attributes,
            tags: record.tags,
            created: record.created,
            modified: record.modified,
            messages: BTreeMap::new(),
            schedule: Default::default(),
            next_seq: crate::now_ms() * 1000,
            purged_at: None,
            dedup: Default::default(),
            dedup_expiry: Default::default(),
            dedup_records: Default::default(),
            attempts: Default::default(),
            recent: Default::default(),
            deleted: false,
            oldest_sent_ms: u64::MAX,
            added_during_sweep: u64::MAX,
        };
        load_messages(store, &mut queue).await?;
        stale.extend(load_dedup(store, &mut queue).await?);
        queues.push(queue);
    }
    if !stale.is_empty() {
        store.txn(Txn::ops(stale)).await?;
    }
    Ok(queues)
}

/// The kept deduplication ids of a queue's departed messages: those still inside their window
/// are remembered; the deletes of the others are returned.
async fn load_dedup(store: &dyn Store, queue: &mut Queue) -> Result<Vec<Op>, SqsError> {
    let start = queue_prefix("dedup", queue.uid);
    let now = crate::now_ms();
    let mut stale = Vec::new();
    for kv in store.range(&start, &prefix_end(&start), None).await? {
        let suffix = std::str::from_utf8(&kv.key[start.len()..]).ok();
        let seq = suffix.and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or_else(|| corrupt("dedup", &kv.key))?;
        let record: StoredDedup = postcard::from_bytes(&kv.value).map_err(|_| corrupt("dedup", &kv.key))?;
        if record.expires > now {
            queue.remember_dedup(record.key, record.expires, record.message_id, format!("{seq:020}"));
            queue.dedup_records.insert(seq);
        } else {
            stale.push(Op::delete(kv.key.to_vec()));
        }
    }
    Ok(stale)
}

async fn load_messages(store: &dyn Store, queue: &mut Queue) -> Result<(), SqsError> {
    let states_start = queue_prefix("state", queue.uid);
    let mut states = BTreeMap::new();
    for kv in store.range(&states_start, &prefix_end(&states_start), None).await? {
        let state: StoredState = postcard::from_bytes(&kv.value).map_err(|_| corrupt("message state", &kv.key))?;
        states.insert(kv.key[states_start.len()..].to_vec(), state);
    }
    let start = queue_prefix("msg", queue.uid);
    for kv in store.range(&start, &prefix_end(&start), None).await? {
        let suffix = &kv.key[start.len()..];
        let seq = std::str::from_utf8(suffix).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
        let Some(seq) = seq else { return Err(corrupt("message", &kv.key)) };
        let record: StoredMessage = postcard::from_bytes(&kv.value).map_err(|_| corrupt("message", &kv.key))?;
        let state = states.remove(suffix).unwrap_or_else(|| StoredState::new(record.sent_ms));
        if let Some(dedup_id) = &record.dedup_id {
            // The window restarts with the process: a duplicate within it is still recognised.
            let expires = record.sent_ms + 5 * 60 * 1000;
            let key = queue.dedup_key(record.group_id.as_deref(), dedup_id);
            queue.remember_dedup(
                key,
                expires,
                record.id.to_string(),
                record.sequence_number.as_deref().unwrap_or_default().to_string(),
            );
        }
        queue.next_seq = queue.next_seq.max(seq + 1);
        queue.add_pending(Message {
            seq,
            id: record.id.into_owned(),
            body: record.body.into_owned(),
            attributes: from_stored(record.attributes),
            system_attributes: from_stored(record.system_attributes),
            sender_id: record.sender_id.into_owned(),
            sent_ms: record.sent_ms,
            receive_count: state.receive_count,
            first_receive_ms: state.first_receive_ms,
            visible_at_ms: state.visible_at_ms,
            token: state.token,
            group_id: record.group_id.map(Cow::into_owned),
            dedup_id: record.dedup_id.map(Cow::into_owned),
            sequence_number: record.sequence_number.map(Cow::into_owned),
            dead_letter_source: record.dead_letter_source.map(Cow::into_owned),
            pending: true,
        });
        queue.commit(seq);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_are_fixed_width_hex_in_send_order() {
        assert_eq!(message_key("msg", 0x1f, u64::MAX), b"sqs/msg/000000000000001f/ffffffffffffffff");
        assert_eq!(message_key("state", 0, 0xa0), b"sqs/state/0000000000000000/00000000000000a0");
        assert!(message_key("msg", 7, 0xff) < message_key("msg", 7, 0x100));
        assert!(message_key("msg", 7, 0).starts_with(&queue_prefix("msg", 7)));
    }

    #[test]
    fn a_message_visible_at_once_is_sent_without_a_state_record() {
        let mut message = Message {
            seq: 1,
            id: "m".into(),
            body: "b".into(),
            attributes: Vec::new(),
            system_attributes: Vec::new(),
            sender_id: String::new(),
            sent_ms: 1_000,
            receive_count: 0,
            first_receive_ms: None,
            visible_at_ms: 1_000,
            token: 0,
            group_id: None,
            dedup_id: None,
            sequence_number: None,
            dead_letter_source: None,
            pending: true,
        };
        let keys = |message: &Message| -> Vec<Vec<u8>> {
            message_ops(7, message)
                .map(|op| match op {
                    Op::Put { key, .. } => key,
                    other => panic!("not a put: {other:?}"),
                })
                .collect()
        };
        assert_eq!(keys(&message), vec![message_key("msg", 7, 1)]);
        // Delayed, or moved from another queue (visible from the move, not its sent time).
        message.visible_at_ms = 31_000;
        assert_eq!(keys(&message), vec![message_key("msg", 7, 1), message_key("state", 7, 1)]);
        let Op::Put { value, .. } = state_op(7, &message) else { unreachable!() };
        assert!(postcard::from_bytes::<StoredState>(&value).unwrap() == StoredState::of(&message));
    }
}
