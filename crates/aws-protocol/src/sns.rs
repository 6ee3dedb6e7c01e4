//! SNS over the query protocol: flattened parameters in (`Attributes.entry.1.key`,
//! `Tags.member.1.Key`), XML out.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use sns::{AttributeValue, MessageAttribute, Publish, Sns, SnsError};

use crate::Context;
use crate::error::AwsError;
use crate::query::{self, QueryRequest};
use crate::xml::Xml;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The operations, as static names for metrics. Mobile push (platform applications and
/// endpoints) and carrier operations (opt-outs, origination numbers) are not served.
const OPERATIONS: &[&str] = &[
    "AddPermission",
    "ConfirmSubscription",
    "CreateSMSSandboxPhoneNumber",
    "CreateTopic",
    "DeleteSMSSandboxPhoneNumber",
    "DeleteTopic",
    "GetDataProtectionPolicy",
    "GetSMSAttributes",
    "GetSMSSandboxAccountStatus",
    "GetSubscriptionAttributes",
    "GetTopicAttributes",
    "ListSMSSandboxPhoneNumbers",
    "ListSubscriptions",
    "ListSubscriptionsByTopic",
    "ListTagsForResource",
    "ListTopics",
    "Publish",
    "PublishBatch",
    "PutDataProtectionPolicy",
    "RemovePermission",
    "SetSMSAttributes",
    "SetSubscriptionAttributes",
    "SetTopicAttributes",
    "Subscribe",
    "TagResource",
    "Unsubscribe",
    "UntagResource",
    "VerifySMSSandboxPhoneNumber",
];

pub(crate) async fn handle(
    sns: &Arc<Sns>,
    ctx: &Context,
    request: &QueryRequest,
) -> Result<(&'static str, Response<Bytes>), AwsError> {
    let Some(&operation) = OPERATIONS.iter().find(|o| **o == request.action) else {
        return Err(query::invalid_action(request));
    };
    let params = Params(request);
    let mut xml = Xml::fragment();
    run(sns, ctx, operation, &params, &mut xml).await.map_err(to_aws)?;
    let body = xml.finish();
    Ok((operation, query::respond(ctx, request, |out| out.raw(&body))))
}

async fn run(sns: &Arc<Sns>, ctx: &Context, operation: &str, p: &Params<'_>, xml: &mut Xml) -> Result<(), Error> {
    let (account, region) = (ctx.account.as_str(), ctx.region.as_str());
    match operation {
        "CreateTopic" => {
            let id = sns::TopicId { account: account.into(), region: region.into(), name: p.required("Name")? };
            let policy = p.get("DataProtectionPolicy");
            let arn = sns.create_topic(id, p.map("Attributes"), p.tags()?, policy).await?;
            xml.leaf("TopicArn", &arn);
        }
        "DeleteTopic" => sns.delete_topic(&p.required("TopicArn")?, account).await?,
        "ListTopics" => {
            let (arns, next) = sns.list_topics(account, region, p.get("NextToken").as_deref())?;
            xml.open("Topics");
            for arn in arns {
                xml.open("member");
                xml.leaf("TopicArn", &arn);
                xml.close("member");
            }
            xml.close("Topics");
            if let Some(next) = next {
                xml.leaf("NextToken", &next);
            }
        }
        "GetTopicAttributes" => {
            let attributes = sns.topic_attributes(&p.required("TopicArn")?, account)?;
            entries(xml, "Attributes", &attributes);
        }
        "SetTopicAttributes" => {
            let (arn, name) = (p.required("TopicArn")?, p.required("AttributeName")?);
            sns.set_topic_attribute(&arn, account, &name, &p.get("AttributeValue").unwrap_or_default()).await?;
        }
        "Subscribe" => {
            let (topic, protocol) = (p.required("TopicArn")?, p.required("Protocol")?);
            let endpoint = p.get("Endpoint").unwrap_or_default();
            let subscription = sns.subscribe(&topic, account, &protocol, &endpoint, p.map("Attributes")).await?;
            let show_arn = subscription.confirmed || p.get("ReturnSubscriptionArn").is_some_and(|v| v == "true");
            xml.leaf("SubscriptionArn", if show_arn { &subscription.arn } else { "pending confirmation" });
        }
        "ConfirmSubscription" => {
            let arn = sns.confirm_subscription(&p.required("TopicArn")?, &p.required("Token")?).await?;
            xml.leaf("SubscriptionArn", &arn);
        }
        "Unsubscribe" => sns.unsubscribe(&p.required("SubscriptionArn")?).await?,
        "ListSubscriptions" | "ListSubscriptionsByTopic" => {
            let topic = if operation == "ListSubscriptionsByTopic" { Some(p.required("TopicArn")?) } else { None };
            let token = p.get("NextToken");
            let (subscriptions, next) = sns.list_subscriptions(account, region, topic.as_deref(), token.as_deref())?;
            xml.open("Subscriptions");
            for s in subscriptions {
                xml.open("member");
                xml.leaf("TopicArn", &s.topic_arn);
                xml.leaf("Protocol", &s.protocol);
                xml.leaf("SubscriptionArn", &s.arn);
                xml.leaf("Owner", &s.owner);
                xml.leaf("Endpoint", &s.endpoint);
                xml.close("member");
            }
            xml.close("Subscriptions");
            if let Some(next) = next {
                xml.leaf("NextToken", &next);
            }
        }
        "GetSubscriptionAttributes" => {
            let attributes = sns.subscription_attributes(&p.required("SubscriptionArn")?)?;
            entries(xml, "Attributes", &attributes);
        }
        "SetSubscriptionAttributes" => {
            let (arn, name) = (p.required("SubscriptionArn")?, p.required("AttributeName")?);
            sns.set_subscription_attribute(&arn, &name, &p.get("AttributeValue").unwrap_or_default()).await?;
        }
        "Publish" => {
            let publish = Publish {
                topic_arn: p.get("TopicArn"),
                target_arn: p.get("TargetArn"),
                phone_number: p.get("PhoneNumber"),
                ..p.publish("")?
            };
            let published = sns.publish(account, region, publish).await?;
            xml.leaf("MessageId", &published.message_id);
            if let Some(number) = &published.sequence_number {
                xml.leaf("SequenceNumber", number);
            }
        }
        "PublishBatch" => {
            let topic = p.required("TopicArn")?;
            let mut batch = Vec::new();
            for index in p.indices("PublishBatchRequestEntries.member") {
                let prefix = format!("PublishBatchRequestEntries.member.{index}.");
                batch.push((p.get(&format!("{prefix}Id")).unwrap_or_default(), p.publish(&prefix)?));
            }
            let results = sns.publish_batch(account, &topic, batch).await?;
            let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
            xml.open("Successful");
            for (id, result) in ok {
                if let Ok(published) = result {
                    xml.open("member");
                    xml.leaf("Id", &id);
                    xml.leaf("MessageId", &published.message_id);
                    if let Some(number) = &published.sequence_number {
                        xml.leaf("SequenceNumber", number);
                    }
                    xml.close("member");
                }
            }
            xml.close("Successful");
            xml.open("Failed");
            for (id, result) in failed {
                if let Err(error) = result {
                    let aws = to_aws(Error::Sns(error));
                    xml.open("member");
                    xml.leaf("Id", &id);
                    xml.leaf("Code", &aws.code);
                    xml.leaf("Message", &aws.message);
                    xml.leaf("SenderFault", &(!aws.status.is_server_error()).to_string());
                    xml.close("member");
                }
            }
            xml.close("Failed");
        }
        "ListTagsForResource" => {
            let tags = sns.list_tags(&p.required("ResourceArn")?)?;
            xml.open("Tags");
            for (key, value) in tags {
                xml.open("member");
                xml.leaf("Key", &key);
                xml.leaf("Value", &value);
                xml.close("member");
            }
            xml.close("Tags");
        }
        "TagResource" => sns.change_tags(&p.required("ResourceArn")?, p.tags()?, &[]).await?,
        "UntagResource" => sns.change_tags(&p.required("ResourceArn")?, BTreeMap::new(), &p.list("TagKeys")).await?,
        "AddPermission" => {
            let (arn, label) = (p.required("TopicArn")?, p.required("Label")?);
            sns.add_permission(&arn, account, &label, &p.list("AWSAccountId"), &p.list("ActionName")).await?;
        }
        "RemovePermission" => {
            sns.remove_permission(&p.required("TopicArn")?, account, &p.required("Label")?).await?;
        }
        "GetDataProtectionPolicy" => {
            let policy = sns.data_protection_policy(&p.required("ResourceArn")?)?;
            xml.leaf("DataProtectionPolicy", &policy);
        }
        "PutDataProtectionPolicy" => {
            let (arn, policy) = (p.required("ResourceArn")?, p.required("DataProtectionPolicy")?);
            sns.put_data_protection_policy(&arn, &policy).await?;
        }
        "CreateSMSSandboxPhoneNumber" => {
            sns.create_sandbox_number(account, region, &p.required("PhoneNumber")?).await?;
        }
        "VerifySMSSandboxPhoneNumber" => {
            let (phone, password) = (p.required("PhoneNumber")?, p.required("OneTimePassword")?);
            sns.verify_sandbox_number(account, region, &phone, &password).await?;
        }
        "DeleteSMSSandboxPhoneNumber" => {
            sns.delete_sandbox_number(account, region, &p.required("PhoneNumber")?).await?;
        }
        "ListSMSSandboxPhoneNumbers" => {
            xml.open("PhoneNumbers");
            for (phone, verified) in sns.sandbox_numbers(account, region) {
                xml.open("member");
                xml.leaf("PhoneNumber", &phone);
                xml.leaf("Status", if verified { "Verified" } else { "Pending" });
                xml.close("member");
            }
            xml.close("PhoneNumbers");
        }
        // Stratus never sends real SMS, so every account stays in the sandbox.
        "GetSMSSandboxAccountStatus" => xml.leaf("IsInSandbox", "true"),
        "GetSMSAttributes" => {
            let attributes = sns.sms_attributes(account, region, &p.list("attributes"));
            entries(xml, "attributes", &attributes);
        }
        "SetSMSAttributes" => sns.set_sms_attributes(account, region, p.map("attributes")).await?,
        _ => unreachable!("every name in OPERATIONS is handled"),
    }
    Ok(())
}

/// `<Attributes><entry><key>..</key><value>..</value></entry>...</Attributes>`
fn entries(xml: &mut Xml, name: &str, pairs: &[(String, String)]) {
    xml.open(name);
    for (key, value) in pairs {
        xml.open("entry");
        xml.leaf("key", key);
        xml.leaf("value", value);
        xml.close("entry");
    }
    xml.close(name);
}

enum Error {
    Sns(SnsError),
    /// A required parameter is missing: botocore checks first, so only raw clients see it.
    Missing(&'static str),
}

impl From<SnsError> for Error {
    fn from(error: SnsError) -> Self {
        Error::Sns(error)
    }
}

fn to_aws(error: Error) -> AwsError {
    let error = match error {
        Error::Missing(name) => {
            return AwsError::sender(
                "ValidationError",
                format!(
                    "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
                ),
            );
        }
        Error::Sns(error) => error,
    };
    let message = error.to_string();
    let (status, code) = match &error {
        SnsError::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "InvalidParameter"),
        SnsError::ParameterValueInvalid(_) => (StatusCode::BAD_REQUEST, "ParameterValueInvalid"),
        SnsError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
        SnsError::ResourceNotFound => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        SnsError::AuthorizationError(_) => (StatusCode::FORBIDDEN, "AuthorizationError"),
        SnsError::TagLimitExceeded => (StatusCode::BAD_REQUEST, "TagLimitExceeded"),
        SnsError::EmptyBatchRequest => (StatusCode::BAD_REQUEST, "EmptyBatchRequest"),
        SnsError::TooManyEntriesInBatchRequest => (StatusCode::BAD_REQUEST, "TooManyEntriesInBatchRequest"),
        SnsError::BatchEntryIdsNotDistinct => (StatusCode::BAD_REQUEST, "BatchEntryIdsNotDistinct"),
        SnsError::InvalidBatchEntryId => (StatusCode::BAD_REQUEST, "InvalidBatchEntryId"),
        SnsError::BatchRequestTooLong => (StatusCode::BAD_REQUEST, "BatchRequestTooLong"),
        SnsError::Verification => (StatusCode::BAD_REQUEST, "VerificationException"),
        SnsError::Store(_) | SnsError::Signing(_) => {
            tracing::error!(error = &error as &dyn std::error::Error, "SNS storage failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    AwsError::new(status, code, message)
}

/// SNS's reading of a query request: required parameters, tags and messages, over the query
/// protocol's flattened lists and maps (`QueryRequest`).
struct Params<'a>(&'a QueryRequest);

impl std::ops::Deref for Params<'_> {
    type Target = QueryRequest;
    fn deref(&self) -> &QueryRequest {
        self.0
    }
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.param(name).map(String::from)
    }

    fn required(&self, name: &'static str) -> Result<String, Error> {
        self.get(name).ok_or(Error::Missing(name))
    }

    /// `Tags.member.N.Key` / `Tags.member.N.Value`
    fn tags(&self) -> Result<BTreeMap<String, String>, Error> {
        self.indices("Tags.member")
            .into_iter()
            .map(|i| {
                let key = self.get(&format!("Tags.member.{i}.Key")).ok_or(Error::Missing("Tag.Key"))?;
                Ok((key, self.get(&format!("Tags.member.{i}.Value")).unwrap_or_default()))
            })
            .collect()
    }

    /// A message's fields under `prefix` (empty for Publish, the entry's for PublishBatch).
    fn publish(&self, prefix: &str) -> Result<Publish, Error> {
        let field = |name: &str| self.get(&format!("{prefix}{name}"));
        let attribute_prefix = format!("{prefix}MessageAttributes.entry");
        let mut attributes = Vec::new();
        for i in self.indices(&attribute_prefix) {
            let at = |name: &str| self.get(&format!("{attribute_prefix}.{i}.{name}"));
            let name = at("Name").ok_or(Error::Missing("MessageAttributes.entry.Name"))?;
            let data_type = at("Value.DataType").ok_or(Error::Missing("MessageAttributes.entry.Value.DataType"))?;
            let value = match (at("Value.BinaryValue"), at("Value.StringValue")) {
                (Some(binary), _) => AttributeValue::Binary(BASE64.decode(binary.as_bytes()).map_err(|_| {
                    SnsError::ParameterValueInvalid(format!(
                        "The message attribute '{name}' has an invalid binary value."
                    ))
                })?),
                (None, string) => AttributeValue::String(string.unwrap_or_default()),
            };
            attributes.push(MessageAttribute { name, data_type, value });
        }
        Ok(Publish {
            message: field("Message").ok_or(Error::Missing("Message"))?,
            subject: field("Subject"),
            message_structure: field("MessageStructure"),
            attributes,
            group_id: field("MessageGroupId"),
            dedup_id: field("MessageDeduplicationId"),
            ..Publish::default()
        })
    }
}
