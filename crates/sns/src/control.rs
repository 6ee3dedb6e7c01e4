//! The control plane: topics, subscriptions, tags, permissions, data protection, the SMS sandbox.
//! Each change is made in memory and its store transaction submitted under the state lock (so
//! the store sees changes in lock order), then awaited after the lock is released.

use std::collections::BTreeMap;

use store::{Op, Txn};

use crate::delivery::{Kind, Outgoing};
use crate::model::{self, Subscription, Topic, TopicId};
use crate::policy::{Access, allows};
use crate::storage::{self, SandboxNumber, put};
use crate::{PROTOCOLS, Sns, SnsError};

/// ListTopics and ListSubscriptions pages.
const PAGE: usize = 100;
const MAX_TAGS: usize = 50;
/// How long an UnsubscribeConfirmation's SubscribeURL can restore the subscription.
const DEPARTED_MS: u64 = 3 * 24 * 3600 * 1000;

/// A page of a list call, and the token for the next one.
pub type Page<T> = (Vec<T>, Option<String>);

/// One subscription as the List calls show it.
#[derive(Clone, Debug)]
pub struct SubscriptionSummary {
    pub arn: String,
    pub owner: String,
    pub protocol: String,
    pub endpoint: String,
    pub topic_arn: String,
}

impl Sns {
    pub async fn create_topic(
        &self,
        id: TopicId,
        attributes: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        data_protection_policy: Option<String>,
    ) -> Result<String, SnsError> {
        let fifo = attributes.get("FifoTopic").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        model::check_topic_name(&id.name, fifo)?;
        for (name, value) in &attributes {
            if name != "FifoTopic" {
                model::check_topic_attribute(name, value, fifo)?;
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(SnsError::TagLimitExceeded);
        }
        if let Some(policy) = &data_protection_policy {
            check_data_protection_policy(policy)?;
        }
        let arn = id.arn();
        let mut attributes = attributes;
        if fifo {
            attributes.insert("FifoTopic".into(), "true".into());
        }
        let pending = {
            let mut state = self.state();
            if let Some(existing) = state.topics.get(&arn) {
                // CreateTopic is idempotent while what it asks for matches what exists.
                let differs = attributes.iter().any(|(k, v)| existing.attributes.get(k) != Some(v));
                if differs {
                    return Err(SnsError::invalid("Attributes Reason: Topic already exists with different attributes"));
                }
                if !tags.is_empty() && tags != existing.tags {
                    return Err(SnsError::invalid("Tags Reason: Topic already exists with different tags"));
                }
                return Ok(arn);
            }
            let topic = Topic {
                arn: arn.clone(),
                account: id.account,
                region: id.region,
                name: id.name,
                attributes,
                tags,
                data_protection_policy,
                subscriptions_deleted: 0,
            };
            let pending = self.store.txn(Txn::ops(vec![put(storage::topic_key(&arn), &topic)]));
            state.topics.insert(arn.clone(), topic);
            pending
        };
        pending.await?;
        Ok(arn)
    }

    /// DeleteTopic also removes the topic's subscriptions; deleting a missing topic succeeds.
    pub async fn delete_topic(&self, arn: &str, caller: &str) -> Result<(), SnsError> {
        TopicId::from_arn(arn)?;
        let pending = {
            let mut state = self.state();
            let Some(topic) = state.topics.get(arn) else { return Ok(()) };
            self.authorize(topic, caller, "DeleteTopic")?;
            state.topics.remove(arn);
            let gone: Vec<String> = state.subscriptions_of(arn).map(|s| s.arn.clone()).collect();
            let mut ops = vec![Op::delete(storage::topic_key(arn))];
            for sub in gone {
                state.subscriptions.remove(&sub);
                ops.push(Op::delete(storage::subscription_key(&sub)));
            }
            state.dedup.retain(|(topic, _), _| topic != arn);
            let dedup = storage::dedup_prefix(arn);
            ops.push(Op::DeleteRange { end: store::prefix_end(&dedup), start: dedup });
            self.store.txn(Txn::ops(ops))
        };
        pending.await?;
        Ok(())
    }

    pub fn list_topics(&self, account: &str, region: &str, token: Option<&str>) -> Result<Page<String>, SnsError> {
        let state = self.state();
        let mine = state.topics.values().filter(|t| t.account == account && t.region == region);
        page(mine.map(|t| t.arn.clone()), token)
    }

    pub fn topic(&self, arn: &str) -> Result<Topic, SnsError> {
        TopicId::from_arn(arn)?;
        self.state().topics.get(arn).cloned().ok_or(SnsError::NotFound("Topic"))
    }

    pub fn topic_attributes(&self, arn: &str, caller: &str) -> Result<Vec<(String, String)>, SnsError> {
        let topic = self.topic(arn)?;
        self.authorize(&topic, caller, "GetTopicAttributes")?;
        let (mut confirmed, mut pending) = (0, 0);
        for s in self.state().subscriptions_of(arn) {
            if s.confirmed { confirmed += 1 } else { pending += 1 }
        }
        let mut out: BTreeMap<String, String> = topic.attributes.clone();
        out.insert("TopicArn".into(), topic.arn.clone());
        out.insert("Owner".into(), topic.account.clone());
        out.insert("Policy".into(), topic.policy());
        out.entry("DisplayName".into()).or_default();
        out.insert("SubscriptionsConfirmed".into(), confirmed.to_string());
        out.insert("SubscriptionsPending".into(), pending.to_string());
        out.insert("SubscriptionsDeleted".into(), topic.subscriptions_deleted.to_string());
        out.insert("EffectiveDeliveryPolicy".into(), crate::policy::effective_topic_delivery_policy(&topic));
        if topic.fifo() {
            out.entry("ContentBasedDeduplication".into()).or_insert_with(|| "false".into());
        }
        Ok(out.into_iter().collect())
    }

    pub async fn set_topic_attribute(&self, arn: &str, caller: &str, name: &str, value: &str) -> Result<(), SnsError> {
        let pending = {
            let mut state = self.state();
            let topic = state.topics.get_mut(arn).ok_or(SnsError::NotFound("Topic"))?;
            self.authorize(topic, caller, "SetTopicAttributes")?;
            model::check_topic_attribute(name, value, topic.fifo())?;
            if value.is_empty() && matches!(name, "Policy" | "DeliveryPolicy" | "ArchivePolicy") {
                topic.attributes.remove(name);
            } else {
                topic.attributes.insert(name.into(), value.into());
            }
            self.store.txn(Txn::ops(vec![put(storage::topic_key(arn), topic)]))
        };
        pending.await?;
        Ok(())
    }

    /// Subscribe: idempotent for the same topic, protocol and endpoint. Returns the subscription,
    /// and whether it still awaits confirmation.
    pub async fn subscribe(
        self: &std::sync::Arc<Self>,
        topic_arn: &str,
        caller: &str,
        protocol: &str,
        endpoint: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<Subscription, SnsError> {
        let protocol = protocol.to_ascii_lowercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(SnsError::invalid(format!("Amazon SNS does not support this protocol string: {protocol}")));
        }
        model::check_endpoint(&protocol, endpoint)?;
        for (name, value) in &attributes {
            model::check_subscription_attribute(&protocol, name, value)?;
        }
        let topic = self.topic(topic_arn)?;
        self.authorize(&topic, caller, "Subscribe")?;
        if protocol == "sqs" && endpoint.ends_with(".fifo") && !topic.fifo() {
            return Err(SnsError::invalid(
                "Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics",
            ));
        }
        let id = uuid::Uuid::new_v4();
        let mut subscription = Subscription {
            arn: format!("{topic_arn}:{id}"),
            topic_arn: topic_arn.into(),
            owner: caller.into(),
            protocol: protocol.clone(),
            endpoint: endpoint.into(),
            attributes,
            confirmed: needs_no_confirmation(&protocol, endpoint, &topic.account),
            token: confirmation_token(),
            filter: None,
        };
        subscription.compile_filter().map_err(|error| match error {
            SnsError::InvalidParameter(reason) => SnsError::invalid(format!("Attributes Reason: {reason}")),
            other => other,
        })?;
        let pending = {
            let mut state = self.state();
            if !state.topics.contains_key(topic_arn) {
                return Err(SnsError::NotFound("Topic"));
            }
            let existing = state.subscriptions_of(topic_arn).find(|s| s.protocol == protocol && s.endpoint == endpoint);
            if let Some(existing) = existing {
                let differs = subscription.attributes.iter().any(|(k, v)| existing.attributes.get(k) != Some(v));
                if differs {
                    return Err(SnsError::invalid(
                        "Attributes Reason: Subscription already exists with different attributes",
                    ));
                }
                return Ok(existing.clone());
            }
            let mut ops = vec![put(storage::subscription_key(&subscription.arn), &subscription)];
            let confirmation = (!subscription.confirmed).then(|| {
                Outgoing::confirmation(self.next_seq(), Kind::SubscriptionConfirmation, &topic, &subscription)
            });
            if let Some(outgoing) = &confirmation {
                ops.push(put(storage::outbox_key(outgoing.seq), outgoing));
                self.delivery.trace_published(outgoing, &[]);
            }
            state.subscriptions.insert(subscription.arn.clone(), subscription.clone());
            let pending = self.store.txn(Txn::ops(ops));
            (pending, confirmation)
        };
        let (pending, confirmation) = pending;
        pending.await?;
        if let Some(outgoing) = confirmation {
            self.delivery.start(std::sync::Arc::downgrade(self), vec![outgoing]).await;
        }
        Ok(subscription)
    }

    /// ConfirmSubscription: the token from the SubscriptionConfirmation message.
    pub async fn confirm_subscription(&self, topic_arn: &str, token: &str) -> Result<String, SnsError> {
        TopicId::from_arn(topic_arn)?;
        let (arn, pending) = {
            let mut state = self.state();
            if !state.topics.contains_key(topic_arn) {
                return Err(SnsError::NotFound("Topic"));
            }
            let arn = state.subscriptions_of(topic_arn).find(|s| s.token == token).map(|s| s.arn.clone());
            match arn {
                None => {
                    // The SubscribeURL of an UnsubscribeConfirmation: the subscription comes back.
                    let restorable = state
                        .departed
                        .get(token)
                        .is_some_and(|(expiry, d)| d.topic_arn == topic_arn && *expiry > crate::now_ms());
                    let departed = restorable
                        .then(|| state.departed.remove(token).map(|(_, d)| d))
                        .flatten()
                        .ok_or_else(|| SnsError::invalid("Invalid token"))?;
                    let arn = departed.arn.clone();
                    let ops =
                        vec![Op::delete(storage::departed_key(token)), put(storage::subscription_key(&arn), &departed)];
                    state.subscriptions.insert(arn.clone(), departed);
                    (arn, self.store.txn(Txn::ops(ops)))
                }
                Some(arn) => {
                    let subscription =
                        state.subscriptions.get_mut(&arn).ok_or_else(|| SnsError::invalid("Invalid token"))?;
                    if subscription.confirmed {
                        return Ok(arn);
                    }
                    subscription.confirmed = true;
                    (arn.clone(), self.store.txn(Txn::ops(vec![put(storage::subscription_key(&arn), &*subscription)])))
                }
            }
        };
        pending.await?;
        Ok(arn)
    }

    /// Unsubscribe. An HTTP(S) endpoint is sent an UnsubscribeConfirmation, as SNS does.
    pub async fn unsubscribe(self: &std::sync::Arc<Self>, arn: &str) -> Result<(), SnsError> {
        let topic_arn = subscription_topic(arn)?;
        let (pending, farewell) = {
            let mut guard = self.state();
            let state = &mut *guard;
            let subscription = state.subscriptions.remove(arn).ok_or(SnsError::NotFound("Subscription"))?;
            let mut ops = vec![Op::delete(storage::subscription_key(arn))];
            let mut farewell = None;
            if let Some(topic) = state.topics.get_mut(topic_arn) {
                topic.subscriptions_deleted += 1;
                ops.push(put(storage::topic_key(topic_arn), topic));
                if matches!(subscription.protocol.as_str(), "http" | "https") {
                    let kind = Kind::UnsubscribeConfirmation;
                    let outgoing = Outgoing::confirmation(self.next_seq(), kind, topic, &subscription);
                    ops.push(put(storage::outbox_key(outgoing.seq), &outgoing));
                    self.delivery.trace_published(&outgoing, &[]);
                    farewell = Some(outgoing);
                    let now = crate::now_ms();
                    let gone: Vec<String> = state
                        .departed
                        .iter()
                        .filter(|(_, (expiry, _))| *expiry <= now)
                        .map(|(t, _)| t.clone())
                        .collect();
                    for token in gone {
                        state.departed.remove(&token);
                        ops.push(Op::delete(storage::departed_key(&token)));
                    }
                    let kept = (now + DEPARTED_MS, subscription);
                    ops.push(put(storage::departed_key(&kept.1.token), &kept));
                    state.departed.insert(kept.1.token.clone(), kept);
                }
            }
            (self.store.txn(Txn::ops(ops)), farewell)
        };
        pending.await?;
        if let Some(outgoing) = farewell {
            self.delivery.start(std::sync::Arc::downgrade(self), vec![outgoing]).await;
        }
        Ok(())
    }

    /// ListSubscriptions (every topic of the account and region) or ListSubscriptionsByTopic.
    pub fn list_subscriptions(
        &self,
        account: &str,
        region: &str,
        topic_arn: Option<&str>,
        token: Option<&str>,
    ) -> Result<Page<SubscriptionSummary>, SnsError> {
        let state = self.state();
        if let Some(topic_arn) = topic_arn {
            TopicId::from_arn(topic_arn)?;
            if !state.topics.contains_key(topic_arn) {
                return Err(SnsError::NotFound("Topic"));
            }
        }
        // Subscription ARNs start with their topic's, which starts with the region and account.
        let prefix = match topic_arn {
            Some(topic) => format!("{topic}:"),
            None => format!("arn:aws:sns:{region}:{account}:"),
        };
        let selected = state.subscriptions.range(prefix.clone()..).take_while(|(arn, _)| arn.starts_with(&prefix));
        let selected = selected.map(|(_, s)| s);
        let summaries = selected.map(|s| SubscriptionSummary {
            arn: if s.confirmed { s.arn.clone() } else { "PendingConfirmation".into() },
            owner: s.owner.clone(),
            protocol: s.protocol.clone(),
            endpoint: s.endpoint.clone(),
            topic_arn: s.topic_arn.clone(),
        });
        page(summaries, token)
    }

    pub fn subscription(&self, arn: &str) -> Result<Subscription, SnsError> {
        subscription_topic(arn)?;
        self.state().subscriptions.get(arn).cloned().ok_or(SnsError::NotFound("Subscription"))
    }

    pub fn subscription_attributes(&self, arn: &str) -> Result<Vec<(String, String)>, SnsError> {
        let subscription = self.subscription(arn)?;
        let mut out = subscription.attributes.clone();
        out.insert("SubscriptionArn".into(), subscription.arn.clone());
        out.insert("TopicArn".into(), subscription.topic_arn.clone());
        out.insert("Owner".into(), subscription.owner.clone());
        out.insert("Protocol".into(), subscription.protocol.clone());
        out.insert("Endpoint".into(), subscription.endpoint.clone());
        out.insert("PendingConfirmation".into(), (!subscription.confirmed).to_string());
        out.insert("ConfirmationWasAuthenticated".into(), subscription.confirmed.to_string());
        out.entry("RawMessageDelivery".into()).or_insert_with(|| "false".into());
        if matches!(subscription.protocol.as_str(), "http" | "https") {
            let topic = self.state().topics.get(&subscription.topic_arn).cloned();
            let effective = crate::policy::effective_subscription_delivery_policy(topic.as_ref(), &subscription);
            out.insert("EffectiveDeliveryPolicy".into(), effective);
        }
        Ok(out.into_iter().collect())
    }

    pub async fn set_subscription_attribute(&self, arn: &str, name: &str, value: &str) -> Result<(), SnsError> {
        subscription_topic(arn)?;
        let pending = {
            let mut state = self.state();
            let subscription = state.subscriptions.get_mut(arn).ok_or(SnsError::NotFound("Subscription"))?;
            model::check_subscription_attribute(&subscription.protocol, name, value)?;
            let mut changed = subscription.clone();
            if value.is_empty() && name != "RawMessageDelivery" {
                changed.attributes.remove(name);
            } else if name == "RawMessageDelivery" {
                changed.attributes.insert(name.into(), value.to_ascii_lowercase());
            } else {
                changed.attributes.insert(name.into(), value.into());
            }
            changed.compile_filter()?;
            *subscription = changed;
            self.store.txn(Txn::ops(vec![put(storage::subscription_key(arn), &*subscription)]))
        };
        pending.await?;
        Ok(())
    }

    pub fn list_tags(&self, resource_arn: &str) -> Result<Vec<(String, String)>, SnsError> {
        let state = self.state();
        let topic = state.topics.get(resource_arn).ok_or(SnsError::ResourceNotFound)?;
        Ok(topic.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// TagResource (`add`) and UntagResource (`remove`).
    pub async fn change_tags(
        &self,
        resource_arn: &str,
        add: BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<(), SnsError> {
        let pending = {
            let mut state = self.state();
            let topic = state.topics.get_mut(resource_arn).ok_or(SnsError::ResourceNotFound)?;
            let mut tags = topic.tags.clone();
            tags.extend(add);
            tags.retain(|k, _| !remove.contains(k));
            if tags.len() > MAX_TAGS {
                return Err(SnsError::TagLimitExceeded);
            }
            topic.tags = tags;
            self.store.txn(Txn::ops(vec![put(storage::topic_key(resource_arn), topic)]))
        };
        pending.await?;
        Ok(())
    }

    /// AddPermission: a policy statement named `label` allowing `accounts` the `actions`.
    pub async fn add_permission(
        &self,
        arn: &str,
        caller: &str,
        label: &str,
        accounts: &[String],
        actions: &[String],
    ) -> Result<(), SnsError> {
        if accounts.is_empty() || actions.is_empty() {
            return Err(SnsError::invalid("AWSAccountId and ActionName are required"));
        }
        self.change_policy(arn, caller, "AddPermission", |statements| {
            if statements.iter().any(|s| s["Sid"] == label) {
                return Err(SnsError::invalid("Statement already exists"));
            }
            let principals: Vec<String> = accounts.iter().map(|a| format!("arn:aws:iam::{a}:root")).collect();
            let actions: Vec<String> = actions.iter().map(|a| format!("SNS:{a}")).collect();
            statements.push(serde_json::json!({
                "Sid": label,
                "Effect": "Allow",
                "Principal": { "AWS": principals },
                "Action": actions,
                "Resource": arn,
            }));
            Ok(())
        })
        .await
    }

    pub async fn remove_permission(&self, arn: &str, caller: &str, label: &str) -> Result<(), SnsError> {
        self.change_policy(arn, caller, "RemovePermission", |statements| {
            let before = statements.len();
            statements.retain(|s| s["Sid"] != label);
            if statements.len() == before {
                return Err(SnsError::invalid("Statement does not exist"));
            }
            Ok(())
        })
        .await
    }

    async fn change_policy(
        &self,
        arn: &str,
        caller: &str,
        action: &str,
        change: impl FnOnce(&mut Vec<serde_json::Value>) -> Result<(), SnsError>,
    ) -> Result<(), SnsError> {
        TopicId::from_arn(arn)?;
        let pending = {
            let mut state = self.state();
            let topic = state.topics.get_mut(arn).ok_or(SnsError::NotFound("Topic"))?;
            self.authorize(topic, caller, action)?;
            let mut policy: serde_json::Value =
                serde_json::from_str(&topic.policy()).map_err(|_| SnsError::invalid("Policy"))?;
            let mut statements = match policy.get_mut("Statement").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(statements)) => statements,
                Some(statement @ serde_json::Value::Object(_)) => vec![statement],
                _ => Vec::new(),
            };
            change(&mut statements)?;
            policy["Statement"] = serde_json::Value::Array(statements);
            topic.attributes.insert("Policy".into(), policy.to_string());
            self.store.txn(Txn::ops(vec![put(storage::topic_key(arn), topic)]))
        };
        pending.await?;
        Ok(())
    }

    /// A caller from another account needs the topic policy's permission; anyone is refused by
    /// an explicit Deny.
    pub(crate) fn authorize(&self, topic: &Topic, caller: &str, action: &str) -> Result<(), SnsError> {
        let decision = match topic.attributes.get("Policy") {
            Some(policy) => allows(policy, caller, &format!("sns:{action}"), &topic.arn),
            // The default policy admits the owner's account and no other: no need to parse it.
            None => Access::Unspecified,
        };
        let allowed = match decision {
            Access::Denied => false,
            Access::Allowed => true,
            Access::Unspecified => caller == topic.account,
        };
        if allowed {
            Ok(())
        } else {
            Err(SnsError::AuthorizationError(format!(
                "User: arn:aws:iam::{caller}:root is not authorized to perform: SNS:{action} on resource: {}",
                topic.arn
            )))
        }
    }

    pub fn data_protection_policy(&self, resource_arn: &str) -> Result<String, SnsError> {
        TopicId::from_arn(resource_arn)?;
        let state = self.state();
        let topic = state.topics.get(resource_arn).ok_or(SnsError::ResourceNotFound)?;
        Ok(topic.data_protection_policy.clone().unwrap_or_default())
    }

    /// PutDataProtectionPolicy: stored and returned; Stratus does not inspect messages for
    /// sensitive data, so the policy's audit and deny statements have no effect here.
    pub async fn put_data_protection_policy(&self, resource_arn: &str, policy: &str) -> Result<(), SnsError> {
        TopicId::from_arn(resource_arn)?;
        check_data_protection_policy(policy)?;
        let pending = {
            let mut state = self.state();
            let topic = state.topics.get_mut(resource_arn).ok_or(SnsError::ResourceNotFound)?;
            topic.data_protection_policy = Some(policy.into());
            self.store.txn(Txn::ops(vec![put(storage::topic_key(resource_arn), topic)]))
        };
        pending.await?;
        Ok(())
    }

    /// CreateSMSSandboxPhoneNumber: the one-time password is "sent" to the number, which means
    /// written to the outbox, where the user reads it to verify.
    pub async fn create_sandbox_number(&self, account: &str, region: &str, phone: &str) -> Result<(), SnsError> {
        if !model::is_phone_number(phone) {
            return Err(SnsError::invalid("PhoneNumber"));
        }
        let password = format!("{:06}", fastrand::u32(0..1_000_000));
        let number = SandboxNumber { phone: phone.into(), verified: false, one_time_password: password.clone() };
        let text = format!("Your Amazon SNS verification code is {password}");
        let mail = crate::delivery::Mail::new(account, region, "sms", phone, "SMSSandbox", text);
        let pending = {
            let mut state = self.state();
            let key = (account.to_string(), region.to_string(), phone.to_string());
            let ops = vec![
                put(storage::sandbox_key(account, region, phone), &number),
                put(storage::mail_key(self.next_seq()), &mail),
            ];
            state.sandbox.insert(key, number);
            self.store.txn(Txn::ops(ops))
        };
        pending.await?;
        Ok(())
    }

    pub async fn verify_sandbox_number(
        &self,
        account: &str,
        region: &str,
        phone: &str,
        password: &str,
    ) -> Result<(), SnsError> {
        let pending = {
            let mut state = self.state();
            let key = (account.to_string(), region.to_string(), phone.to_string());
            let number = state.sandbox.get_mut(&key).ok_or(SnsError::ResourceNotFound)?;
            if number.one_time_password != password {
                return Err(SnsError::Verification);
            }
            number.verified = true;
            self.store.txn(Txn::ops(vec![put(storage::sandbox_key(account, region, phone), &*number)]))
        };
        pending.await?;
        Ok(())
    }

    /// (phone number, verified)
    pub fn sandbox_numbers(&self, account: &str, region: &str) -> Vec<(String, bool)> {
        let state = self.state();
        let mine = state.sandbox.iter().filter(|((a, r, _), _)| a == account && r == region);
        mine.map(|(_, n)| (n.phone.clone(), n.verified)).collect()
    }

    pub async fn delete_sandbox_number(&self, account: &str, region: &str, phone: &str) -> Result<(), SnsError> {
        let pending = {
            let mut state = self.state();
            let key = (account.to_string(), region.to_string(), phone.to_string());
            state.sandbox.remove(&key).ok_or(SnsError::ResourceNotFound)?;
            self.store.txn(Txn::ops(vec![Op::delete(storage::sandbox_key(account, region, phone))]))
        };
        pending.await?;
        Ok(())
    }

    pub fn sms_attributes(&self, account: &str, region: &str, names: &[String]) -> Vec<(String, String)> {
        let state = self.state();
        let all = state.sms_attributes.get(&(account.to_string(), region.to_string()));
        let selected = all.into_iter().flatten().filter(|(k, _)| names.is_empty() || names.contains(k));
        selected.map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub async fn set_sms_attributes(
        &self,
        account: &str,
        region: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<(), SnsError> {
        const NAMES: &[&str] = &[
            "MonthlySpendLimit",
            "DeliveryStatusIAMRole",
            "DeliveryStatusSuccessSamplingRate",
            "DefaultSenderID",
            "DefaultSMSType",
            "UsageReportS3Bucket",
        ];
        if let Some(name) = attributes.keys().find(|k| !NAMES.contains(&k.as_str())) {
            return Err(SnsError::invalid(format!("{name} is not a valid attribute")));
        }
        let pending = {
            let mut state = self.state();
            let all = state.sms_attributes.entry((account.to_string(), region.to_string())).or_default();
            all.extend(attributes);
            self.store.txn(Txn::ops(vec![put(storage::sms_attributes_key(account, region), &*all)]))
        };
        pending.await?;
        Ok(())
    }
}

fn check_data_protection_policy(policy: &str) -> Result<(), SnsError> {
    let parsed: Option<serde_json::Value> = serde_json::from_str(policy).ok();
    match parsed {
        Some(p) if p.get("Statement").is_some_and(serde_json::Value::is_array) => Ok(()),
        _ => Err(SnsError::invalid("DataProtectionPolicy: failed to parse the policy document")),
    }
}

/// The topic ARN a subscription ARN belongs to (`<topic arn>:<id>`).
fn subscription_topic(arn: &str) -> Result<&str, SnsError> {
    match arn.rsplit_once(':') {
        Some((topic, id)) if !id.is_empty() && TopicId::from_arn(topic).is_ok() => Ok(topic),
        _ => Err(SnsError::invalid("SubscriptionArn")),
    }
}

/// SQS queues of the topic's own account, Lambda, SMS, mobile and Firehose endpoints are
/// confirmed at once; HTTP(S) and email endpoints, and queues of other accounts, must confirm.
fn needs_no_confirmation(protocol: &str, endpoint: &str, topic_account: &str) -> bool {
    match protocol {
        "http" | "https" | "email" | "email-json" => false,
        "sqs" => sqs::QueueId::from_arn(endpoint).is_some_and(|q| q.account == topic_account),
        _ => true,
    }
}

fn confirmation_token() -> String {
    // SNS tokens are long opaque hex strings.
    (0..4).map(|_| format!("{:016x}", fastrand::u64(..))).collect()
}

/// One page of `items` (in their order), starting after the token, which is the last item
/// of the previous page's position.
fn page<T>(items: impl Iterator<Item = T>, token: Option<&str>) -> Result<Page<T>, SnsError> {
    let start = match token {
        None | Some("") => 0,
        Some(token) => token.parse::<usize>().map_err(|_| SnsError::invalid("NextToken"))?,
    };
    let mut items: Vec<T> = items.skip(start).take(PAGE + 1).collect();
    let next = (items.len() > PAGE).then(|| {
        items.truncate(PAGE);
        (start + PAGE).to_string()
    });
    Ok((items, next))
}
