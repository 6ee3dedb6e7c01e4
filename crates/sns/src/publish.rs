//! Publish and PublishBatch: validate, pick the subscriptions whose filter policies match,
//! store the message and its deliveries in the outbox, then hand it to delivery; or, for a raw
//! notification whose only target is one queue, deliver it into the queue before answering.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sqs::{AttributeValue, MessageAttribute};
use store::{Op, Txn};

use crate::delivery::{Kind, Mail, Outgoing, Target};
use crate::model::{Topic, TopicId, is_phone_number};
use crate::storage::{self, put};
use crate::{Sns, SnsError, now_ms};

/// Message and attributes together, as SNS counts them.
const MAX_MESSAGE_BYTES: usize = 262_144;
const MAX_BATCH: usize = 10;
/// FIFO topics deduplicate within five minutes, as FIFO queues do.
const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

#[derive(Clone, Debug, Default)]
pub struct Publish {
    pub topic_arn: Option<String>,
    pub target_arn: Option<String>,
    pub phone_number: Option<String>,
    pub message: String,
    pub subject: Option<String>,
    pub message_structure: Option<String>,
    pub attributes: Vec<MessageAttribute>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub message_id: String,
    pub sequence_number: Option<String>,
}

/// A checked message, before it is bound to a topic.
struct Checked {
    publish: Publish,
    per_protocol: Option<BTreeMap<String, String>>,
}

impl Sns {
    /// Publish to a topic, or an SMS straight to a phone number.
    pub async fn publish(
        self: &Arc<Self>,
        caller: &str,
        region: &str,
        publish: Publish,
    ) -> Result<Published, SnsError> {
        if let (None, None, Some(phone)) = (&publish.topic_arn, &publish.target_arn, &publish.phone_number) {
            return self.publish_sms(caller, region, phone.clone(), publish).await;
        }
        let topic_arn = match (&publish.topic_arn, &publish.target_arn) {
            (Some(arn), _) | (None, Some(arn)) => arn.clone(),
            (None, None) => {
                return Err(SnsError::invalid("TopicArn or TargetArn Reason: no value for required parameter"));
            }
        };
        if TopicId::from_arn(&topic_arn).is_err() {
            return Err(SnsError::invalid(if publish.topic_arn.is_some() { "TopicArn" } else { "TargetArn" }));
        }
        let mut results = self.publish_many(caller, &topic_arn, vec![publish]).await?;
        results.pop().unwrap_or(Err(SnsError::EmptyBatchRequest))
    }

    /// PublishBatch: entries are (id, message); answers are in the same order.
    pub async fn publish_batch(
        self: &Arc<Self>,
        caller: &str,
        topic_arn: &str,
        entries: Vec<(String, Publish)>,
    ) -> Result<Vec<(String, Result<Published, SnsError>)>, SnsError> {
        TopicId::from_arn(topic_arn)?;
        if entries.is_empty() {
            return Err(SnsError::EmptyBatchRequest);
        }
        if entries.len() > MAX_BATCH {
            return Err(SnsError::TooManyEntriesInBatchRequest);
        }
        let mut ids = HashSet::new();
        for (id, _) in &entries {
            let valid = !id.is_empty()
                && id.len() <= 80
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(SnsError::InvalidBatchEntryId);
            }
            if !ids.insert(id.as_str()) {
                return Err(SnsError::BatchEntryIdsNotDistinct);
            }
        }
        let total: usize = entries.iter().map(|(_, p)| message_size(p)).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(SnsError::BatchRequestTooLong);
        }
        let (ids, messages): (Vec<String>, Vec<Publish>) = entries.into_iter().unzip();
        let results = self.publish_many(caller, topic_arn, messages).await?;
        Ok(ids.into_iter().zip(results).collect())
    }

    /// Publishes messages to one topic in one store transaction. Errors of the whole call (no
    /// such topic, not authorized) are the outer error; each message's own is in its slot.
    async fn publish_many(
        self: &Arc<Self>,
        caller: &str,
        topic_arn: &str,
        messages: Vec<Publish>,
    ) -> Result<Vec<Result<Published, SnsError>>, SnsError> {
        let checked: Vec<Result<Checked, SnsError>> = messages.into_iter().map(check).collect();
        let now = now_ms();
        let (results, direct, outgoing, pending) = {
            let mut state = self.state();
            let topic = state.topics.get(topic_arn).ok_or(SnsError::NotFound("Topic"))?;
            self.authorize(topic, caller, "Publish")?;
            let topic = topic.clone();
            // Deduplication records past their window go with this transaction.
            let mut ops = Vec::new();
            while let Some((expiry, _)) = state.dedup_expiry.front().filter(|(expiry, _)| *expiry <= now) {
                let expiry = *expiry;
                if let Some((_, key)) = state.dedup_expiry.pop_front()
                    && state.dedup.get(&key).is_some_and(|(e, _, _)| *e == expiry)
                {
                    ops.push(Op::delete(storage::dedup_key(&key.0, &key.1)));
                    state.dedup.remove(&key);
                }
            }
            let mut results = Vec::new();
            let mut outgoing = Vec::new();
            for message in checked {
                let result = message.and_then(|m| self.prepare(&mut state, &topic, m, now, &mut ops));
                results.push(result.map(|prepared| match prepared {
                    Prepared::New(o, published) => {
                        outgoing.push(*o);
                        published
                    }
                    Prepared::Duplicate(published) => published,
                }));
            }
            // A standard topic's raw notifications whose only target is one queue go straight
            // into it below rather than through the outbox: one commit instead of three.
            let (direct, outgoing): (Vec<Outgoing>, Vec<Outgoing>) =
                outgoing.into_iter().partition(|o| !topic.fifo() && crate::delivery::deliverable_directly(o));
            ops.extend(outgoing.iter().filter(|o| !o.targets.is_empty()).map(|o| put(storage::outbox_key(o.seq), o)));
            let pending = (!ops.is_empty()).then(|| self.store.txn(Txn::ops(ops)));
            (results, direct, outgoing, pending)
        };
        if let Some(pending) = pending {
            pending.await?;
        }
        // What could not be delivered straight away takes the outbox's way after all.
        let mut outgoing = outgoing;
        let undelivered = self.delivery.deliver_directly(direct).await;
        if !undelivered.is_empty() {
            let ops = undelivered.iter().map(|o| put(storage::outbox_key(o.seq), o)).collect();
            self.store.txn(Txn::ops(ops)).await?;
            outgoing.extend(undelivered);
        }
        self.delivery.start(Arc::downgrade(self), outgoing).await;
        Ok(results)
    }

    /// Binds a checked message to the topic: FIFO rules and deduplication, then the targets.
    fn prepare(
        &self,
        state: &mut crate::State,
        topic: &Topic,
        checked: Checked,
        now: u64,
        ops: &mut Vec<Op>,
    ) -> Result<Prepared, SnsError> {
        let Checked { publish, per_protocol } = checked;
        let seq = self.next_seq();
        let message_id = uuid::Uuid::new_v4().to_string();
        let (mut group_id, mut dedup_id, mut sequence_number) = (None, None, None);
        if topic.fifo() {
            let group = publish
                .group_id
                .clone()
                .ok_or_else(|| SnsError::invalid("The MessageGroupId parameter is required for FIFO topics"))?;
            let dedup = match (&publish.dedup_id, topic.content_based_deduplication()) {
                (Some(id), _) => id.clone(),
                (None, true) => sqs::content_deduplication_id(&publish.message),
                (None, false) => {
                    return Err(SnsError::invalid(
                        "The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                    ));
                }
            };
            if let Some((_, id, seq)) = state.dedup.get(&(topic.arn.clone(), dedup.clone())) {
                return Ok(Prepared::Duplicate(Published {
                    message_id: id.clone(),
                    sequence_number: Some(seq.clone()),
                }));
            }
            let number = format!("{seq:020}");
            let key = (topic.arn.clone(), dedup.clone());
            let record = (now + DEDUP_WINDOW_MS, message_id.clone(), number.clone());
            ops.push(put(storage::dedup_key(&topic.arn, &dedup), &record));
            state.dedup.insert(key.clone(), record);
            state.dedup_expiry.push_back((now + DEDUP_WINDOW_MS, key));
            (group_id, dedup_id, sequence_number) = (Some(group), Some(dedup), Some(number));
        } else if publish.dedup_id.is_some() {
            return Err(SnsError::invalid(
                "MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type",
            ));
        }
        let mut targets = Vec::new();
        let mut filtered = Vec::new();
        for s in state.subscriptions_of(&topic.arn).filter(|s| s.confirmed) {
            let passes = s.filter.as_ref().is_none_or(|f| f.matches(&publish.attributes, &publish.message));
            let target = Target {
                subscription_arn: s.arn.clone(),
                protocol: s.protocol.clone(),
                endpoint: s.endpoint.clone(),
                raw: s.raw(),
            };
            if passes { targets.push(target) } else { filtered.push(target) }
        }
        let outgoing = Outgoing {
            seq,
            kind: Kind::Notification,
            message_id: message_id.clone(),
            topic_arn: topic.arn.clone(),
            account: topic.account.clone(),
            region: topic.region.clone(),
            subject: publish.subject,
            message: publish.message,
            per_protocol,
            attributes: publish.attributes.iter().map(crate::delivery::StoredAttribute::from).collect(),
            timestamp_ms: now,
            group_id,
            dedup_id,
            sequence_number: sequence_number.clone(),
            signature_version: topic.signature_version().to_string(),
            token: None,
            targets,
        };
        self.delivery.trace_published(&outgoing, &filtered);
        Ok(Prepared::New(Box::new(outgoing), Published { message_id, sequence_number }))
    }

    /// Publish with only a PhoneNumber: an SMS, written to the outbox.
    async fn publish_sms(
        &self,
        account: &str,
        region: &str,
        phone: String,
        publish: Publish,
    ) -> Result<Published, SnsError> {
        if !is_phone_number(&phone) {
            return Err(SnsError::invalid("PhoneNumber Reason: input incorrectly formatted"));
        }
        let checked = check(publish)?;
        let message = checked
            .per_protocol
            .as_ref()
            .and_then(|m| m.get("sms").or_else(|| m.get("default")))
            .cloned()
            .unwrap_or(checked.publish.message);
        let message_id = uuid::Uuid::new_v4().to_string();
        let mut mail = Mail::new(account, region, "sms", &phone, "Publish", message);
        mail.message_id = Some(message_id.clone());
        self.store.put(&storage::mail_key(self.next_seq()), &storage::encode(&mail)).await?;
        Ok(Published { message_id, sequence_number: None })
    }
}

enum Prepared {
    New(Box<Outgoing>, Published),
    /// A FIFO duplicate within the deduplication window: answered, not delivered again.
    Duplicate(Published),
}

fn message_size(publish: &Publish) -> usize {
    let attributes: usize = publish
        .attributes
        .iter()
        .map(|a| {
            let value = match &a.value {
                AttributeValue::String(s) => s.len(),
                AttributeValue::Binary(b) => b.len(),
            };
            a.name.len() + a.data_type.len() + value
        })
        .sum();
    publish.message.len() + attributes
}

/// The checks that need no topic: message, subject, structure and attributes.
fn check(publish: Publish) -> Result<Checked, SnsError> {
    if publish.message.is_empty() {
        return Err(SnsError::invalid("Empty message"));
    }
    if message_size(&publish) > MAX_MESSAGE_BYTES {
        return Err(SnsError::invalid("Message too long"));
    }
    if let Some(subject) = &publish.subject {
        let valid = !subject.is_empty()
            && subject.chars().count() <= 100
            && subject.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
            && !subject.chars().any(|c| c.is_control());
        if !valid {
            return Err(SnsError::invalid("Subject"));
        }
    }
    let per_protocol = match publish.message_structure.as_deref() {
        None | Some("") => None,
        Some("json") => {
            let parsed: serde_json::Value = serde_json::from_str(&publish.message)
                .map_err(|_| SnsError::invalid("Message Structure - JSON message body failed to parse"))?;
            let serde_json::Value::Object(map) = parsed else {
                return Err(SnsError::invalid("Message Structure - JSON message body failed to parse"));
            };
            let map: BTreeMap<String, String> = map
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    _ => Err(SnsError::invalid("Message Structure - JSON message body failed to parse")),
                })
                .collect::<Result<_, _>>()?;
            if !map.contains_key("default") {
                return Err(SnsError::invalid("Message Structure - No default entry in JSON message body"));
            }
            Some(map)
        }
        Some(other) => return Err(SnsError::invalid(format!("MessageStructure Reason: Unsupported value {other}"))),
    };
    for (parameter, value) in [("MessageGroupId", &publish.group_id), ("MessageDeduplicationId", &publish.dedup_id)] {
        // What a subscribed queue would refuse, refused here rather than dead-lettered later.
        if value.as_deref().is_some_and(|v| !sqs::valid_fifo_id(v)) {
            return Err(SnsError::invalid(format!(
                "{parameter} Reason: {parameter} can only include alphanumeric and punctuation characters. 1 to 128 in length."
            )));
        }
    }
    for attribute in &publish.attributes {
        check_attribute(attribute)?;
    }
    Ok(Checked { publish, per_protocol })
}

/// An attribute SNS itself defines, for SMS and mobile push.
pub(crate) fn sns_reserved(name: &str) -> bool {
    name.starts_with("AWS.SNS.") || name.starts_with("AWS.MM.")
}

fn check_attribute(attribute: &MessageAttribute) -> Result<(), SnsError> {
    let name = &attribute.name;
    let kind = attribute.data_type.split('.').next().unwrap_or_default();
    let invalid = |what: String| Err(SnsError::ParameterValueInvalid(what));
    // A subscribed queue would refuse the name, so SNS (whose rules are the same) does up front;
    // except SNS's own reserved attributes (`AWS.SNS.SMS.SenderID`, `AWS.SNS.MOBILE.*`, `AWS.MM.*`),
    // which raw delivery leaves out of what it sends to a queue.
    if let Some(problem) = sqs::attribute_name_problem(name).filter(|_| !sns_reserved(name)) {
        return invalid(problem.into());
    }
    match (kind, &attribute.value) {
        ("String" | "Number", AttributeValue::String(s)) if s.is_empty() => invalid(format!(
            "The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{kind}'."
        )),
        ("Number", AttributeValue::String(s)) if s.trim().parse::<f64>().is_err() => {
            invalid(format!("Could not cast message attribute '{name}' value to number."))
        }
        ("String", AttributeValue::String(s)) if attribute.data_type == "String.Array" => {
            match serde_json::from_str::<serde_json::Value>(s) {
                Ok(serde_json::Value::Array(items)) if items.iter().all(|i| !i.is_array() && !i.is_object()) => Ok(()),
                _ => invalid(format!(
                    "The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."
                )),
            }
        }
        ("String" | "Number", AttributeValue::String(_)) => Ok(()),
        ("Binary", AttributeValue::Binary(b)) if !b.is_empty() => Ok(()),
        ("String" | "Number" | "Binary", _) => invalid(format!(
            "The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{kind}'."
        )),
        _ => invalid(format!(
            "The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Publish {
        Publish { message: text.to_string(), ..Publish::default() }
    }

    fn attribute(data_type: &str, value: AttributeValue) -> Publish {
        let attributes = vec![MessageAttribute { name: "a".into(), data_type: data_type.into(), value }];
        Publish { attributes, ..message("m") }
    }

    /// `Ok(())` or the error's message.
    fn checked(publish: Publish) -> Result<(), String> {
        check(publish).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn messages_and_subjects() {
        assert_eq!(checked(message("")), Err("Invalid parameter: Empty message".into()));
        assert_eq!(
            checked(message(&"x".repeat(MAX_MESSAGE_BYTES + 1))),
            Err("Invalid parameter: Message too long".into())
        );
        assert_eq!(checked(message(&"x".repeat(MAX_MESSAGE_BYTES))), Ok(()));
        for (subject, valid) in [("Hello", true), ("", false), ("a\nb", false), (&*"s".repeat(101), false)] {
            let publish = Publish { subject: Some(subject.to_string()), ..message("m") };
            assert_eq!(checked(publish).is_ok(), valid, "{subject:?}");
        }
    }

    #[test]
    fn message_structure() {
        let structured = |text: &str| Publish { message_structure: Some("json".into()), ..message(text) };
        let per_protocol = check(structured(r#"{"default":"d","sqs":"q"}"#)).expect("valid").per_protocol;
        assert_eq!(per_protocol.and_then(|m| m.get("sqs").cloned()), Some("q".to_string()));
        let no_default = "Invalid parameter: Message Structure - No default entry in JSON message body";
        assert_eq!(checked(structured(r#"{"sqs":"q"}"#)), Err(no_default.into()));
        for bad in ["not json", "[]", r#"{"default":1}"#] {
            assert!(checked(structured(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_values_by_type() {
        let string = |s: &str| AttributeValue::String(s.to_string());
        let cases = [
            ("String", string("x"), true),
            ("String", string(""), false),
            ("Number", string("-1.5e3"), true),
            ("Number.float", string("2"), true),
            ("Number", string("abc"), false),
            ("String.Array", string(r#"["a", 1, true, null]"#), true),
            ("String.Array", string(r#"[["nested"]]"#), false),
            ("String.Array", string("not an array"), false),
            ("Binary", AttributeValue::Binary(vec![0, 1]), true),
            ("Binary", string("x"), false),
            ("Banana", string("x"), false),
        ];
        for (data_type, value, valid) in cases {
            let result = checked(attribute(data_type, value.clone()));
            assert_eq!(result.is_ok(), valid, "{data_type} {value:?}: {result:?}");
        }
    }
}
