//! SQS over both of its protocols. A query request's parameters are first rewritten into the JSON
//! protocol's shape (`query_to_json`), so one decoder serves both; each answer is built once as a
//! JSON tree and rendered as JSON, or as the query protocol's XML (`render_xml`).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use sqs::{AttributeValue, MessageAttribute, QueueId, Receive, SendMessage, Sqs, SqsError};

use crate::Context;
use crate::error::{AwsError, respond};
use crate::xml::Xml;

pub(crate) const NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// The operations whose query answer has no `<...Result>` element (they have no output).
const NO_RESULT: &[&str] = &[
    "AddPermission",
    "ChangeMessageVisibility",
    "DeleteMessage",
    "DeleteQueue",
    "PurgeQueue",
    "RemovePermission",
    "SetQueueAttributes",
    "TagQueue",
    "UntagQueue",
];
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Json,
    Query,
}

/// The operations, as static names for metrics.
const OPERATIONS: &[&str] = &[
    "AddPermission",
    "CancelMessageMoveTask",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "CreateQueue",
    "DeleteMessage",
    "DeleteMessageBatch",
    "DeleteQueue",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ListDeadLetterSourceQueues",
    "ListMessageMoveTasks",
    "ListQueueTags",
    "ListQueues",
    "PurgeQueue",
    "ReceiveMessage",
    "RemovePermission",
    "SendMessage",
    "SendMessageBatch",
    "SetQueueAttributes",
    "StartMessageMoveTask",
    "TagQueue",
    "UntagQueue",
];

pub(crate) async fn handle(
    sqs: &Arc<Sqs>,
    ctx: &Context,
    wire: Wire,
    operation: &str,
    input: Value,
    path: &str,
) -> Result<(&'static str, Response<Bytes>), AwsError> {
    let Some(&operation) = OPERATIONS.iter().find(|o| **o == operation) else {
        return Err(match wire {
            Wire::Json => {
                let mut error = AwsError::sender(
                    "com.amazon.coral.service#UnknownOperationException",
                    format!("SQS has no operation '{operation}'"),
                );
                error.query_code = Some("InvalidAction".into());
                error
            }
            Wire::Query => {
                AwsError::sender("InvalidAction", format!("The action {operation} is not valid for this endpoint."))
            }
        });
    };
    if wire == Wire::Json {
        check_types(&input)?;
    }
    let request = Input { value: input, ctx, path };
    let output = run(sqs, operation, &request).await.map_err(|error| {
        // The query protocol words this one error its own way (recorded).
        let no_queue = wire == Wire::Query && matches!(error, SqsError::QueueDoesNotExist);
        let mut error = to_aws(error);
        if no_queue {
            error.message = "The specified queue does not exist for this wsdl version.".into();
        }
        error
    })?;
    let response = match wire {
        Wire::Json => {
            respond(StatusCode::OK, "application/x-amz-json-1.0", Bytes::from(output.to_string()), &ctx.request_id)
        }
        Wire::Query => {
            respond(StatusCode::OK, "text/xml", render_xml(operation, &output, &ctx.request_id).into(), &ctx.request_id)
        }
    };
    Ok((operation, response))
}

async fn run(sqs: &Arc<Sqs>, operation: &str, input: &Input<'_>) -> Result<Value, SqsError> {
    let ctx = input.ctx;
    Ok(match operation {
        "CreateQueue" => {
            let id = QueueId { account: ctx.account.clone(), region: ctx.region.clone(), name: input.queue_name()? };
            let tags = input.string_map("tags").into_iter().chain(input.string_map("Tags")).collect();
            sqs.create_queue(id.clone(), input.string_map("Attributes"), tags).await?;
            json!({ "QueueUrl": url(ctx, &id) })
        }
        "GetQueueUrl" => {
            let account = input.string("QueueOwnerAWSAccountId").unwrap_or_else(|| ctx.account.clone());
            let id = QueueId { account, region: ctx.region.clone(), name: input.queue_name()? };
            sqs.queue_exists(&id)?;
            json!({ "QueueUrl": url(ctx, &id) })
        }
        "DeleteQueue" => {
            sqs.delete_queue(&input.queue()?).await?;
            json!({})
        }
        "ListQueues" => {
            let prefix = input.string("QueueNamePrefix").unwrap_or_default();
            let max = input.max_results()?;
            let token = input.string("NextToken");
            let (ids, next) = sqs.list_queues(&ctx.account, &ctx.region, &prefix, max, token.as_deref())?;
            let mut out = Map::new();
            if !ids.is_empty() {
                out.insert("QueueUrls".into(), ids.iter().map(|id| Value::from(url(ctx, id))).collect());
            }
            if let Some(next) = next {
                out.insert("NextToken".into(), next.into());
            }
            Value::Object(out)
        }
        "GetQueueAttributes" => {
            // No names asks for nothing (an empty answer, as the API reference says), not for all.
            let names = input.string_list("AttributeNames");
            let attributes = sqs.get_attributes(&input.queue()?, &names)?;
            if attributes.is_empty() { json!({}) } else { json!({ "Attributes": pairs(attributes) }) }
        }
        "SetQueueAttributes" => {
            sqs.set_attributes(&input.queue()?, input.string_map("Attributes")).await?;
            json!({})
        }
        "SendMessage" => {
            let message = SendMessage { trace_header: ctx.trace_header.clone(), ..input.send_message()? };
            let sent = sqs.send(&input.queue()?, &ctx.account, message).await?;
            sent_json(sent, None)
        }
        "SendMessageBatch" => {
            let queue = input.queue()?;
            let entries = input
                .entries()
                .into_iter()
                .map(|entry| {
                    let message = entry.send_message();
                    let message = message.map(|m| SendMessage { trace_header: ctx.trace_header.clone(), ..m });
                    (entry.string("Id").unwrap_or_default(), message)
                })
                .collect();
            let results = sqs.send_batch(&queue, &ctx.account, entries).await?;
            batch_json(results.into_iter().map(|(id, r)| (id.clone(), r.map(|sent| sent_json(sent, Some(id))))))
        }
        "ReceiveMessage" => {
            let mut system_names = input.string_list("AttributeNames");
            system_names.extend(input.string_list("MessageSystemAttributeNames"));
            let request = Receive {
                max_messages: input.number("MaxNumberOfMessages")?,
                visibility_timeout: input.number("VisibilityTimeout")?,
                wait_seconds: input.number("WaitTimeSeconds")?,
                system_attribute_names: system_names,
                message_attribute_names: input.string_list("MessageAttributeNames"),
                attempt_id: input.string("ReceiveRequestAttemptId"),
            };
            let messages = sqs.receive(&input.queue()?, request).await?;
            if messages.is_empty() {
                json!({})
            } else {
                let messages: Vec<Value> = messages
                    .into_iter()
                    .map(|m| {
                        let mut out = json!({
                            "MessageId": m.message_id, "ReceiptHandle": m.receipt_handle,
                            "MD5OfBody": m.md5_of_body, "Body": m.body,
                        });
                        if !m.system_attributes.is_empty() {
                            out["Attributes"] = pairs(m.system_attributes);
                        }
                        if let Some(md5) = m.md5_of_attributes {
                            out["MD5OfMessageAttributes"] = md5.into();
                            out["MessageAttributes"] = attributes_json(&m.attributes);
                        }
                        out
                    })
                    .collect();
                json!({ "Messages": messages })
            }
        }
        "DeleteMessage" => {
            sqs.delete_message(&input.queue()?, &input.required("ReceiptHandle")?).await?;
            json!({})
        }
        "DeleteMessageBatch" => {
            let queue = input.queue()?;
            let entries = input
                .entries()
                .into_iter()
                .map(|e| (e.string("Id").unwrap_or_default(), e.string("ReceiptHandle").unwrap_or_default()))
                .collect();
            let results = sqs.delete_batch(&queue, entries).await?;
            batch_json(results.into_iter().map(|(id, r)| (id.clone(), r.map(|()| json!({ "Id": id })))))
        }
        "ChangeMessageVisibility" => {
            let timeout = input.number("VisibilityTimeout")?.ok_or_else(|| missing("VisibilityTimeout"))?;
            sqs.change_visibility(&input.queue()?, &input.required("ReceiptHandle")?, timeout).await?;
            json!({})
        }
        "ChangeMessageVisibilityBatch" => {
            let queue = input.queue()?;
            let entries = input
                .entries()
                .into_iter()
                .map(|e| {
                    let timeout = e.number("VisibilityTimeout")?.unwrap_or(0);
                    Ok((e.string("Id").unwrap_or_default(), e.string("ReceiptHandle").unwrap_or_default(), timeout))
                })
                .collect::<Result<Vec<_>, SqsError>>()?;
            let results = sqs.change_visibility_batch(&queue, entries).await?;
            batch_json(results.into_iter().map(|(id, r)| (id.clone(), r.map(|()| json!({ "Id": id })))))
        }
        "PurgeQueue" => {
            sqs.purge(&input.queue()?).await?;
            json!({})
        }
        "ListQueueTags" => {
            let tags = sqs.list_tags(&input.queue()?)?;
            if tags.is_empty() { json!({}) } else { json!({ "Tags": pairs(tags) }) }
        }
        "TagQueue" => {
            let queue = input.queue()?;
            let tags = input.string_map("Tags");
            if tags.is_empty() {
                return Err(missing("Tags"));
            }
            sqs.change_tags(&queue, tags, Vec::new()).await?;
            json!({})
        }
        "UntagQueue" => {
            let queue = input.queue()?;
            if input.field("TagKeys").is_none() {
                return Err(missing("TagKeys"));
            }
            sqs.change_tags(&queue, Vec::new(), input.string_list("TagKeys")).await?;
            json!({})
        }
        "ListDeadLetterSourceQueues" => {
            let max = input.max_results()?;
            let token = input.string("NextToken");
            let (sources, next) = sqs.dead_letter_source_queues(&input.queue()?, max, token.as_deref())?;
            // No sources is an empty answer, as SQS gives it, though the model calls the list required.
            let mut out = Map::new();
            if !sources.is_empty() {
                out.insert("queueUrls".into(), sources.iter().map(|id| Value::from(url(ctx, id))).collect());
            }
            if let Some(next) = next {
                out.insert("NextToken".into(), next.into());
            }
            Value::Object(out)
        }
        "AddPermission" => {
            let label = input.required("Label")?;
            let queue = input.queue()?;
            sqs.add_permission(&queue, &label, &input.string_list("AWSAccountIds"), &input.string_list("Actions"))
                .await?;
            json!({})
        }
        "RemovePermission" => {
            sqs.remove_permission(&input.queue()?, &input.required("Label")?).await?;
            json!({})
        }
        "StartMessageMoveTask" => {
            let source = input.required("SourceArn")?;
            let destination = input.string("DestinationArn");
            let rate = input.number("MaxNumberOfMessagesPerSecond")?;
            json!({ "TaskHandle": sqs.start_move_task(&source, destination.as_deref(), rate)? })
        }
        "CancelMessageMoveTask" => {
            let moved = sqs.cancel_move_task(&input.required("TaskHandle")?)?;
            json!({ "ApproximateNumberOfMessagesMoved": moved })
        }
        "ListMessageMoveTasks" => {
            let max = input.max_results()?;
            let tasks = sqs.list_move_tasks(&input.required("SourceArn")?, max)?;
            let results: Vec<Value> = tasks
                .into_iter()
                .map(|t| {
                    let mut out = json!({
                        "Status": t.status, "SourceArn": t.source_arn,
                        "ApproximateNumberOfMessagesMoved": t.moved, "ApproximateNumberOfMessagesToMove": t.to_move,
                        "StartedTimestamp": t.started_ms,
                    });
                    for (name, value) in [
                        ("TaskHandle", t.handle.map(Value::from)),
                        ("DestinationArn", t.destination_arn.map(Value::from)),
                        ("MaxNumberOfMessagesPerSecond", t.max_per_second.map(Value::from)),
                        ("FailureReason", t.failure.map(Value::from)),
                    ] {
                        if let Some(value) = value {
                            out[name] = value;
                        }
                    }
                    out
                })
                .collect();
            json!({ "Results": results })
        }
        // `OPERATIONS` and this match name the same operations.
        other => return Err(SqsError::UnsupportedOperation(format!("Unknown SQS operation {other}."))),
    })
}

/// The request's parameters in the JSON protocol's shape.
struct Input<'a> {
    value: Value,
    ctx: &'a Context,
    /// The request path: query-protocol clients may post to the queue URL itself.
    path: &'a str,
}

fn missing(name: &str) -> SqsError {
    SqsError::MissingParameter(format!("The request must contain the parameter {name}."))
}

/// Members are either the query protocol's strings or JSON values `check_types` found of their
/// member's type, so only an integer may come as a string (from the query protocol).
impl Input<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.value.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.field(name)?.as_str().map(String::from)
    }

    fn required(&self, name: &str) -> Result<String, SqsError> {
        self.string(name).ok_or_else(|| missing(name))
    }

    fn number(&self, name: &str) -> Result<Option<i64>, SqsError> {
        let invalid = |v: &Value| {
            SqsError::InvalidParameterValue(format!(
                "Value {v} for parameter {name} is invalid. Reason: not a valid integer."
            ))
        };
        match self.field(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| invalid(&Value::Number(n.clone()))),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid(&Value::String(s.clone()))),
            Some(other) => Err(invalid(other)),
        }
    }

    /// `MaxResults`, a negative value as 0: below every operation's range, as SQS says of it, rather
    /// than no integer.
    fn max_results(&self) -> Result<Option<usize>, SqsError> {
        Ok(self.number("MaxResults")?.map(|m| usize::try_from(m).unwrap_or(0)))
    }

    fn string_list(&self, name: &str) -> Vec<String> {
        match self.field(name) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        }
    }

    fn string_map(&self, name: &str) -> Vec<(String, String)> {
        match self.field(name) {
            Some(Value::Object(map)) => {
                map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
            }
            _ => Vec::new(),
        }
    }

    fn entries(&self) -> Vec<Input<'_>> {
        match self.field("Entries") {
            Some(Value::Array(items)) => {
                items.iter().map(|v| Input { value: v.clone(), ctx: self.ctx, path: self.path }).collect()
            }
            _ => Vec::new(),
        }
    }

    /// `QueueName`, whose absence SQS calls an invalid value rather than a missing parameter.
    fn queue_name(&self) -> Result<String, SqsError> {
        self.string("QueueName").ok_or_else(|| {
            SqsError::InvalidParameterValue(
                "Value for parameter QueueName is invalid. Reason: Must specify a queue name.".into(),
            )
        })
    }

    /// The queue a `QueueUrl` (or, without one, the path: older query clients post to the queue's
    /// URL) names: `/<account>/<name>`, or a bare name.
    fn queue(&self) -> Result<QueueId, SqsError> {
        let url = self.string("QueueUrl");
        // A bare name is one of the caller's queues: SQS takes it in place of the URL.
        if let Some(name) = url.as_deref().filter(|url| !url.is_empty() && !url.contains('/')) {
            return Ok(QueueId {
                account: self.ctx.account.clone(),
                region: self.ctx.region.clone(),
                name: name.into(),
            });
        }
        let path = match &url {
            Some(url) => {
                url.split_once("://").map_or(url.as_str(), |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]))
            }
            None => self.path,
        };
        let mut segments = path.trim_matches('/').split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some(account), Some(name), None) if !account.is_empty() && !name.is_empty() => {
                Ok(QueueId { account: account.into(), region: self.ctx.region.clone(), name: name.into() })
            }
            // Without a `QueueUrl` (or a queue's path), too: SQS names no queue, not a missing parameter.
            _ => Err(SqsError::QueueDoesNotExist),
        }
    }

    fn message_attributes(&self, name: &str) -> Result<Vec<MessageAttribute>, SqsError> {
        let Some(Value::Object(map)) = self.field(name) else { return Ok(Vec::new()) };
        map.iter()
            .map(|(attribute, spec)| {
                let invalid =
                    |why: &str| SqsError::InvalidParameterValue(format!("The message attribute '{attribute}' {why}"));
                if ["StringListValues", "BinaryListValues"]
                    .iter()
                    .any(|list| spec.get(list).and_then(Value::as_array).is_some_and(|l| !l.is_empty()))
                {
                    return Err(SqsError::UnsupportedOperation(
                        "Message attribute list values in SendMessage operation are not supported.".into(),
                    ));
                }
                let data_type = spec
                    .get("DataType")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("must contain a non-empty attribute type."))?;
                let value = match (
                    spec.get("StringValue").and_then(Value::as_str),
                    spec.get("BinaryValue").and_then(Value::as_str),
                ) {
                    (Some(s), _) => AttributeValue::String(s.to_string()),
                    (None, Some(b)) => {
                        AttributeValue::Binary(BASE64.decode(b).map_err(|_| invalid("has an invalid binary value."))?)
                    }
                    (None, None) => return Err(invalid("must contain a non-empty value.")),
                };
                Ok(MessageAttribute { name: attribute.clone(), data_type: data_type.to_string(), value })
            })
            .collect()
    }

    fn send_message(&self) -> Result<SendMessage, SqsError> {
        Ok(SendMessage {
            body: self.string("MessageBody").unwrap_or_default(),
            delay_seconds: self.number("DelaySeconds")?,
            attributes: self.message_attributes("MessageAttributes")?,
            system_attributes: self.message_attributes("MessageSystemAttributes")?,
            group_id: self.string("MessageGroupId"),
            dedup_id: self.string("MessageDeduplicationId"),
            trace_header: None,
        })
    }
}

/// The shape a JSON member must have. SQS's member names each have one type across all of its
/// operations, so the name alone decides.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Integer,
    String,
    StringList,
    StringMap,
    /// `MessageAttributes`: name to `{DataType, StringValue, BinaryValue, ...}`.
    AttributeMap,
    /// A batch's `Entries`: a list of structures whose members are checked by name too.
    EntryList,
    Structure,
}

pub(crate) fn kind(member: &str) -> Option<Kind> {
    Some(match member {
        "DelaySeconds"
        | "MaxNumberOfMessages"
        | "VisibilityTimeout"
        | "WaitTimeSeconds"
        | "MaxResults"
        | "MaxNumberOfMessagesPerSecond" => Kind::Integer,
        "AttributeNames"
        | "MessageAttributeNames"
        | "MessageSystemAttributeNames"
        | "TagKeys"
        | "AWSAccountIds"
        | "Actions"
        | "StringListValues"
        | "BinaryListValues" => Kind::StringList,
        "Attributes" | "Tags" | "tags" => Kind::StringMap,
        "MessageAttributes" | "MessageSystemAttributes" => Kind::AttributeMap,
        "Entries" => Kind::EntryList,
        "QueueUrl"
        | "QueueName"
        | "QueueNamePrefix"
        | "QueueOwnerAWSAccountId"
        | "NextToken"
        | "MessageBody"
        | "MessageGroupId"
        | "MessageDeduplicationId"
        | "ReceiveRequestAttemptId"
        | "ReceiptHandle"
        | "Label"
        | "SourceArn"
        | "DestinationArn"
        | "TaskHandle"
        | "Id"
        | "DataType"
        | "StringValue"
        | "BinaryValue" => Kind::String,
        _ => return None,
    })
}

/// A JSON request's members against the types SQS's model gives them, refused as SQS's
/// deserializer refuses them (`SerializationException`, with its messages). Unknown members are
/// ignored and `null` is as good as absent, as there. The query protocol has only strings, which
/// `Input` parses.
fn check_types(value: &Value) -> Result<(), AwsError> {
    let Value::Object(members) = value else { return Ok(()) };
    members.iter().try_for_each(|(name, value)| kind(name).map_or(Ok(()), |kind| check_kind(kind, value)))
}

/// The request framework's refusal of a body it cannot read as the operation's input.
pub(crate) fn malformed(message: impl Into<String>) -> AwsError {
    let mut error = AwsError::sender("com.amazon.coral.service#SerializationException", message);
    error.query_code = Some("MalformedInput".into());
    error
}

fn check_kind(kind: Kind, value: &Value) -> Result<(), AwsError> {
    let refuse = |message: String| Err(malformed(message));
    let scalar = |value: &Value| match value {
        Value::Bool(true) => "TRUE_VALUE",
        Value::Bool(false) => "FALSE_VALUE",
        Value::Number(_) => "NUMBER_VALUE",
        _ => "STRING_VALUE",
    };
    match (kind, value) {
        (_, Value::Null) | (Kind::Integer, Value::Number(_)) | (Kind::String, Value::String(_)) => Ok(()),
        (Kind::StringList, Value::Array(items)) => items.iter().try_for_each(|item| check_kind(Kind::String, item)),
        (Kind::EntryList, Value::Array(items)) => items.iter().try_for_each(|item| check_kind(Kind::Structure, item)),
        (Kind::StringMap, Value::Object(map)) => map.values().try_for_each(|v| check_kind(Kind::String, v)),
        (Kind::AttributeMap, Value::Object(map)) => map.values().try_for_each(|v| check_kind(Kind::Structure, v)),
        (Kind::Structure, Value::Object(_)) => check_types(value),
        (_, Value::Array(_)) => refuse("Start of list found where not expected".into()),
        (Kind::Integer | Kind::String | Kind::StringList | Kind::EntryList, Value::Object(_)) => {
            refuse("Start of structure or map found where not expected.".into())
        }
        (Kind::Integer, _) => refuse(format!("{} can not be converted to an Integer", scalar(value))),
        (Kind::String, _) => refuse(format!("{} can not be converted to a String", scalar(value))),
        (Kind::StringList | Kind::EntryList, _) => refuse("Expected list or null".into()),
        (Kind::StringMap | Kind::AttributeMap, _) => refuse("Expected map or null".into()),
        (Kind::Structure, _) => refuse("Expected null".into()),
    }
}

fn url(ctx: &Context, id: &QueueId) -> String {
    format!("http://{}/{}/{}", ctx.host, id.account, id.name)
}

fn pairs(pairs: Vec<(String, String)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn attributes_json(attributes: &[MessageAttribute]) -> Value {
    let map = attributes
        .iter()
        .map(|a| {
            let value = match &a.value {
                AttributeValue::String(s) => json!({ "StringValue": s, "DataType": a.data_type }),
                AttributeValue::Binary(b) => json!({ "BinaryValue": BASE64.encode(b), "DataType": a.data_type }),
            };
            (a.name.clone(), value)
        })
        .collect();
    Value::Object(map)
}

fn sent_json(sent: sqs::Sent, id: Option<String>) -> Value {
    let mut out = Map::new();
    if let Some(id) = id {
        out.insert("Id".into(), id.into());
    }
    out.insert("MessageId".into(), sent.message_id.into());
    out.insert("MD5OfMessageBody".into(), sent.md5_of_body.into());
    for (name, value) in [
        ("MD5OfMessageAttributes", sent.md5_of_attributes),
        ("MD5OfMessageSystemAttributes", sent.md5_of_system_attributes),
        ("SequenceNumber", sent.sequence_number),
    ] {
        if let Some(value) = value {
            out.insert(name.into(), value.into());
        }
    }
    Value::Object(out)
}

fn batch_json(results: impl Iterator<Item = (String, Result<Value, SqsError>)>) -> Value {
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for (id, result) in results {
        match result {
            Ok(entry) => successful.push(entry),
            Err(error) => {
                let wire = to_aws(error);
                let code = wire.query_code.unwrap_or(wire.code);
                failed.push(json!({ "Id": id, "SenderFault": !wire.status.is_server_error(), "Code": code, "Message": wire.message }));
            }
        }
    }
    // SQS leaves out an empty `Failed` (recorded).
    let mut out = json!({ "Successful": successful });
    if !failed.is_empty() {
        out["Failed"] = failed.into();
    }
    out
}

/// Each SQS error as the service sends it: over JSON, `__type` names the error's shape, SQS's own
/// (`com.amazonaws.sqs#...`, the shapes of its model) or the request framework's
/// (`com.amazon.coral.service#...`, for parameters); query clients, and JSON clients in query mode
/// (`x-amzn-query-error`), match on the code the query protocol had. Statuses are the model's, and
/// 404 for a receipt handle that is not one, as SQS answers.
fn to_aws(error: SqsError) -> AwsError {
    const SQS: &str = "com.amazonaws.sqs#";
    const CORAL: &str = "com.amazon.coral.service#";
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    let message = error.to_string();
    let (namespace, shape, query_code, status) = match &error {
        SqsError::QueueDoesNotExist => (SQS, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", BAD),
        SqsError::QueueNameExists(_) => (SQS, "QueueNameExists", "QueueAlreadyExists", BAD),
        SqsError::InvalidParameterValue(_) => (CORAL, "InvalidParameterValueException", "InvalidParameterValue", BAD),
        SqsError::MissingParameter(_) => (CORAL, "MissingRequiredParameterException", "MissingParameter", BAD),
        SqsError::InvalidAttributeName(_) => (SQS, "InvalidAttributeName", "InvalidAttributeName", BAD),
        SqsError::InvalidAttributeValue(_) => (SQS, "InvalidAttributeValue", "InvalidAttributeValue", BAD),
        SqsError::InvalidMessageContents(_) => (SQS, "InvalidMessageContents", "InvalidMessageContents", BAD),
        SqsError::ReceiptHandleIsInvalid(_) => {
            (SQS, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", StatusCode::NOT_FOUND)
        }
        SqsError::PurgeQueueInProgress(_) => {
            (SQS, "PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress", StatusCode::FORBIDDEN)
        }
        SqsError::TooManyEntriesInBatchRequest(_) => {
            (SQS, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", BAD)
        }
        SqsError::EmptyBatchRequest(_) => (SQS, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", BAD),
        SqsError::BatchEntryIdsNotDistinct(_) => {
            (SQS, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", BAD)
        }
        SqsError::InvalidBatchEntryId => {
            (SQS, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", BAD)
        }
        SqsError::BatchRequestTooLong(..) => {
            (SQS, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", BAD)
        }
        SqsError::QueueDeletedRecently => {
            (SQS, "QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently", BAD)
        }
        SqsError::UnsupportedOperation(_) => {
            (SQS, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", BAD)
        }
        SqsError::OverLimit(_) => (SQS, "OverLimit", "OverLimit", StatusCode::FORBIDDEN),
        SqsError::ResourceNotFound(_) => {
            (SQS, "ResourceNotFoundException", "ResourceNotFoundException", StatusCode::NOT_FOUND)
        }
        SqsError::Store(source) => {
            tracing::error!(error = source as &dyn std::error::Error, "SQS storage failed");
            return AwsError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "The request processing has failed because of an unknown error.",
            );
        }
    };
    let mut aws = AwsError::new(status, format!("{namespace}{shape}"), message);
    aws.query_code = Some(query_code.into());
    aws
}

/// Query parameters (`Attribute.1.Name=...`) as the JSON protocol's input object.
pub(crate) fn query_to_json(params: &[(String, String)]) -> Value {
    // No SQS parameter nests deeper than `Entry.N.MessageAttribute.N.Value.StringValue`; deeper
    // keys are dropped, which also bounds the recursion below.
    const MAX_SEGMENTS: usize = 8;
    let split: Vec<Param<'_>> = params
        .iter()
        .map(|(k, v)| (k.split('.').collect::<Vec<_>>(), v.as_str()))
        .filter(|(path, _)| path.len() <= MAX_SEGMENTS)
        .collect();
    convert(&split)
}

/// Flattened maps: query prefix, JSON name, key member, value member.
const MAPS: &[(&str, &str, &str)] = &[
    ("Attribute", "Attributes", "Name"),
    ("Tag", "Tags", "Key"),
    ("MessageAttribute", "MessageAttributes", "Name"),
    ("MessageSystemAttribute", "MessageSystemAttributes", "Name"),
];
/// Flattened lists: query prefix, JSON name.
const LISTS: &[(&str, &str)] = &[
    ("AttributeName", "AttributeNames"),
    ("MessageAttributeName", "MessageAttributeNames"),
    ("MessageSystemAttributeName", "MessageSystemAttributeNames"),
    ("TagKey", "TagKeys"),
    ("AWSAccountId", "AWSAccountIds"),
    ("ActionName", "Actions"),
    ("StringListValue", "StringListValues"),
    ("BinaryListValue", "BinaryListValues"),
];

/// A parameter as its dotted path and its value.
type Param<'a> = (Vec<&'a str>, &'a str);

fn convert(params: &[Param<'_>]) -> Value {
    let mut out = Map::new();
    let mut indexed: std::collections::BTreeMap<(&str, u32), Vec<Param<'_>>> = Default::default();
    for (path, value) in params {
        match path.as_slice() {
            [name] => {
                out.insert(name.to_string(), Value::String(value.to_string()));
            }
            [prefix, index, rest @ ..] => {
                if let Ok(index) = index.parse::<u32>() {
                    indexed.entry((prefix, index)).or_default().push((rest.to_vec(), value));
                }
            }
            _ => {}
        }
    }
    for ((prefix, _), members) in indexed {
        if let Some((_, json_name, key_member)) = MAPS.iter().find(|(p, _, _)| *p == prefix) {
            let key = members.iter().find(|(p, _)| p.as_slice() == [*key_member]).map(|(_, v)| v.to_string());
            let value_parts: Vec<Param<'_>> = members
                .iter()
                .filter(|(p, _)| p.first() == Some(&"Value"))
                .map(|(p, v)| (p[1..].to_vec(), *v))
                .collect();
            let value = match value_parts.as_slice() {
                [(rest, v)] if rest.is_empty() => Value::String(v.to_string()),
                _ => convert(&value_parts),
            };
            if let (Some(key), Value::Object(map)) = (key, out.entry(*json_name).or_insert_with(|| json!({}))) {
                map.insert(key, value);
            }
        } else if let Some((_, json_name)) = LISTS.iter().find(|(p, _)| *p == prefix) {
            if let (Some((_, v)), Value::Array(list)) =
                (members.first(), out.entry(*json_name).or_insert_with(|| json!([])))
            {
                list.push(Value::String(v.to_string()));
            }
        } else if prefix.ends_with("BatchRequestEntry")
            && let Value::Array(list) = out.entry("Entries").or_insert_with(|| json!([]))
        {
            list.push(convert(&members));
        }
    }
    Value::Object(out)
}

/// The query protocol's XML for a JSON-shaped answer.
fn render_xml(operation: &str, output: &Value, request_id: &str) -> String {
    let mut xml = Xml::document();
    xml.open_ns(&format!("{operation}Response"), NAMESPACE);
    if !NO_RESULT.contains(&operation) {
        xml.open(&format!("{operation}Result"));
        if let Value::Object(fields) = output {
            for (name, value) in fields {
                render_field(&mut xml, operation, name, value);
            }
        }
        xml.close(&format!("{operation}Result"));
    }
    xml.open("ResponseMetadata");
    xml.leaf("RequestId", request_id);
    xml.close("ResponseMetadata");
    xml.close(&format!("{operation}Response"));
    xml.finish()
}

fn render_field(xml: &mut Xml, operation: &str, name: &str, value: &Value) {
    match (name, value) {
        ("Attributes" | "Tags", Value::Object(map)) => {
            let (element, key) = if name == "Tags" { ("Tag", "Key") } else { ("Attribute", "Name") };
            for (k, v) in map {
                xml.open(element);
                xml.leaf(key, k);
                xml.leaf("Value", v.as_str().unwrap_or_default());
                xml.close(element);
            }
        }
        ("MessageAttributes", Value::Object(map)) => {
            for (k, v) in map {
                xml.open("MessageAttribute");
                xml.leaf("Name", k);
                xml.open("Value");
                if let Value::Object(parts) = v {
                    for (part, text) in parts {
                        xml.leaf(part, text.as_str().unwrap_or_default());
                    }
                }
                xml.close("Value");
                xml.close("MessageAttribute");
            }
        }
        (_, Value::Array(items)) => {
            let element = match name {
                "QueueUrls" | "queueUrls" => "QueueUrl".to_string(),
                "Messages" => "Message".to_string(),
                "Successful" => format!("{operation}ResultEntry"),
                "Failed" => "BatchResultErrorEntry".to_string(),
                "Results" => "ListMessageMoveTasksResultEntry".to_string(),
                other => other.to_string(),
            };
            for item in items {
                render_field(xml, operation, &element, item);
            }
        }
        (_, Value::Object(fields)) => {
            xml.open(name);
            for (field, inner) in fields {
                render_field(xml, operation, field, inner);
            }
            xml.close(name);
        }
        (_, Value::String(text)) => xml.leaf(name, text),
        (_, other) => xml.leaf(name, &other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn query_parameters_take_the_json_shape() {
        let input = query_to_json(&params(&[
            ("QueueUrl", "http://localhost/000000000000/q"),
            ("Attribute.1.Name", "DelaySeconds"),
            ("Attribute.1.Value", "5"),
            ("AttributeName.2", "B"),
            ("AttributeName.1", "A"),
            ("SendMessageBatchRequestEntry.1.Id", "one"),
            ("SendMessageBatchRequestEntry.1.MessageBody", "hi"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Name", "colour"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType", "String"),
            ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue", "red"),
            ("SendMessageBatchRequestEntry.2.Id", "two"),
        ]));
        assert_eq!(
            input,
            json!({
                "QueueUrl": "http://localhost/000000000000/q",
                "Attributes": { "DelaySeconds": "5" },
                "AttributeNames": ["A", "B"],
                "Entries": [
                    { "Id": "one", "MessageBody": "hi", "MessageAttributes": { "colour": { "DataType": "String", "StringValue": "red" } } },
                    { "Id": "two" },
                ],
            })
        );
    }

    #[test]
    fn deeply_nested_keys_are_dropped_not_recursed() {
        let key = format!("Attribute.1.{}", "Value.".repeat(5000));
        assert_eq!(query_to_json(&params(&[(key.as_str(), "x"), ("QueueName", "q")])), json!({ "QueueName": "q" }));
    }

    #[test]
    fn answers_render_as_query_xml() {
        let output = json!({ "Messages": [{ "MessageId": "m", "Attributes": { "SentTimestamp": "1" }, "MessageAttributes": { "a": { "StringValue": "x", "DataType": "String" } } }] });
        let xml = render_xml("ReceiveMessage", &output, "rid");
        assert!(xml.contains("<ReceiveMessageResult><Message>"), "{xml}");
        assert!(xml.contains("<MessageId>m</MessageId>"), "{xml}");
        assert!(xml.contains("<Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute>"), "{xml}");
        assert!(xml.contains("<MessageAttribute><Name>a</Name><Value><DataType>String</DataType><StringValue>x</StringValue></Value></MessageAttribute>"), "{xml}");
        let batch = render_xml("SendMessageBatch", &json!({ "Successful": [{ "Id": "1" }], "Failed": [] }), "rid");
        assert!(batch.contains("<SendMessageBatchResultEntry><Id>1</Id></SendMessageBatchResultEntry>"), "{batch}");
    }
}
