//! Topics and subscriptions as SNS keeps them; their records are also their stored form.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::SnsError;
use crate::filter::{FilterPolicy, Scope};

/// A topic's identity: topics are per account and region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicId {
    pub account: String,
    pub region: String,
    pub name: String,
}

impl TopicId {
    pub fn arn(&self) -> String {
        format!("arn:aws:sns:{}:{}:{}", self.region, self.account, self.name)
    }

    /// `arn:aws:sns:<region>:<account>:<name>`
    pub fn from_arn(arn: &str) -> Result<TopicId, SnsError> {
        let parts: Vec<&str> = arn.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "sns", region, account, name] if !region.is_empty() && !account.is_empty() => {
                Ok(TopicId { account: account.to_string(), region: region.to_string(), name: name.to_string() })
            }
            _ => Err(SnsError::invalid("TopicArn")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Topic {
    pub arn: String,
    pub account: String,
    pub region: String,
    pub name: String,
    /// The attributes set by CreateTopic and SetTopicAttributes.
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub data_protection_policy: Option<String>,
    pub subscriptions_deleted: u64,
}

impl Topic {
    pub fn fifo(&self) -> bool {
        self.attributes.get("FifoTopic").is_some_and(|v| v == "true")
    }

    pub fn content_based_deduplication(&self) -> bool {
        self.attributes.get("ContentBasedDeduplication").is_some_and(|v| v == "true")
    }

    /// SignatureVersion: "1" (SHA1withRSA, the default) or "2" (SHA256withRSA).
    pub fn signature_version(&self) -> &str {
        self.attributes.get("SignatureVersion").map_or("1", String::as_str)
    }

    /// The policy SNS gives a new topic: only its owner's account may use it.
    pub fn default_policy(&self) -> String {
        let actions = [
            "SNS:GetTopicAttributes",
            "SNS:SetTopicAttributes",
            "SNS:AddPermission",
            "SNS:RemovePermission",
            "SNS:DeleteTopic",
            "SNS:Subscribe",
            "SNS:ListSubscriptionsByTopic",
            "SNS:Publish",
        ];
        serde_json::json!({
            "Version": "2008-10-17",
            "Id": "__default_policy_ID",
            "Statement": [{
                "Sid": "__default_statement_ID",
                "Effect": "Allow",
                "Principal": { "AWS": "*" },
                "Action": actions,
                "Resource": self.arn,
                "Condition": { "StringEquals": { "AWS:SourceOwner": self.account } },
            }],
        })
        .to_string()
    }

    pub fn policy(&self) -> String {
        self.attributes.get("Policy").cloned().unwrap_or_else(|| self.default_policy())
    }
}

/// Attributes SetTopicAttributes accepts (FifoTopic only at creation).
pub(crate) fn check_topic_attribute(name: &str, value: &str, fifo: bool) -> Result<(), SnsError> {
    const FEEDBACK: &[&str] = &["Application", "HTTP", "Lambda", "SQS", "Firehose"];
    let feedback = FEEDBACK.iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            matches!(rest, "SuccessFeedbackRoleArn" | "SuccessFeedbackSampleRate" | "FailureFeedbackRoleArn")
        })
    });
    let valid = match name {
        "DisplayName" => value.len() <= 100,
        "Policy" | "DeliveryPolicy" => value.is_empty() || is_json_object(value),
        "KmsMasterKeyId" => true,
        "TracingConfig" => matches!(value, "PassThrough" | "Active"),
        "SignatureVersion" => matches!(value, "1" | "2"),
        "ContentBasedDeduplication" if fifo => matches!(value, "true" | "false"),
        "FifoThroughputScope" if fifo => matches!(value, "Topic" | "MessageGroup"),
        "ArchivePolicy" if fifo => value.is_empty() || is_json_object(value),
        _ => feedback,
    };
    if valid { Ok(()) } else { Err(SnsError::invalid(format!("Attributes Reason: Invalid value for {name}"))) }
}

pub(crate) fn is_json_object(value: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| v.is_object())
}

/// Topic names: 1-256 of letters, digits, `_` and `-`; a FIFO topic's name ends in `.fifo`.
pub(crate) fn check_topic_name(name: &str, fifo: bool) -> Result<(), SnsError> {
    let stem = if fifo { name.strip_suffix(".fifo") } else { Some(name) };
    let valid = stem.is_some_and(|stem| {
        !stem.is_empty() && name.len() <= 256 && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    match (valid, fifo) {
        (true, _) => Ok(()),
        (false, true) => Err(SnsError::invalid(
            "Fifo Topic names must end with .fifo and must be made up of only uppercase and lowercase ASCII \
             letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long.",
        )),
        (false, false) => Err(SnsError::invalid("Topic Name")),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscription {
    pub arn: String,
    pub topic_arn: String,
    pub owner: String,
    pub protocol: String,
    pub endpoint: String,
    /// The attributes set by Subscribe and SetSubscriptionAttributes.
    pub attributes: BTreeMap<String, String>,
    pub confirmed: bool,
    /// The token ConfirmSubscription must present.
    pub token: String,
    #[serde(skip)]
    pub(crate) filter: Option<Arc<FilterPolicy>>,
}

impl Subscription {
    pub fn raw(&self) -> bool {
        self.attributes.get("RawMessageDelivery").is_some_and(|v| v == "true")
    }

    fn scope(attributes: &BTreeMap<String, String>) -> Scope {
        match attributes.get("FilterPolicyScope").map(String::as_str) {
            Some("MessageBody") => Scope::MessageBody,
            _ => Scope::MessageAttributes,
        }
    }

    /// Re-parses the filter policy after its attributes changed (or after loading).
    pub(crate) fn compile_filter(&mut self) -> Result<(), SnsError> {
        self.filter = match self.attributes.get("FilterPolicy").filter(|p| !p.is_empty()) {
            Some(policy) => {
                Some(Arc::new(FilterPolicy::parse(policy, Self::scope(&self.attributes)).map_err(|reason| {
                    match reason.starts_with("Filter policy scope") {
                        true => SnsError::invalid(reason),
                        false => SnsError::invalid(format!("FilterPolicy: {reason}")),
                    }
                })?))
            }
            None => None,
        };
        Ok(())
    }

    /// The dead-letter queue from RedrivePolicy.
    pub(crate) fn dead_letter_queue(&self) -> Option<sqs::QueueId> {
        let policy: serde_json::Value = serde_json::from_str(self.attributes.get("RedrivePolicy")?).ok()?;
        sqs::QueueId::from_arn(policy.get("deadLetterTargetArn")?.as_str()?)
    }
}

/// Checks one subscription attribute for a subscription of `protocol`.
pub(crate) fn check_subscription_attribute(protocol: &str, name: &str, value: &str) -> Result<(), SnsError> {
    match name {
        "RawMessageDelivery" => {
            if !matches!(protocol, "sqs" | "http" | "https" | "firehose") {
                return Err(SnsError::invalid(format!(
                    "Delivery protocol [{protocol}] does not support raw message delivery."
                )));
            }
            if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") {
                return Err(SnsError::invalid("RawMessageDelivery: Invalid value [".to_string() + value + "]"));
            }
        }
        "FilterPolicyScope" if !matches!(value, "MessageAttributes" | "MessageBody") => {
            return Err(SnsError::invalid(
                "Attributes Reason: FilterPolicyScope: Invalid value [".to_string()
                    + value
                    + "]. Please use either MessageBody or MessageAttributes",
            ));
        }
        "FilterPolicyScope" | "FilterPolicy" => {}
        "RedrivePolicy" => {
            let policy: Option<serde_json::Value> = serde_json::from_str(value).ok();
            let target = policy.as_ref().and_then(|p| p.get("deadLetterTargetArn")).and_then(|t| t.as_str());
            if !value.is_empty() && target.and_then(sqs::QueueId::from_arn).is_none() {
                return Err(SnsError::invalid("RedrivePolicy: deadLetterTargetArn is an invalid arn"));
            }
        }
        "DeliveryPolicy" => {
            if !value.is_empty() && !is_json_object(value) {
                return Err(SnsError::invalid("DeliveryPolicy: failed to parse JSON"));
            }
        }
        "SubscriptionRoleArn" | "ReplayPolicy" => {}
        _ => return Err(SnsError::invalid("AttributeName")),
    }
    Ok(())
}

/// Checks that `endpoint` suits `protocol`, as Subscribe does.
pub(crate) fn check_endpoint(protocol: &str, endpoint: &str) -> Result<(), SnsError> {
    let valid = match protocol {
        "http" => endpoint.starts_with("http://"),
        "https" => endpoint.starts_with("https://"),
        "email" | "email-json" => endpoint.contains('@') && !endpoint.starts_with('@') && !endpoint.ends_with('@'),
        "sms" => is_phone_number(endpoint),
        "sqs" => sqs::QueueId::from_arn(endpoint).is_some(),
        "lambda" => endpoint.starts_with("arn:") && endpoint.contains(":lambda:"),
        "firehose" => endpoint.starts_with("arn:") && endpoint.contains(":firehose:"),
        "application" => endpoint.starts_with("arn:") && endpoint.contains(":sns:"),
        _ => return Err(SnsError::invalid(format!("Amazon SNS does not support this protocol string: {protocol}"))),
    };
    if valid {
        return Ok(());
    }
    Err(SnsError::invalid(match protocol {
        "http" | "https" => "Endpoint must match the specified protocol".to_string(),
        "sqs" => "Invalid SQS endpoint ARN".to_string(),
        "sms" => format!("Invalid SMS endpoint: {endpoint}"),
        "email" | "email-json" => "Email address".to_string(),
        _ => "Endpoint".to_string(),
    }))
}

/// E.164: `+`, then 1 to 15 digits.
pub(crate) fn is_phone_number(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for (name, fifo, valid) in [
            ("orders", false, true),
            ("Orders_2-x", false, true),
            ("", false, false),
            ("bad name", false, false),
            ("x.fifo", false, false),
            ("x.fifo", true, true),
            ("x", true, false),
            (".fifo", true, false),
        ] {
            assert_eq!(check_topic_name(name, fifo).is_ok(), valid, "{name:?} fifo={fifo}");
        }
        assert!(check_topic_name(&"a".repeat(256), false).is_ok());
        assert!(check_topic_name(&"a".repeat(257), false).is_err());
    }

    #[test]
    fn endpoints_by_protocol() {
        for (protocol, endpoint, valid) in [
            ("http", "http://example.com/hook", true),
            ("http", "https://example.com/hook", false),
            ("https", "https://example.com/hook", true),
            ("email", "dev@example.com", true),
            ("email-json", "@example.com", false),
            ("sms", "+15555550100", true),
            ("sms", "5555550100", false),
            ("sqs", "arn:aws:sqs:us-east-1:000000000000:q", true),
            ("sqs", "https://sqs/q", false),
            ("lambda", "arn:aws:lambda:us-east-1:000000000000:function:f", true),
            ("firehose", "arn:aws:s3:::bucket", false),
            ("pigeon", "anything", false),
        ] {
            assert_eq!(check_endpoint(protocol, endpoint).is_ok(), valid, "{protocol} {endpoint}");
        }
    }

    #[test]
    fn topic_arns() {
        let id = TopicId::from_arn("arn:aws:sns:eu-west-1:123456789012:t").expect("valid");
        assert_eq!((id.region.as_str(), id.account.as_str(), id.name.as_str()), ("eu-west-1", "123456789012", "t"));
        assert_eq!(id.arn(), "arn:aws:sns:eu-west-1:123456789012:t");
        for bad in ["", "arn:aws:sqs:eu-west-1:1:t", "arn:aws:sns::1:t", "arn:aws:sns:r:1:t:extra"] {
            assert!(TopicId::from_arn(bad).is_err(), "{bad}");
        }
    }
}
