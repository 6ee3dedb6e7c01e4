//! Policies: who may act on a topic (its access policy) and how HTTP deliveries are retried
//! (its delivery policy).

use std::time::Duration;

use serde_json::{Value, json};

use crate::model::{Subscription, Topic};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Allowed,
    Denied,
    /// No statement applies.
    Unspecified,
}

/// Evaluates an IAM-style resource policy for a caller's account: an applicable Deny wins,
/// then an applicable Allow. A statement applies when its principal, action and resource match
/// and each of its conditions holds; conditions Stratus cannot evaluate make it not apply.
pub(crate) fn allows(policy: &str, caller_account: &str, action: &str, resource: &str) -> Access {
    let Ok(policy) = serde_json::from_str::<Value>(policy) else { return Access::Unspecified };
    let statements = match &policy["Statement"] {
        Value::Array(statements) => statements.iter().collect(),
        statement @ Value::Object(_) => vec![statement],
        _ => Vec::new(),
    };
    let applies = |s: &&Value| {
        principal_matches(&s["Principal"], caller_account)
            && any_matches(&s["Action"], action)
            && (s["Resource"].is_null() || any_matches(&s["Resource"], resource))
            && conditions_hold(&s["Condition"], caller_account, None)
    };
    let applicable: Vec<&Value> = statements.into_iter().filter(applies).collect();
    if applicable.iter().any(|s| s["Effect"] == "Deny") {
        Access::Denied
    } else if applicable.iter().any(|s| s["Effect"] == "Allow") {
        Access::Allowed
    } else {
        Access::Unspecified
    }
}

/// Whether a queue's policy lets SNS (the topic `source_arn`) send to it.
pub(crate) fn queue_allows_topic(policy: &str, queue_arn: &str, source_arn: &str, topic_account: &str) -> bool {
    let Ok(policy) = serde_json::from_str::<Value>(policy) else { return false };
    let statements = match &policy["Statement"] {
        Value::Array(statements) => statements.iter().collect(),
        statement @ Value::Object(_) => vec![statement],
        _ => Vec::new(),
    };
    let applies = |s: &&Value| {
        let principal = &s["Principal"];
        let service = principal == "*"
            || principal["AWS"] == "*"
            || any_matches(&principal["Service"], "sns.amazonaws.com")
            || principal_matches(principal, topic_account);
        service
            && any_matches(&s["Action"], "sqs:SendMessage")
            && (s["Resource"].is_null() || any_matches(&s["Resource"], queue_arn))
            && conditions_hold(&s["Condition"], topic_account, Some(source_arn))
    };
    let applicable: Vec<&Value> = statements.into_iter().filter(applies).collect();
    !applicable.iter().any(|s| s["Effect"] == "Deny") && applicable.iter().any(|s| s["Effect"] == "Allow")
}

fn principal_matches(principal: &Value, account: &str) -> bool {
    let matches_one = |p: &str| p == "*" || p == account || p == format!("arn:aws:iam::{account}:root");
    match principal {
        Value::String(p) => matches_one(p),
        Value::Object(map) => map.get("AWS").is_some_and(|aws| match aws {
            Value::String(p) => matches_one(p),
            Value::Array(ps) => ps.iter().filter_map(Value::as_str).any(matches_one),
            _ => false,
        }),
        _ => false,
    }
}

/// `pattern` is a string or a list of them, with `*` and `?` wildcards, case-insensitive (as IAM
/// compares actions).
fn any_matches(pattern: &Value, value: &str) -> bool {
    match pattern {
        Value::String(p) => wildcard(&p.to_ascii_lowercase(), &value.to_ascii_lowercase()),
        Value::Array(ps) => ps.iter().any(|p| any_matches(p, value)),
        _ => false,
    }
}

fn wildcard(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.len() == value.len() && pattern.chars().zip(value.chars()).all(|(p, v)| p == '?' || p == v),
        Some((head, tail)) => {
            value.len() >= head.len()
                && wildcard(head, &value[..head.len()])
                && (head.len()..=value.len()).any(|i| value.is_char_boundary(i) && wildcard(tail, &value[i..]))
        }
    }
}

/// The conditions Stratus can check: the source account and the source ARN.
fn conditions_hold(conditions: &Value, account: &str, source_arn: Option<&str>) -> bool {
    let Value::Object(operators) = conditions else { return conditions.is_null() };
    operators.iter().all(|(operator, keys)| {
        let Value::Object(keys) = keys else { return false };
        keys.iter().all(|(key, expected)| {
            let actual = match key.to_ascii_lowercase().as_str() {
                "aws:sourceowner" | "aws:sourceaccount" => Some(account),
                "aws:sourcearn" => source_arn,
                _ => None,
            };
            let Some(actual) = actual else { return false };
            match operator.as_str() {
                "StringEquals" | "ArnEquals" => match expected {
                    Value::String(e) => e == actual,
                    Value::Array(es) => es.iter().any(|e| e == actual),
                    _ => false,
                },
                "StringLike" | "ArnLike" => any_matches(expected, actual),
                _ => false,
            }
        })
    })
}

/// SNS's default for HTTP(S) endpoints: three retries 20 seconds apart.
fn default_http_policy() -> Value {
    json!({
        "defaultHealthyRetryPolicy": {
            "minDelayTarget": 20,
            "maxDelayTarget": 20,
            "numRetries": 3,
            "numMaxDelayRetries": 0,
            "numNoDelayRetries": 0,
            "numMinDelayRetries": 0,
            "backoffFunction": "linear",
        },
        "disableSubscriptionOverrides": false,
        "defaultRequestPolicy": { "headerContentType": "text/plain; charset=UTF-8" },
    })
}

fn topic_http_policy(topic: Option<&Topic>) -> Value {
    let mut policy = default_http_policy();
    let configured = topic.and_then(|t| t.attributes.get("DeliveryPolicy"));
    if let Some(Value::Object(http)) =
        configured.and_then(|p| serde_json::from_str::<Value>(p).ok()).map(|mut p| p["http"].take())
    {
        for (key, value) in http {
            policy[key] = value;
        }
    }
    policy
}

pub(crate) fn effective_topic_delivery_policy(topic: &Topic) -> String {
    json!({ "http": topic_http_policy(Some(topic)) }).to_string()
}

/// A subscription's own DeliveryPolicy overrides its topic's, unless the topic forbids it.
pub(crate) fn effective_subscription_delivery_policy(topic: Option<&Topic>, subscription: &Subscription) -> String {
    effective_http_policy(topic, subscription).to_string()
}

fn effective_http_policy(topic: Option<&Topic>, subscription: &Subscription) -> Value {
    let topic_policy = topic_http_policy(topic);
    let mut policy = json!({
        "healthyRetryPolicy": topic_policy["defaultHealthyRetryPolicy"],
        "requestPolicy": topic_policy["defaultRequestPolicy"],
    });
    if topic_policy["disableSubscriptionOverrides"] != true
        && let Some(Value::Object(own)) =
            subscription.attributes.get("DeliveryPolicy").and_then(|p| serde_json::from_str(p).ok())
    {
        for (key, value) in own {
            policy[key] = value;
        }
    }
    policy
}

/// The delays between an HTTP delivery's attempts, from the effective delivery policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    pub delays: Vec<Duration>,
    pub content_type: String,
}

impl RetryPolicy {
    pub fn for_subscription(topic: Option<&Topic>, subscription: &Subscription) -> RetryPolicy {
        let policy = effective_http_policy(topic, subscription);
        let retry = &policy["healthyRetryPolicy"];
        let number = |name: &str, default: u64| retry[name].as_u64().unwrap_or(default);
        let (min, max) = (number("minDelayTarget", 20), number("maxDelayTarget", 20).max(1));
        let min = min.min(max);
        let retries = number("numRetries", 3).min(100);
        let no_delay = number("numNoDelayRetries", 0).min(retries);
        let at_min = number("numMinDelayRetries", 0).min(retries - no_delay);
        let at_max = number("numMaxDelayRetries", 0).min(retries - no_delay - at_min);
        let backoff = retries - no_delay - at_min - at_max;
        let function = retry["backoffFunction"].as_str().unwrap_or("linear");
        let mut delays = Vec::new();
        delays.extend((0..no_delay).map(|_| 0.0));
        delays.extend((0..at_min).map(|_| min as f64));
        delays.extend((1..=backoff).map(|i| backoff_delay(function, min as f64, max as f64, i, backoff)));
        delays.extend((0..at_max).map(|_| max as f64));
        let content_type =
            policy["requestPolicy"]["headerContentType"].as_str().unwrap_or("text/plain; charset=UTF-8").to_string();
        RetryPolicy { delays: delays.into_iter().map(Duration::from_secs_f64).collect(), content_type }
    }
}

/// The `i`th of `n` delays of the backoff phase, growing from `min` to `max` along the curve
/// the policy names.
fn backoff_delay(function: &str, min: f64, max: f64, i: u64, n: u64) -> f64 {
    let fraction = i as f64 / n as f64;
    match function {
        "arithmetic" => min + (max - min) * fraction * fraction,
        "geometric" | "exponential" if min > 0.0 => min * (max / min).powf(fraction),
        "geometric" | "exponential" => max * fraction.powi(3),
        _ => min + (max - min) * fraction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_admits_only_the_owner() {
        let topic = Topic {
            arn: "arn:aws:sns:us-east-1:111111111111:t".into(),
            account: "111111111111".into(),
            region: "us-east-1".into(),
            name: "t".into(),
            attributes: Default::default(),
            tags: Default::default(),
            data_protection_policy: None,
            subscriptions_deleted: 0,
        };
        let policy = topic.default_policy();
        assert_eq!(allows(&policy, "111111111111", "sns:Publish", &topic.arn), Access::Allowed);
        assert_eq!(allows(&policy, "222222222222", "sns:Publish", &topic.arn), Access::Unspecified);
    }

    #[test]
    fn deny_wins_and_wildcards_match() {
        let policy = r#"{"Statement":[
            {"Effect":"Allow","Principal":"*","Action":"sns:*","Resource":"*"},
            {"Effect":"Deny","Principal":{"AWS":["arn:aws:iam::333333333333:root"]},"Action":"SNS:Publish"}]}"#;
        assert_eq!(allows(policy, "222222222222", "sns:Publish", "arn:x"), Access::Allowed);
        assert_eq!(allows(policy, "333333333333", "sns:Publish", "arn:x"), Access::Denied);
        assert_eq!(allows(policy, "333333333333", "sns:Subscribe", "arn:x"), Access::Allowed);
    }

    #[test]
    fn queue_policy_with_source_arn() {
        let policy = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},
            "Action":"sqs:SendMessage","Resource":"arn:aws:sqs:us-east-1:1:q",
            "Condition":{"ArnEquals":{"aws:SourceArn":"arn:aws:sns:us-east-1:1:t"}}}]}"#;
        assert!(queue_allows_topic(policy, "arn:aws:sqs:us-east-1:1:q", "arn:aws:sns:us-east-1:1:t", "1"));
        assert!(!queue_allows_topic(policy, "arn:aws:sqs:us-east-1:1:q", "arn:aws:sns:us-east-1:1:other", "1"));
    }

    #[test]
    fn retry_phases() {
        let subscription = Subscription {
            arn: "a".into(),
            topic_arn: "t".into(),
            owner: "1".into(),
            protocol: "http".into(),
            endpoint: "http://x".into(),
            attributes: [(
                "DeliveryPolicy".to_string(),
                r#"{"healthyRetryPolicy":{"minDelayTarget":1,"maxDelayTarget":5,"numRetries":6,
                    "numNoDelayRetries":1,"numMinDelayRetries":1,"numMaxDelayRetries":1,"backoffFunction":"linear"}}"#
                    .to_string(),
            )]
            .into(),
            confirmed: true,
            token: String::new(),
            filter: None,
        };
        let delays: Vec<u128> =
            RetryPolicy::for_subscription(None, &subscription).delays.iter().map(Duration::as_millis).collect();
        assert_eq!(delays, vec![0, 1000, 2333, 3666, 5000, 5000]);
        let default =
            RetryPolicy::for_subscription(None, &Subscription { attributes: Default::default(), ..subscription });
        assert_eq!(default.delays, vec![Duration::from_secs(20); 3]);
    }

    /// The backoff phase for each of SNS's curves: from near the minimum to exactly the maximum,
    /// never shrinking, with arithmetic and geometric rising later than linear and exponential
    /// (the shapes of the delivery-policy documentation's chart).
    #[test]
    fn backoff_functions_rise_from_min_to_max() {
        let backoff = |function: &str| -> Vec<f64> {
            let policy = format!(
                r#"{{"healthyRetryPolicy":{{"minDelayTarget":2,"maxDelayTarget":60,"numRetries":10,"backoffFunction":"{function}"}}}}"#
            );
            let subscription = Subscription {
                arn: "a".into(),
                topic_arn: "t".into(),
                owner: "1".into(),
                protocol: "http".into(),
                endpoint: "http://x".into(),
                attributes: [("DeliveryPolicy".to_string(), policy)].into(),
                confirmed: true,
                token: String::new(),
                filter: None,
            };
            RetryPolicy::for_subscription(None, &subscription).delays.iter().map(Duration::as_secs_f64).collect()
        };
        let curves: Vec<(&str, Vec<f64>)> =
            ["linear", "arithmetic", "geometric", "exponential"].into_iter().map(|f| (f, backoff(f))).collect();
        for (function, delays) in &curves {
            assert_eq!(delays.len(), 10, "{function}");
            assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{function} never shrinks: {delays:?}");
            assert!(delays[0] >= 2.0 && delays[0] < 10.0, "{function} starts near the minimum: {delays:?}");
            assert!((delays[9] - 60.0).abs() < 1e-9, "{function} ends at the maximum: {delays:?}");
        }
        let at = |name: &str, i: usize| curves.iter().find(|(f, _)| *f == name).map(|(_, d)| d[i]).unwrap_or(0.0);
        for i in 0..9 {
            assert!(at("arithmetic", i) < at("linear", i), "arithmetic rises later than linear at retry {i}");
            assert!(at("geometric", i) < at("linear", i), "geometric rises later than linear at retry {i}");
        }
    }
}
