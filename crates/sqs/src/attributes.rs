//! Queue attributes: which exist, their defaults, and the values each accepts.

use std::collections::BTreeMap;

use crate::SqsError;

/// Attributes a caller may set, with their defaults ("" means unset by default).
const SETTABLE: &[(&str, &str)] = &[
    ("DelaySeconds", "0"),
    ("MaximumMessageSize", "1048576"),
    ("MessageRetentionPeriod", "345600"),
    ("Policy", ""),
    ("ReceiveMessageWaitTimeSeconds", "0"),
    ("RedrivePolicy", ""),
    ("RedriveAllowPolicy", ""),
    ("VisibilityTimeout", "30"),
    ("KmsMasterKeyId", ""),
    // Only with a KMS key (see `settle`).
    ("KmsDataKeyReusePeriodSeconds", ""),
    ("SqsManagedSseEnabled", "true"),
];
/// Attributes only FIFO queues have.
const FIFO_SETTABLE: &[(&str, &str)] = &[
    ("FifoQueue", "true"),
    ("ContentBasedDeduplication", "false"),
    ("DeduplicationScope", "queue"),
    ("FifoThroughputLimit", "perQueue"),
];
/// Attributes that an empty value removes, as in SQS.
pub(crate) const REMOVED_WHEN_EMPTY: &[&str] = &["Policy", "RedrivePolicy", "RedriveAllowPolicy"];
/// Attributes SQS computes.
pub(crate) const COMPUTED: &[&str] = &[
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
];

/// The settable attributes a new queue starts with, before the caller's are applied.
pub(crate) fn defaults(fifo: bool) -> BTreeMap<String, String> {
    let fifo_defaults = if fifo { FIFO_SETTABLE } else { &[] };
    SETTABLE
        .iter()
        .chain(fifo_defaults)
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every attribute name `GetQueueAttributes` knows for this kind of queue.
pub(crate) fn all_names(fifo: bool) -> impl Iterator<Item = &'static str> {
    let fifo_names: &[(&str, &str)] = if fifo { FIFO_SETTABLE } else { &[] };
    SETTABLE.iter().chain(fifo_names).map(|(k, _)| *k).chain(COMPUTED.iter().copied())
}

/// Checks one attribute a caller wants to set on a queue, new or not, of this kind.
pub(crate) fn validate(name: &str, value: &str, fifo: bool) -> Result<(), SqsError> {
    let known = SETTABLE.iter().any(|(k, _)| *k == name) || FIFO_SETTABLE.iter().any(|(k, _)| *k == name);
    if !known {
        return Err(SqsError::InvalidAttributeName(format!("Unknown Attribute {name}.")));
    }
    let invalid = || SqsError::InvalidAttributeValue(format!("Invalid value for the parameter {name}."));
    let in_range = |low: u64, high: u64| match value.parse::<u64>() {
        Ok(v) if (low..=high).contains(&v) => Ok(()),
        _ => Err(invalid()),
    };
    match name {
        "DelaySeconds" => in_range(0, 900),
        "MaximumMessageSize" => in_range(1024, 1_048_576),
        "MessageRetentionPeriod" => in_range(60, 1_209_600),
        "ReceiveMessageWaitTimeSeconds" => in_range(0, 20),
        "VisibilityTimeout" => in_range(0, 43_200),
        "KmsDataKeyReusePeriodSeconds" => in_range(60, 86_400),
        "SqsManagedSseEnabled" => bool_value(value).map(|_| ()).ok_or_else(invalid),
        // Empty removes the policy.
        "Policy" | "RedrivePolicy" | "RedriveAllowPolicy" if value.is_empty() => Ok(()),
        // A policy document is a JSON object (what its statements grant is not enforced).
        "Policy" => match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(invalid()),
        },
        "RedrivePolicy" => redrive_policy(value).map(|_| ()),
        "RedriveAllowPolicy" => redrive_allow_policy(value).map(|_| ()),
        // A standard queue has no FifoQueue attribute, not even `false`.
        "FifoQueue" | "ContentBasedDeduplication" if !fifo => {
            Err(SqsError::InvalidAttributeName(format!("Unknown Attribute {name}.")))
        }
        "DeduplicationScope" | "FifoThroughputLimit" if !fifo => Err(SqsError::InvalidAttributeName(format!(
            "You can specify the {name} only when FifoQueue is set to true."
        ))),
        "FifoQueue" => match bool_value(value) {
            Some(true) => Ok(()),
            // (A new queue's name already said which kind it is: `Sqs::create_queue`.)
            Some(false) => Err(SqsError::InvalidAttributeValue(format!(
                "Invalid value for the parameter {name}. Reason: Modifying queue type is not supported."
            ))),
            _ => Err(invalid()),
        },
        "ContentBasedDeduplication" => bool_value(value).map(|_| ()).ok_or_else(invalid),
        "DeduplicationScope" if value == "queue" || value == "messageGroup" => Ok(()),
        "FifoThroughputLimit" if value == "perQueue" || value == "perMessageGroupId" => Ok(()),
        "DeduplicationScope" | "FifoThroughputLimit" => Err(invalid()),
        _ => Ok(()),
    }
}

/// After `changes` were applied to `attributes`, makes them what SQS would keep. A redrive policy
/// is kept in one form, whatever was sent (spacing, a count as a string, other fields), and so are
/// booleans (`true`, `false`). Queues
/// stored before `sourceQueueArns` was refused with `allowAll` and `denyAll` may hold such a redrive
/// allow policy: the ARNs are dropped, else the policy would fail every source's check. Encryption
/// is by SQS-managed keys (the default) or by a KMS key, never both: a KMS key brings its data key
/// reuse period (300 s by default) and turns SQS-managed encryption off; turning that on, or an
/// empty key, drops the key and its period (a period set without a key is kept, unused).
pub(crate) fn settle(attributes: &mut BTreeMap<String, String>, changes: &[(String, String)]) -> Result<(), SqsError> {
    if let Some(policy) = attributes.get("RedrivePolicy").and_then(|p| redrive_policy(p).ok()) {
        let arn = serde_json::Value::from(policy.target_arn);
        let canonical = format!("{{\"deadLetterTargetArn\":{arn},\"maxReceiveCount\":{}}}", policy.max_receive_count);
        attributes.insert("RedrivePolicy".into(), canonical);
    }
    if let Some(mut policy) =
        attributes.get("RedriveAllowPolicy").and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        && matches!(policy["redrivePermission"].as_str(), Some("allowAll" | "denyAll"))
        && let Some(fields) = policy.as_object_mut()
        && fields.remove("sourceQueueArns").is_some()
    {
        attributes.insert("RedriveAllowPolicy".into(), policy.to_string());
    }
    // Booleans are kept as SQS returns them, in lower case, however they were sent.
    for name in ["FifoQueue", "ContentBasedDeduplication", "SqsManagedSseEnabled"] {
        if let Some(value) = attributes.get(name).and_then(|v| bool_value(v)) {
            attributes.insert(name.into(), value.to_string());
        }
    }
    let changed = |name: &str| changes.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let kms_key = changed("KmsMasterKeyId").is_some_and(|k| !k.is_empty());
    let sqs_managed = changed("SqsManagedSseEnabled").and_then(bool_value) == Some(true);
    if kms_key && sqs_managed {
        return Err(SqsError::InvalidAttributeName(
            "You can use one type of server-side encryption (SSE) at one time. You can either enable KMS SSE or SQS SSE."
                .into(),
        ));
    }
    if sqs_managed || attributes.get("KmsMasterKeyId").is_none_or(|k| k.is_empty()) {
        let key_dropped = sqs_managed || changed("KmsMasterKeyId").is_some();
        attributes.remove("KmsMasterKeyId");
        if key_dropped || changed("KmsDataKeyReusePeriodSeconds").is_none() {
            attributes.remove("KmsDataKeyReusePeriodSeconds");
        }
    } else {
        attributes.insert("SqsManagedSseEnabled".into(), "false".into());
        attributes.entry("KmsDataKeyReusePeriodSeconds".into()).or_insert_with(|| "300".into());
    }
    Ok(())
}

pub(crate) fn bool_value(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `{"deadLetterTargetArn": "...", "maxReceiveCount": N}` (the count may be a string).
pub(crate) struct RedrivePolicy {
    pub target_arn: String,
    pub max_receive_count: u32,
}

pub(crate) fn redrive_policy(value: &str) -> Result<RedrivePolicy, SqsError> {
    let invalid = |why: &str| {
        SqsError::InvalidParameterValue(format!("Value {value} for parameter RedrivePolicy is invalid. Reason: {why}"))
    };
    let policy: serde_json::Value =
        serde_json::from_str(value).map_err(|_| invalid("Redrive policy is not a valid JSON map."))?;
    let target_arn = policy["deadLetterTargetArn"]
        .as_str()
        .ok_or_else(|| invalid("Redrive policy does not contain mandatory attribute: deadLetterTargetArn."))?;
    let count = match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Null => {
            return Err(invalid("Redrive policy does not contain mandatory attribute: maxReceiveCount."));
        }
        _ => None,
    };
    match count {
        Some(n @ 1..=1000) => Ok(RedrivePolicy { target_arn: target_arn.to_string(), max_receive_count: n as u32 }),
        _ => Err(invalid("Invalid value for maxReceiveCount: must be an integer from 1 to 1000.")),
    }
}

/// Which queues may use a queue as their dead-letter queue.
pub(crate) enum RedriveAllow {
    All,
    Nobody,
    Only(Vec<String>),
}

pub(crate) fn redrive_allow_policy(value: &str) -> Result<RedriveAllow, SqsError> {
    let invalid = |why: &str| {
        SqsError::InvalidParameterValue(format!(
            "Value {value} for parameter RedriveAllowPolicy is invalid. Reason: {why}"
        ))
    };
    let policy: serde_json::Value =
        serde_json::from_str(value).map_err(|_| invalid("Redrive allow policy is not a valid JSON map."))?;
    let sources: Vec<String> = match &policy["sourceQueueArns"] {
        serde_json::Value::Array(arns) => arns.iter().filter_map(|a| a.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    match policy["redrivePermission"].as_str() {
        Some("allowAll" | "denyAll") if !policy["sourceQueueArns"].is_null() => {
            Err(invalid("sourceQueueArns is only allowed with byQueue."))
        }
        Some("allowAll") => Ok(RedriveAllow::All),
        Some("denyAll") => Ok(RedriveAllow::Nobody),
        Some("byQueue") if (1..=10).contains(&sources.len()) => Ok(RedriveAllow::Only(sources)),
        Some("byQueue") => Err(invalid("byQueue needs between 1 and 10 sourceQueueArns.")),
        _ => Err(invalid("redrivePermission must be allowAll, denyAll or byQueue.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ranges_and_names() {
        assert!(validate("VisibilityTimeout", "43200", false).is_ok());
        assert!(matches!(validate("VisibilityTimeout", "43201", false), Err(SqsError::InvalidAttributeValue(_))));
        assert!(matches!(validate("Colour", "blue", false), Err(SqsError::InvalidAttributeName(_))));
        assert!(matches!(validate("ContentBasedDeduplication", "true", false), Err(SqsError::InvalidAttributeName(_))));
        assert!(validate("FifoQueue", "true", true).is_ok(), "setting what it is changes nothing");
        assert!(matches!(validate("FifoQueue", "false", true), Err(SqsError::InvalidAttributeValue(_))));
        assert!(matches!(validate("FifoQueue", "false", false), Err(SqsError::InvalidAttributeName(_))));
        assert!(validate("RedrivePolicy", "", false).is_ok(), "empty removes it");
    }

    #[test]
    fn encryption_is_by_sqs_or_by_kms() {
        let set = |attributes: &mut BTreeMap<String, String>, changes: &[(&str, &str)]| {
            let changes: Vec<(String, String)> = changes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            for (k, v) in &changes {
                attributes.insert(k.clone(), v.clone());
            }
            settle(attributes, &changes)
        };
        let mut a = defaults(false);
        assert_eq!(a.get("SqsManagedSseEnabled").map(String::as_str), Some("true"));
        assert!(!a.contains_key("KmsDataKeyReusePeriodSeconds"));
        set(&mut a, &[("KmsMasterKeyId", "alias/k")]).unwrap();
        assert_eq!(a["SqsManagedSseEnabled"], "false");
        assert_eq!(a["KmsDataKeyReusePeriodSeconds"], "300");
        set(&mut a, &[("KmsMasterKeyId", "")]).unwrap();
        assert!(!a.contains_key("KmsMasterKeyId") && !a.contains_key("KmsDataKeyReusePeriodSeconds"));
        set(&mut a, &[("KmsMasterKeyId", "alias/k"), ("KmsDataKeyReusePeriodSeconds", "600")]).unwrap();
        set(&mut a, &[("SqsManagedSseEnabled", "true")]).unwrap();
        assert!(!a.contains_key("KmsMasterKeyId") && a["SqsManagedSseEnabled"] == "true");
        let both = set(&mut a, &[("KmsMasterKeyId", "alias/k"), ("SqsManagedSseEnabled", "true")]);
        assert!(matches!(both, Err(SqsError::InvalidAttributeName(_))));
    }

    #[test]
    fn reads_redrive_policies() {
        let p =
            redrive_policy(r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#)
                .unwrap();
        assert_eq!((p.target_arn.as_str(), p.max_receive_count), ("arn:aws:sqs:us-east-1:000000000000:dlq", 3));
        let p = redrive_policy(r#"{"maxReceiveCount": 5, "deadLetterTargetArn": "arn:x"}"#).unwrap();
        assert_eq!(p.max_receive_count, 5);
        assert!(redrive_policy(r#"{"maxReceiveCount": 0, "deadLetterTargetArn": "arn:x"}"#).is_err());
        assert!(redrive_policy("{}").is_err());
    }

    #[test]
    fn stored_allow_policies_lose_the_sources_refused_since() {
        let mut a = defaults(false);
        let stored = r#"{"redrivePermission":"allowAll","sourceQueueArns":["arn:aws:sqs:us-east-1:000000000000:q"]}"#;
        a.insert("RedriveAllowPolicy".into(), stored.into());
        settle(&mut a, &[]).unwrap();
        assert!(matches!(redrive_allow_policy(&a["RedriveAllowPolicy"]), Ok(RedriveAllow::All)));
        let by_queue = r#"{"redrivePermission":"byQueue","sourceQueueArns":["arn:aws:sqs:us-east-1:000000000000:q"]}"#;
        a.insert("RedriveAllowPolicy".into(), by_queue.into());
        settle(&mut a, &[]).unwrap();
        assert_eq!(a["RedriveAllowPolicy"], by_queue, "kept as it was");
    }
}
