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

use std::collections::BTreeMap;
use std::sync::Arc;

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
pub(crate) type StoredAttribute<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a [u8]>);

/// A message as its send fixed it, which nothing changes afterwards. Borrows from the request
/// when written and from the message's [`Record`] when read. (Its fields were `Cow`s, which encode
/// the same way, so records written before read unchanged.)
#[derive(Serialize, Deserialize)]
#[cfg_attr(test, derive(Default))]
pub(crate) struct StoredMessage<'a> {
    pub id: &'a str,
    pub body: &'a str,
    #[serde(borrow)]
    pub attributes: Vec<StoredAttribute<'a>>,
    #[serde(borrow)]
    pub system_attributes: Vec<StoredAttribute<'a>>,
    pub sender_id: &'a str,
    pub sent_ms: u64,
    #[serde(borrow)]
    pub group_id: Option<&'a str>,
    #[serde(borrow)]
    pub dedup_id: Option<&'a str>,
    #[serde(borrow)]
    pub sequence_number: Option<&'a str>,
    #[serde(borrow)]
    pub dead_letter_source: Option<&'a str>,
}

/// A message's [`StoredMessage`], encoded. The queue keeps these bytes and the store keeps the
/// same allocation (`Op::Put` shares its value), so a message's body and attributes are in memory
/// once, not decoded beside the store's copy (a queued ~100-byte message took ~1 KB with the
/// memory engine). Made only by encoding or from bytes that decoded, so reading it cannot fail.
#[derive(Clone)]
pub(crate) struct Record(Arc<[u8]>);

impl Record {
    pub fn new(message: &StoredMessage) -> Self {
        Record(encode(message).into())
    }

    pub fn fields(&self) -> StoredMessage<'_> {
        postcard::from_bytes(&self.0).expect("a record decodes: it was encoded, or decoded, when made")
    }

    /// The message id alone, the record's first field.
    pub fn id(&self) -> &str {
        postcard::take_from_bytes::<&str>(&self.0).expect("a record decodes: it was encoded, or decoded, when made").0
    }

    /// The record of the message arriving in another queue: dead-lettered from `source`, or
    /// moved (back) with none; in a FIFO queue, with the sequence number it has there.
    pub fn moved(&self, source: Option<&str>, sequence_number: Option<&str>) -> Self {
        Record::new(&StoredMessage { dead_letter_source: source, sequence_number, ..self.fields() })
    }
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct StoredState {
    receive_count: u32,
    first_receive_ms: Option<u64>,
    visible_at_ms: u64,
    token: u64,
    /// When the latest receive was, 0 if unknown.
    received_ms: u64,
}

/// A state as written before `received_ms` was: postcard has no optional trailing fields.
#[derive(Deserialize)]
struct StoredStateV1 {
    receive_count: u32,
    first_receive_ms: Option<u64>,
    visible_at_ms: u64,
    token: u64,
}

impl StoredState {
    /// A message's state when it is sent, visible at once: the state of one without a record.
    fn new(sent_ms: u64) -> Self {
        StoredState { receive_count: 0, first_receive_ms: None, visible_at_ms: sent_ms, token: 0, received_ms: 0 }
    }

    fn of(message: &Message) -> Self {
        StoredState {
            receive_count: message.receive_count,
            first_receive_ms: message.first_receive_ms,
            visible_at_ms: message.visible_at_ms,
            token: message.token,
            received_ms: message.received_ms,
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok().or_else(|| {
            let v1: StoredStateV1 = postcard::from_bytes(bytes).ok()?;
            let StoredStateV1 { receive_count, first_receive_ms, visible_at_ms, token } = v1;
            Some(StoredState { receive_count, first_receive_ms, visible_at_ms, token, received_ms: 0 })
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub(crate) fn to_stored(attributes: &[MessageAttribute]) -> Vec<StoredAttribute<'_>> {
    attributes
        .iter()
        .map(|a| match &a.value {
            AttributeValue::String(s) => (a.name.as_str(), a.data_type.as_str(), Some(s.as_str()), None),
            AttributeValue::Binary(b) => (a.name.as_str(), a.data_type.as_str(), None, Some(b.as_slice())),
        })
        .collect()
}

pub(crate) fn from_stored(attribute: &StoredAttribute) -> MessageAttribute {
    let &(name, data_type, string, binary) = attribute;
    let value = match binary {
        Some(b) => AttributeValue::Binary(b.to_vec()),
        None => AttributeValue::String(string.unwrap_or_default().to_string()),
    };
    MessageAttribute { name: name.to_string(), data_type: data_type.to_string(), value }
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
    let record = Op::Put { key: message_key("msg", uid, message.seq), value: message.record.0.clone() };
    let state = (StoredState::of(message) != StoredState::new(message.sent_ms)).then(|| state_op(uid, message));
    std::iter::once(record).chain(state)
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
    if !queue.fifo {
        return None; // only FIFO messages have deduplication ids: no need to decode the record
    }
    let fields = message.record.fields();
    let key = queue.dedup_key(fields.group_id, fields.dedup_id?);
    let (expires, message_id, _) = queue.dedup.get(&key).filter(|(e, id, _)| *e > now && id == fields.id)?;
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
        // Queues stored before encryption was settled kept the reuse period without a key.
        let mut attributes = record.attributes;
        crate::attributes::settle(&mut attributes, &[])?;
        let mut queue = Queue {
            uid: record.uid,
            fifo: id.name.ends_with(".fifo"),
            id,
            attributes,
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
        if queue.fifo {
            queue.apply_fifo_delay();
        }
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
        let state = StoredState::decode(&kv.value).ok_or_else(|| corrupt("message state", &kv.key))?;
        states.insert(kv.key[states_start.len()..].to_vec(), state);
    }
    let start = queue_prefix("msg", queue.uid);
    for kv in store.range(&start, &prefix_end(&start), None).await? {
        let suffix = &kv.key[start.len()..];
        let seq = std::str::from_utf8(suffix).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
        let Some(seq) = seq else { return Err(corrupt("message", &kv.key)) };
        let fields: StoredMessage = postcard::from_bytes(&kv.value).map_err(|_| corrupt("message", &kv.key))?;
        let state = states.remove(suffix).unwrap_or_else(|| StoredState::new(fields.sent_ms));
        if let Some(dedup_id) = fields.dedup_id {
            // The window restarts with the process: a duplicate within it is still recognised.
            let expires = fields.sent_ms + 5 * 60 * 1000;
            let key = queue.dedup_key(fields.group_id, dedup_id);
            queue.remember_dedup(
                key,
                expires,
                fields.id.to_string(),
                fields.sequence_number.unwrap_or_default().to_string(),
            );
        }
        queue.next_seq = queue.next_seq.max(seq + 1);
        let (sent_ms, group_id) = (fields.sent_ms, fields.group_id.map(String::from));
        queue.add_pending(Message {
            seq,
            // The bytes just decoded: the store's reads share them too.
            record: Record(kv.value.clone()),
            sent_ms,
            receive_count: state.receive_count,
            first_receive_ms: state.first_receive_ms,
            received_ms: state.received_ms,
            visible_at_ms: state.visible_at_ms,
            token: state.token,
            group_id,
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
            record: Record::new(&StoredMessage { id: "m", body: "b", sent_ms: 1_000, ..Default::default() }),
            sent_ms: 1_000,
            receive_count: 0,
            first_receive_ms: None,
            received_ms: 0,
            visible_at_ms: 1_000,
            token: 0,
            group_id: None,
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

    #[test]
    fn states_written_before_the_receive_time_read() {
        #[derive(Serialize)]
        struct V1 {
            receive_count: u32,
            first_receive_ms: Option<u64>,
            visible_at_ms: u64,
            token: u64,
        }
        let old = encode(&V1 { receive_count: 2, first_receive_ms: Some(5), visible_at_ms: 9, token: 3 });
        let state = StoredState::decode(&old).unwrap();
        assert_eq!(
            state,
            StoredState { receive_count: 2, first_receive_ms: Some(5), visible_at_ms: 9, token: 3, received_ms: 0 }
        );
        let new = StoredState { received_ms: 7, ..state };
        assert_eq!(StoredState::decode(&encode(&new)), Some(new));
        assert_eq!(StoredState::decode(&[0xff]), None);
    }

    #[test]
    fn records_written_with_owned_fields_read_borrowed() {
        // The layout records had before they were borrowed: `Cow`s, and binary values as
        // sequences of bytes. A store written then must read the same now.
        use std::borrow::Cow;
        type OldAttribute<'a> = (Cow<'a, str>, Cow<'a, str>, Option<Cow<'a, str>>, Option<Cow<'a, [u8]>>);
        #[derive(Serialize)]
        struct Old<'a> {
            id: Cow<'a, str>,
            body: Cow<'a, str>,
            attributes: Vec<OldAttribute<'a>>,
            system_attributes: Vec<OldAttribute<'a>>,
            sender_id: Cow<'a, str>,
            sent_ms: u64,
            group_id: Option<Cow<'a, str>>,
            dedup_id: Option<Cow<'a, str>>,
            sequence_number: Option<Cow<'a, str>>,
            dead_letter_source: Option<Cow<'a, str>>,
        }
        let old = Old {
            id: "id-1".into(),
            body: "héllo".into(),
            attributes: vec![
                ("s".into(), "String".into(), Some("v".into()), None),
                ("b".into(), "Binary.raw".into(), None, Some(Cow::Borrowed(&[0, 255, 7][..]))),
            ],
            system_attributes: vec![("AWSTraceHeader".into(), "String".into(), Some("Root=1".into()), None)],
            sender_id: "AIDA".into(),
            sent_ms: 42,
            group_id: Some("g".into()),
            dedup_id: Some("d".into()),
            sequence_number: Some("00000000000000000001".into()),
            dead_letter_source: None,
        };
        let bytes = encode(&old);
        let fields: StoredMessage = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((fields.id, fields.body, fields.sender_id, fields.sent_ms), ("id-1", "héllo", "AIDA", 42));
        assert_eq!(
            fields.attributes,
            vec![("s", "String", Some("v"), None), ("b", "Binary.raw", None, Some(&[0, 255, 7][..]))]
        );
        assert_eq!(fields.system_attributes, vec![("AWSTraceHeader", "String", Some("Root=1"), None)]);
        assert_eq!((fields.group_id, fields.dedup_id), (Some("g"), Some("d")));
        assert_eq!((fields.sequence_number, fields.dead_letter_source), (Some("00000000000000000001"), None));
        // And what is written now is byte for byte what was written then.
        assert_eq!(Record::new(&fields).0[..], bytes[..]);
    }

    #[test]
    fn a_moved_record_keeps_everything_but_its_source_and_sequence() {
        let record = Record::new(&StoredMessage { id: "m-7", body: "b", sent_ms: 5, ..Default::default() });
        assert_eq!(record.id(), "m-7");
        let dead = record.moved(Some("arn:aws:sqs:us-east-1:000000000000:q"), Some("00000000000000000009"));
        let fields = dead.fields();
        assert_eq!((fields.id, fields.body, fields.sent_ms), ("m-7", "b", 5));
        assert_eq!(fields.dead_letter_source, Some("arn:aws:sqs:us-east-1:000000000000:q"));
        assert_eq!(fields.sequence_number, Some("00000000000000000009"));
        assert_eq!(dead.moved(None, None).0[..], record.0[..]);
    }
}
