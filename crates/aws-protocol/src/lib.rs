//! The AWS wire protocols, for every AWS service Stratus serves behind one port.
//!
//! A request is routed the way AWS endpoints route it: by `X-Amz-Target` for the JSON protocols, by
//! the `Action` parameter for the query protocols, by path for REST and RPC-v2 services, with the
//! SigV4 credential scope naming the service, region and access key. Errors are encoded in the
//! protocol the request used, for every service in botocore's catalog, including the ones Stratus
//! does not serve yet. One crate for all AWS protocol families rather than one per family: they
//! share the routing, the scope and the error envelopes, and services such as SQS speak two.

pub mod catalog;
mod dynamodb;
mod error;
mod query;
pub mod sigv4;
mod sns;
mod sqs;
mod sts;
mod xml;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};

use catalog::{Protocol, ServiceModel};
pub use error::AwsError;
use error::Envelope;
use query::QueryRequest;

/// The botocore names of the services Stratus serves.
pub const SERVED: &[&str] = &["dynamodb", "dynamodbstreams", "sns", "sqs", "sts"];

/// The default region when a request carries no scope, as the AWS CLI assumes.
const DEFAULT_REGION: &str = "us-east-1";

/// Who is calling, where, and which request this is.
#[derive(Clone, Debug)]
pub struct Context {
    pub request_id: String,
    pub account: String,
    pub region: String,
    pub access_key: String,
    /// The `Host` the client addressed, for URLs handed back to it (SQS queue URLs).
    pub host: String,
    /// `X-Amzn-Trace-Id`, which SQS keeps with the messages a send carries (X-Ray tracing).
    pub trace_header: Option<String>,
}

/// A handled request: the response, and the service and operation to label metrics with (known
/// names only, so that no client can grow the label sets).
pub struct Outcome {
    pub response: Response<Bytes>,
    pub service: &'static str,
    pub operation: &'static str,
}

/// The AWS services, behind their wire protocols.
pub struct Aws {
    default_account: String,
    sqs: Arc<::sqs::Sqs>,
    sns: Arc<::sns::Sns>,
    dynamodb: Arc<::dynamodb::DynamoDb>,
}

impl Aws {
    /// `default_account` is used for access keys that are not 12-digit account ids.
    pub fn new(
        default_account: String,
        sqs: Arc<::sqs::Sqs>,
        sns: Arc<::sns::Sns>,
        dynamodb: Arc<::dynamodb::DynamoDb>,
    ) -> Self {
        Aws { default_account, sqs, sns, dynamodb }
    }

    pub fn dynamodb(&self) -> &Arc<::dynamodb::DynamoDb> {
        &self.dynamodb
    }

    pub fn sns(&self) -> &Arc<::sns::Sns> {
        &self.sns
    }

    /// Forgets every service's state held in memory; the caller has wiped the store.
    pub fn reset(&self) {
        self.sqs.reset();
        self.sns.reset();
        self.dynamodb.reset();
    }

    /// SQS as `/_stratus/sqs` shows it: each queue's counts and the latest steps of its messages.
    pub fn sqs_inspection(&self) -> serde_json::Value {
        let queues: Vec<serde_json::Value> = self
            .sqs
            .inspect()
            .into_iter()
            .map(|q| {
                let recent: Vec<serde_json::Value> = q
                    .recent
                    .iter()
                    .map(|t| serde_json::json!({ "at": t.at_ms, "message_id": t.message_id, "event": t.event, "queue": t.peer }))
                    .collect();
                serde_json::json!({
                    "account": q.id.account, "region": q.id.region, "name": q.id.name, "arn": q.id.arn(), "fifo": q.fifo,
                    "visible": q.visible, "in_flight": q.in_flight, "delayed": q.delayed, "recent": recent,
                })
            })
            .collect();
        serde_json::json!({ "queues": queues })
    }

    /// DynamoDB's partition map of one table, for `/_stratus/dynamodb/tables/<name>/partitions`:
    /// each partition's hash range, items, bytes and capacity used in the last minute, for the
    /// table and each index. `None` when there is no such table.
    pub fn dynamodb_partitions(
        &self,
        account: Option<&str>,
        region: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let id = ::dynamodb::TableId {
            account: account.unwrap_or(&self.default_account).to_string(),
            region: region.unwrap_or(DEFAULT_REGION).to_string(),
            name: name.to_string(),
        };
        let maps = self.dynamodb.partitions(&id).ok()?;
        let view = |parts: &[::dynamodb::PartitionView]| -> Vec<serde_json::Value> {
            parts
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": p.id, "hashStart": format!("{:016x}", p.hash_start), "hashEnd": format!("{:016x}", p.hash_end),
                        "itemCount": p.items, "bytes": p.bytes,
                        "readUnitsLastMinute": p.read_units, "writeUnitsLastMinute": p.write_units,
                    })
                })
                .collect()
        };
        let indexes: serde_json::Map<String, serde_json::Value> =
            maps.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.clone(), view(v).into())).collect();
        Some(serde_json::json!({
            "table": name, "account": id.account, "region": id.region,
            "partitions": maps.get("").map(|p| view(p)).unwrap_or_default(),
            "indexes": indexes,
        }))
    }

    /// DynamoDB's tables, for `/_stratus/dynamodb`.
    pub fn dynamodb_tables(&self) -> serde_json::Value {
        let tables: Vec<serde_json::Value> = self
            .dynamodb
            .table_ids()
            .into_iter()
            .filter_map(|id| {
                let d = self.dynamodb.describe_table(&id).ok()?;
                Some(serde_json::json!({
                    "account": id.account, "region": id.region, "name": id.name, "arn": id.arn(),
                    "items": d.item_count, "bytes": d.size_bytes,
                    "partitions": d.def.partitions.get("").map_or(1, Vec::len),
                }))
            })
            .collect();
        serde_json::json!({ "tables": tables })
    }

    /// What each served service holds, by name: (what, how many).
    pub fn summary(&self) -> Vec<(&'static str, Vec<(&'static str, usize)>)> {
        let (queues, messages) = self.sqs.summary();
        let (topics, subscriptions) = self.sns.summary();
        let (tables, items) = self.dynamodb.summary();
        vec![
            ("dynamodb", vec![("tables", tables), ("items", items)]),
            ("sns", vec![("topics", topics), ("subscriptions", subscriptions)]),
            ("sqs", vec![("queues", queues), ("messages", messages)]),
            ("sts", Vec::new()),
        ]
    }

    pub async fn handle(&self, request_id: &str, request: Request<Bytes>) -> Outcome {
        let (parts, body) = request.into_parts();
        let route = route(&parts, Some(&body));
        let ctx = self.context(request_id, &route, &parts);
        let envelope = route.envelope(&parts);
        let service_label = route.service.map_or("unknown", |s| s.name);
        let result = match (&route.service, route.call) {
            (None, _) => Err(AwsError::sender(
                "MissingAction",
                "Could not tell which AWS service this request is for: it has no X-Amz-Target header, no Action parameter and no SigV4 credential scope",
            )),
            (Some(service), _) if !SERVED.contains(&service.name) => Err(AwsError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                format!(
                    "Stratus does not serve the AWS service '{}' yet; it serves: {}",
                    service.name,
                    SERVED.join(", ")
                ),
            )),
            (Some(_), Call::Query(request)) => match request.service.name {
                "sts" => sts::handle(&ctx, &request),
                "sns" => sns::handle(&self.sns, &ctx, &request).await,
                "sqs" => {
                    let input = sqs::query_to_json(&request.params);
                    sqs::handle(&self.sqs, &ctx, sqs::Wire::Query, &request.action, input, parts.uri.path()).await
                }
                _ => Err(query::invalid_action(&request)),
            },
            (Some(service), Call::Json { operation }) => match service.name {
                "dynamodb" => match json_body(&body) {
                    Ok(input) => dynamodb::handle(&self.dynamodb, &ctx, &operation, input).await,
                    Err(error) => Err(error),
                },
                "dynamodbstreams" => match json_body(&body) {
                    Ok(input) => dynamodb::handle_streams(&self.dynamodb, &ctx, &operation, input).await,
                    Err(error) => Err(error),
                },
                "sqs" => match json_body(&body) {
                    Ok(input) => {
                        sqs::handle(&self.sqs, &ctx, sqs::Wire::Json, &operation, input, parts.uri.path()).await
                    }
                    Err(error) => Err(sqs::malformed(error.message)),
                },
                _ => Err(AwsError::sender(
                    "UnknownOperationException",
                    format!("{} has no operation '{operation}' over the JSON protocol", service.name),
                )),
            },
            (Some(service), Call::Other) if service.accepts_query() => {
                Err(AwsError::sender("MissingAction", "The request must contain the parameter Action"))
            }
            (Some(service), Call::Other) => Err(AwsError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("No {} operation matches {} {}", service.name, parts.method, parts.uri.path()),
            )),
        };
        match result {
            Ok((operation, response)) => Outcome { response, service: service_label, operation },
            Err(error) => Outcome {
                response: error::encode(envelope, &error, request_id),
                service: service_label,
                operation: "error",
            },
        }
    }

    /// The response to a request whose body could not be read (too large, too slow), shaped by
    /// what its headers say of its protocol.
    pub fn reject(&self, parts: &Parts, request_id: &str, error: &AwsError) -> Response<Bytes> {
        error::encode(route(parts, None).envelope(parts), error, request_id)
    }

    fn context(&self, request_id: &str, route: &Route, parts: &Parts) -> Context {
        let scope = route.scope.as_ref();
        let access_key = scope.map_or("", |s| s.access_key.as_str());
        let is_account_id = access_key.len() == 12 && access_key.bytes().all(|b| b.is_ascii_digit());
        Context {
            request_id: request_id.to_string(),
            account: if is_account_id { access_key.to_string() } else { self.default_account.clone() },
            region: scope.and_then(|s| s.region.clone()).unwrap_or_else(|| DEFAULT_REGION.to_string()),
            access_key: access_key.to_string(),
            host: parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or("localhost:4566")
                .to_string(),
            trace_header: parts.headers.get("x-amzn-trace-id").and_then(|h| h.to_str().ok()).map(String::from),
        }
    }
}

/// A JSON-protocol body: an object (an empty body counts as `{}`).
fn json_body(body: &Bytes) -> Result<serde_json::Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        _ => Err(AwsError::sender("SerializationException", "The request body is not a valid JSON object.")),
    }
}

enum Call {
    Query(QueryRequest),
    Json {
        operation: String,
    },
    /// REST, RPC v2, or nothing recognisable: decided by the service from method and path.
    Other,
}

struct Route {
    scope: Option<sigv4::Scope>,
    service: Option<&'static ServiceModel>,
    protocol: Protocol,
    call: Call,
}

/// Decides service, protocol and operation. With `body: None` (the body could not be read) a
/// query request's `Action` is looked for in the URL only.
fn route(parts: &Parts, body: Option<&Bytes>) -> Route {
    let scope = sigv4::scope(&parts.headers, parts.uri.query());
    let scoped = |speaks: &dyn Fn(&ServiceModel) -> bool| {
        scope.as_ref().and_then(|s| catalog::by_signing_name(&s.service, speaks))
    };

    if let Some(target) = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
        let service = catalog::by_target_prefix(prefix).or_else(|| scoped(&|s| s.protocols.contains(&Protocol::Json)));
        return Route {
            scope,
            service,
            protocol: Protocol::Json,
            call: Call::Json { operation: operation.to_string() },
        };
    }

    let mut params: Vec<(String, String)> = parts.uri.query().map(parse_form).unwrap_or_default();
    if let Some(body) = body.filter(|_| is_form(parts)) {
        params.extend(parse_form(&String::from_utf8_lossy(body)));
    }
    if let Some(at) = params.iter().position(|(k, _)| k == "Action") {
        let action = params.remove(at).1;
        let version = params.iter().find(|(k, _)| k == "Version").map(|(_, v)| v.as_str());
        let service = scoped(&ServiceModel::accepts_query).or_else(|| version.and_then(catalog::by_query_version));
        let protocol = match service {
            Some(s) if s.protocols.contains(&Protocol::Ec2) => Protocol::Ec2,
            _ => Protocol::Query,
        };
        let call = match service {
            Some(service) => Call::Query(QueryRequest { service, action, params }),
            None => Call::Other,
        };
        return Route { scope, service, protocol, call };
    }

    let service = scoped(&|_| true);
    let is_rpc_v2 = parts.uri.path().starts_with("/service/") && parts.uri.path().contains("/operation/");
    let protocol = match service {
        Some(s) if is_rpc_v2 && s.protocols.contains(&Protocol::RpcV2Cbor) => Protocol::RpcV2Cbor,
        Some(s) if s.protocol == Protocol::RpcV2Cbor => s.protocols.get(1).copied().unwrap_or(Protocol::Json),
        Some(s) => s.protocol,
        None => Protocol::Query,
    };
    Route { scope, service, protocol, call: Call::Other }
}

impl Route {
    fn envelope(&self, parts: &Parts) -> Envelope {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let json_content_type = match header("content-type") {
            Some("application/x-amz-json-1.1") => "application/x-amz-json-1.1",
            _ => "application/x-amz-json-1.0",
        };
        // SQS's model lost its query namespace when SQS moved to JSON; its query errors still
        // carry it, and an empty `<Detail/>`.
        let sqs = self.service.is_some_and(|s| s.name == "sqs");
        Envelope {
            protocol: self.protocol,
            xml_namespace: if sqs { sqs::NAMESPACE } else { self.service.map_or("", |s| s.xml_namespace) },
            json_content_type,
            // Whether or not the client says it reads the query code (`x-amzn-query-mode`): SDKs
            // of 2023-24 read it without saying so.
            query_compatible: self.service.is_some_and(|s| s.query_compatible),
            query_detail: sqs,
        }
    }
}

fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

fn parse_form(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Bytes> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Bytes::from(body.to_string())).unwrap()
    }

    fn signed(service: &str, key: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={key}/20240101/eu-central-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        )
    }

    async fn aws() -> Aws {
        let store = store::ephemeral(store::StoreOptions::default()).unwrap();
        let sqs = ::sqs::Sqs::open(store.clone()).await.unwrap();
        let sns =
            ::sns::Sns::open(store.clone(), sqs.clone(), ::sns::Endpoint("http://localhost".into())).await.unwrap();
        let dynamodb = ::dynamodb::DynamoDb::open(store.clone(), Default::default()).await.unwrap();
        Aws::new("000000000000".into(), sqs, sns, dynamodb)
    }

    async fn call(req: Request<Bytes>) -> (Outcome, String) {
        let outcome = aws().await.handle("rid", req).await;
        let body = String::from_utf8(outcome.response.body().to_vec()).unwrap();
        (outcome, body)
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded; charset=utf-8");

    #[tokio::test]
    async fn get_caller_identity_over_form_and_url() {
        let auth = signed("sts", "AKIAEXAMPLE");
        let req =
            request("POST", "/", &[FORM, ("authorization", &auth)], "Action=GetCallerIdentity&Version=2011-06-15");
        let (outcome, body) = call(req).await;
        assert_eq!(outcome.response.status(), 200);
        assert_eq!((outcome.service, outcome.operation), ("sts", "GetCallerIdentity"));
        assert!(body.contains("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::000000000000:root</Arn>"), "{body}");
        assert!(body.contains("<RequestId>rid</RequestId>"));

        // No signature at all: the Version parameter names the service.
        let (outcome, body) = call(request("GET", "/?Action=GetCallerIdentity&Version=2011-06-15", &[], "")).await;
        assert_eq!(outcome.response.status(), 200, "{body}");
    }

    #[tokio::test]
    async fn twelve_digit_access_keys_are_accounts() {
        let auth = signed("sts", "123456789012");
        let (_, body) = call(request("POST", "/", &[FORM, ("authorization", &auth)], "Action=GetCallerIdentity")).await;
        assert!(body.contains("<Account>123456789012</Account>"), "{body}");
    }

    #[tokio::test]
    async fn unknown_query_action_is_invalid_action() {
        let auth = signed("sts", "AKID");
        let (outcome, body) =
            call(request("POST", "/", &[FORM, ("authorization", &auth)], "Action=Nope&Version=2011-06-15")).await;
        assert_eq!(outcome.response.status(), 400);
        assert!(
            body.contains(
                "<Code>InvalidAction</Code><Message>Could not find operation Nope for version 2011-06-15</Message>"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn unserved_services_answer_501_in_their_own_protocol() {
        let auth = signed("sqs", "AKID");
        let json = [
            ("x-amz-target", "GraniteServiceVersion20100801.ListMetrics"),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amzn-query-mode", "true"),
        ];
        let (outcome, body) = call(request("POST", "/", &json, "{}")).await;
        assert_eq!(outcome.response.status(), 501);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["__type"], "NotImplemented");
        assert!(parsed["message"].as_str().unwrap().contains("'cloudwatch'"));
        assert_eq!(outcome.response.headers()["x-amzn-query-error"], "NotImplemented;Receiver");

        let (outcome, body) =
            call(request("GET", "/bucket/key", &[("authorization", &signed("s3", "AKID"))], "")).await;
        assert_eq!(outcome.response.status(), 501);
        assert!(body.contains("<Error><Code>NotImplemented</Code>"), "{body}");

        let (outcome, _) =
            call(request("GET", "/2015-03-31/functions/", &[("authorization", &signed("lambda", "AKID"))], "")).await;
        assert_eq!(outcome.response.headers()["x-amzn-errortype"], "NotImplemented");

        let (outcome, body) = call(request(
            "POST",
            "/",
            &[FORM, ("authorization", &auth)],
            "Action=DescribeInstances&Version=2016-11-15",
        ))
        .await;
        assert_eq!(outcome.response.status(), 400, "SQS has no DescribeInstances: {body}");
        assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    }

    #[tokio::test]
    async fn requests_without_any_service_hint_get_missing_action() {
        for (method, uri, body) in
            [("GET", "/", ""), ("POST", "/", "\u{0}garbage\u{ff}"), ("POST", "/?Action=X&Version=1999-01-01", "")]
        {
            let (outcome, text) = call(request(method, uri, &[FORM], body)).await;
            assert_eq!(outcome.response.status(), 400, "{method} {uri}");
            assert!(text.contains("<Code>MissingAction</Code>"), "{text}");
            assert_eq!(outcome.service, "unknown");
        }
        let auth = signed("sts", "AKID");
        let (_, text) = call(request(
            "POST",
            "/",
            &[("content-type", "text/plain"), ("authorization", &auth)],
            "Action=GetCallerIdentity",
        ))
        .await;
        assert!(text.contains("<Code>MissingAction</Code>"), "a body that is not a form is not read as one: {text}");
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
            /// Whatever arrives, the answer is a well-formed response with a request id: no panic.
            #[test]
            fn any_request_gets_a_response(
                method in proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]),
                path in "/[ -~]{0,40}",
                target in proptest::option::of("[ -~]{0,40}"),
                authorization in proptest::option::of("(AWS4-HMAC-SHA256 )?(Credential=)?[ -~/]{0,60}"),
                content_type in proptest::option::of(proptest::sample::select(vec![
                    "application/x-www-form-urlencoded", "application/x-amz-json-1.0", "application/json", "text/plain",
                ])),
                body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            ) {
                let mut builder = Request::builder().method(method);
                builder = builder.uri(http::Uri::try_from(path.as_str()).unwrap_or_else(|_| http::Uri::from_static("/")));
                for (name, value) in [("x-amz-target", target), ("authorization", authorization), ("content-type", content_type.map(String::from))] {
                    if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                        builder = builder.header(name, value);
                    }
                }
                let request = builder.body(Bytes::from(body)).unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let outcome = runtime.block_on(async { aws().await.handle("rid", request).await });
                proptest::prop_assert!(outcome.response.headers().contains_key("x-amzn-requestid"));
                proptest::prop_assert!(outcome.response.status().as_u16() >= 200);
            }

            /// SNS's query parameters, arbitrary but shaped like real ones (flattened lists and
            /// maps, a topic that exists), never panic and always get an SNS-shaped answer.
            #[test]
            fn any_sns_request_gets_a_response(
                action in proptest::sample::select(vec![
                    "CreateTopic", "Publish", "PublishBatch", "Subscribe", "SetTopicAttributes", "SetSubscriptionAttributes",
                    "TagResource", "UntagResource", "AddPermission", "ConfirmSubscription", "GetTopicAttributes",
                    "PutDataProtectionPolicy", "CreateSMSSandboxPhoneNumber", "SetSMSAttributes", "ListSubscriptions", "Nope",
                ]),
                params in proptest::collection::vec((
                    proptest::sample::select(vec![
                        "TopicArn", "Name", "Message", "Subject", "MessageStructure", "Protocol", "Endpoint", "AttributeName",
                        "AttributeValue", "Attributes.entry.1.key", "Attributes.entry.1.value", "Attributes.entry.x.key",
                        "MessageAttributes.entry.1.Name", "MessageAttributes.entry.1.Value.DataType",
                        "MessageAttributes.entry.1.Value.StringValue", "MessageAttributes.entry.1.Value.BinaryValue",
                        "PublishBatchRequestEntries.member.1.Id", "PublishBatchRequestEntries.member.1.Message",
                        "PublishBatchRequestEntries.member.99999999999.Id", "Tags.member.1.Key", "Tags.member.1.Value",
                        "TagKeys.member.1", "ResourceArn", "Label", "AWSAccountId.member.1", "ActionName.member.1", "Token",
                        "MessageGroupId", "MessageDeduplicationId", "PhoneNumber", "DataProtectionPolicy", "NextToken",
                    ]),
                    proptest::prop_oneof![
                        proptest::sample::select(vec![
                            "arn:aws:sns:us-east-1:000000000000:t", "arn:aws:sns:us-east-1:000000000000:t.fifo", "sqs", "http",
                            "arn:aws:sqs:us-east-1:000000000000:q", "json", "{\"default\":\"x\"}", "{}", "[]", "Number",
                            "String.Array", "Binary", "+15555550100", "FilterPolicy", "RawMessageDelivery", "true", "",
                        ]).prop_map(|v: &str| v.to_string()),
                        "[ -~]{0,30}",
                    ],
                ), 0..10),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let outcome = runtime.block_on(async {
                    let aws = aws().await;
                    let topic = ::sns::TopicId { account: "000000000000".into(), region: "us-east-1".into(), name: "t".into() };
                    aws.sns.create_topic(topic, Default::default(), Default::default(), None).await.unwrap();
                    let mut body = form_urlencoded::Serializer::new(String::new());
                    body.append_pair("Action", action).append_pair("Version", "2010-03-31");
                    for (key, value) in &params {
                        body.append_pair(key, value);
                    }
                    let request = Request::builder().method("POST").uri("/").header("content-type", FORM.1)
                        .body(Bytes::from(body.finish())).unwrap();
                    aws.handle("rid", request).await
                });
                let status = outcome.response.status().as_u16();
                proptest::prop_assert!(status == 200 || (400..500).contains(&status), "status {status}");
            }

            /// DynamoDB requests built from the service's own parameter names and attribute-value
            /// shapes, nested at random, against a table that exists: never a panic, always a 200 or
            /// a 4xx in DynamoDB's shape.
            #[test]
            fn any_dynamodb_request_gets_a_response(
                operation in proptest::sample::select(vec![
                    "CreateTable", "UpdateTable", "PutItem", "GetItem", "UpdateItem", "DeleteItem", "Query", "Scan",
                    "BatchGetItem", "BatchWriteItem", "TransactWriteItems", "TransactGetItems", "ExecuteStatement",
                    "BatchExecuteStatement", "ExecuteTransaction", "UpdateTimeToLive", "TagResource", "DescribeTable",
                ]),
                params in proptest::collection::vec((
                    proptest::sample::select(DDB_NAMES.to_vec()),
                    service_json(DDB_NAMES, DDB_VALUES),
                ), 0..8),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let outcome = runtime.block_on(async {
                    let aws = aws().await;
                    let create = serde_json::json!({
                        "TableName": "tbl", "BillingMode": "PAY_PER_REQUEST",
                        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}],
                    });
                    aws.handle("rid", ddb_request("CreateTable", &create)).await;
                    let mut body = serde_json::Map::new();
                    body.insert("TableName".into(), "tbl".into());
                    for (key, value) in &params {
                        body.insert(key.to_string(), value.clone());
                    }
                    aws.handle("rid", ddb_request(operation, &serde_json::Value::Object(body))).await
                });
                let status = outcome.response.status().as_u16();
                proptest::prop_assert!(status == 200 || (400..500).contains(&status), "status {status}");
            }

            /// SQS query requests with the service's flattened parameters (indexed lists, maps and
            /// batch entries) and values that name real queues and a live receipt handle: never a
            /// panic, always a 200 or a 4xx with SQS's XML error.
            #[test]
            fn any_sqs_query_request_gets_a_response(
                action in proptest::sample::select(SQS_OPERATIONS.to_vec()),
                params in proptest::collection::vec((
                    proptest::sample::select(SQS_QUERY_NAMES.to_vec()),
                    proptest::prop_oneof![
                        proptest::sample::select(SQS_VALUES.to_vec()).prop_map(String::from),
                        "[ -~]{0,30}",
                    ],
                ), 0..10),
            ) {
                let (status, body) = sqs_round(|handle| {
                    let mut form = form_urlencoded::Serializer::new(String::new());
                    form.append_pair("Action", action).append_pair("Version", "2012-11-05");
                    let mut all = sqs_base(action);
                    all.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
                    for (key, value) in all {
                        form.append_pair(&key, &value.replace("$HANDLE", handle));
                    }
                    request("POST", "/", &[FORM, ("authorization", &signed("sqs", "AKID"))], &form.finish())
                });
                proptest::prop_assert!(status == 200 || (400..500).contains(&status), "status {status}: {body}");
                proptest::prop_assert!(status == 200 || body.contains("<ErrorResponse"), "{body}");
            }

            /// The same over the JSON protocol, with values of any JSON type nested at random.
            #[test]
            fn any_sqs_json_request_gets_a_response(
                operation in proptest::sample::select(SQS_OPERATIONS.to_vec()),
                params in proptest::collection::vec((
                    proptest::sample::select(SQS_JSON_NAMES.to_vec()),
                    service_json(SQS_JSON_NAMES, SQS_VALUES),
                    proptest::bool::weighted(0.9),
                ), 0..8),
            ) {
                let (status, body) = sqs_round(|handle| {
                    let serde_json::Value::Object(base) = sqs::query_to_json(&sqs_base(operation)) else { unreachable!() };
                    let mut object: serde_json::Map<_, _> = base.into_iter().map(|(k, v)| (k.clone(), typed(&k, v))).collect();
                    // Mostly of their member's type, so that they get past the deserializer to SQS.
                    object.extend(params.iter().map(|(k, v, of_type)| {
                        (k.to_string(), if *of_type { typed(k, v.clone()) } else { v.clone() })
                    }));
                    let object: serde_json::Value =
                        serde_json::from_str(&serde_json::Value::Object(object).to_string().replace("$HANDLE", handle)).unwrap();
                    let target = format!("AmazonSQS.{operation}");
                    let headers = [("x-amz-target", target.as_str()), ("content-type", "application/x-amz-json-1.0"),
                        ("x-amzn-query-mode", "true"), ("authorization", &signed("sqs", "AKID"))];
                    request("POST", "/", &headers, &object.to_string())
                });
                proptest::prop_assert!(status == 200 || (400..500).contains(&status), "status {status}: {body}");
                let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                proptest::prop_assert!(status == 200 || parsed["__type"].is_string(), "{body}");
            }
    }

    /// `value` made the JSON type of SQS's member `name` where a conversion exists (`"10"` to 10
    /// for an integer, anything to text for a string, lists and maps of text), as an SDK sends it.
    fn typed(name: &str, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        let text = |v: Value| if let Value::String(s) = v { Value::String(s) } else { Value::from(v.to_string()) };
        match (sqs::kind(name), value) {
            (_, Value::Null) => Value::Null,
            (Some(sqs::Kind::Integer), Value::String(s)) => s.parse::<i64>().map_or(Value::String(s), Value::from),
            (Some(sqs::Kind::Integer), Value::Array(_) | Value::Object(_) | Value::Bool(_)) => Value::from(1),
            (Some(sqs::Kind::String), v) => text(v),
            (Some(sqs::Kind::StringList), Value::Array(items)) => items.into_iter().map(text).collect(),
            (Some(sqs::Kind::StringList), v) => Value::Array(vec![text(v)]),
            (Some(sqs::Kind::StringMap), Value::Object(map)) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, text(v))).collect())
            }
            // Structures: a batch's entries, and message attributes' values.
            (Some(sqs::Kind::EntryList), Value::Array(items)) => items.into_iter().map(typed_members).collect(),
            (Some(sqs::Kind::AttributeMap), Value::Object(map)) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, typed_members(v))).collect())
            }
            (_, v) => v,
        }
    }

    /// A structure's members each made their type; what is not a structure becomes one holding it.
    fn typed_members(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => map.into_iter().map(|(k, v)| (k.clone(), typed(&k, v))).collect(),
            other => serde_json::json!({ "DataType": "String", "StringValue": other.to_string() }),
        }
    }

    /// A valid request for each operation, in query parameters, that the fuzzers add to and
    /// override: most random parameters alone are refused before they reach anything interesting.
    fn sqs_base(operation: &str) -> Vec<(String, String)> {
        let queue = [("QueueUrl", "http://localhost/000000000000/q")];
        let arn = "arn:aws:sqs:eu-central-1:000000000000:q";
        let rest: &[(&str, &str)] = match operation {
            "CreateQueue" => &[("QueueName", "fresh")],
            "GetQueueUrl" => &[("QueueName", "q")],
            "GetQueueAttributes" => &[("AttributeName.1", "All")],
            "SetQueueAttributes" => &[("Attribute.1.Name", "VisibilityTimeout"), ("Attribute.1.Value", "5")],
            "SendMessage" => &[
                ("MessageBody", "m"),
                ("MessageAttribute.1.Name", "a"),
                ("MessageAttribute.1.Value.DataType", "String"),
                ("MessageAttribute.1.Value.StringValue", "v"),
            ],
            "SendMessageBatch" => {
                &[("SendMessageBatchRequestEntry.1.Id", "a"), ("SendMessageBatchRequestEntry.1.MessageBody", "m")]
            }
            "ReceiveMessage" => {
                &[("MaxNumberOfMessages", "10"), ("AttributeName.1", "All"), ("MessageAttributeName.1", "All")]
            }
            "DeleteMessage" => &[("ReceiptHandle", "$HANDLE")],
            "DeleteMessageBatch" => &[
                ("DeleteMessageBatchRequestEntry.1.Id", "a"),
                ("DeleteMessageBatchRequestEntry.1.ReceiptHandle", "$HANDLE"),
            ],
            "ChangeMessageVisibility" => &[("ReceiptHandle", "$HANDLE"), ("VisibilityTimeout", "5")],
            "ChangeMessageVisibilityBatch" => &[
                ("ChangeMessageVisibilityBatchRequestEntry.1.Id", "a"),
                ("ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle", "$HANDLE"),
                ("ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout", "5"),
            ],
            "TagQueue" => &[("Tag.1.Key", "k"), ("Tag.1.Value", "v")],
            "UntagQueue" => &[("TagKey.1", "k")],
            "AddPermission" => &[("Label", "l"), ("AWSAccountId.1", "000000000000"), ("ActionName.1", "SendMessage")],
            "RemovePermission" => &[("Label", "l")],
            "StartMessageMoveTask" | "ListMessageMoveTasks" => return vec![("SourceArn".into(), arn.into())],
            "CancelMessageMoveTask" => return vec![("TaskHandle".into(), "x".into())],
            "ListQueues" | "Nope" => return vec![],
            _ => &[],
        };
        queue.iter().chain(rest).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Runs one SQS request against a server holding a standard and a FIFO queue, each with a
    /// message received (so `$HANDLE` in a value can be a live receipt handle of the standard one), on a paused clock
    /// (long polls end at once). Returns the status and body.
    fn sqs_round(build: impl FnOnce(&str) -> Request<Bytes>) -> (u16, String) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let aws = aws().await;
            let mut handle = String::new();
            for (name, attributes) in [("q", vec![]), ("q.fifo", vec![("FifoQueue".to_string(), "true".to_string())])] {
                let id =
                    ::sqs::QueueId { account: "000000000000".into(), region: "eu-central-1".into(), name: name.into() };
                aws.sqs.create_queue(id.clone(), attributes, vec![]).await.unwrap();
                let message = ::sqs::SendMessage {
                    body: "m".into(),
                    group_id: name.ends_with(".fifo").then(|| "g".into()),
                    dedup_id: name.ends_with(".fifo").then(|| "d".into()),
                    ..Default::default()
                };
                aws.sqs.send(&id, "000000000000", message).await.unwrap();
                let received = aws.sqs.receive(&id, ::sqs::Receive::default()).await.unwrap();
                if handle.is_empty() {
                    handle = received.into_iter().next().map(|m| m.receipt_handle).unwrap_or_default();
                }
            }
            let outcome = aws.handle("rid", build(&handle)).await;
            (outcome.response.status().as_u16(), String::from_utf8_lossy(outcome.response.body()).into_owned())
        })
    }

    const SQS_OPERATIONS: &[&str] = &[
        "CreateQueue",
        "GetQueueUrl",
        "DeleteQueue",
        "ListQueues",
        "GetQueueAttributes",
        "SetQueueAttributes",
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
        "PurgeQueue",
        "ListQueueTags",
        "TagQueue",
        "UntagQueue",
        "ListDeadLetterSourceQueues",
        "AddPermission",
        "RemovePermission",
        "StartMessageMoveTask",
        "CancelMessageMoveTask",
        "ListMessageMoveTasks",
        "Nope",
    ];

    const SQS_QUERY_NAMES: &[&str] = &[
        "QueueUrl",
        "QueueName",
        "QueueNamePrefix",
        "QueueOwnerAWSAccountId",
        "MaxResults",
        "NextToken",
        "MessageBody",
        "DelaySeconds",
        "MessageGroupId",
        "MessageDeduplicationId",
        "MaxNumberOfMessages",
        "VisibilityTimeout",
        "WaitTimeSeconds",
        "ReceiveRequestAttemptId",
        "ReceiptHandle",
        "Label",
        "SourceArn",
        "DestinationArn",
        "MaxNumberOfMessagesPerSecond",
        "TaskHandle",
        "Attribute.1.Name",
        "Attribute.1.Value",
        "Attribute.2.Name",
        "AttributeName.1",
        "AttributeName.2",
        "MessageAttributeName.1",
        "MessageSystemAttributeName.1",
        "MessageAttribute.1.Name",
        "MessageAttribute.1.Value.DataType",
        "MessageAttribute.1.Value.StringValue",
        "MessageAttribute.1.Value.BinaryValue",
        "MessageSystemAttribute.1.Name",
        "MessageSystemAttribute.1.Value.DataType",
        "MessageSystemAttribute.1.Value.StringValue",
        "Tag.1.Key",
        "Tag.1.Value",
        "TagKey.1",
        "AWSAccountId.1",
        "ActionName.1",
        "SendMessageBatchRequestEntry.1.Id",
        "SendMessageBatchRequestEntry.1.MessageBody",
        "SendMessageBatchRequestEntry.2.Id",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
        "DeleteMessageBatchRequestEntry.1.Id",
        "DeleteMessageBatchRequestEntry.1.ReceiptHandle",
        "ChangeMessageVisibilityBatchRequestEntry.1.Id",
        "ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle",
        "ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout",
        "SendMessageBatchRequestEntry.99999999999.Id",
        "Attribute.x.Name",
        "a.b.c.d.e.f.g.h.i",
    ];

    const SQS_JSON_NAMES: &[&str] = &[
        "QueueUrl",
        "QueueName",
        "QueueNamePrefix",
        "QueueOwnerAWSAccountId",
        "MaxResults",
        "NextToken",
        "Attributes",
        "tags",
        "Tags",
        "TagKeys",
        "MessageBody",
        "DelaySeconds",
        "MessageAttributes",
        "MessageSystemAttributes",
        "DataType",
        "StringValue",
        "BinaryValue",
        "MessageGroupId",
        "MessageDeduplicationId",
        "MaxNumberOfMessages",
        "VisibilityTimeout",
        "WaitTimeSeconds",
        "AttributeNames",
        "MessageAttributeNames",
        "MessageSystemAttributeNames",
        "ReceiveRequestAttemptId",
        "ReceiptHandle",
        "Entries",
        "Id",
        "Label",
        "AWSAccountIds",
        "Actions",
        "SourceArn",
        "DestinationArn",
        "MaxNumberOfMessagesPerSecond",
        "TaskHandle",
        "q",
        "All",
        "RedrivePolicy",
    ];

    /// Values SQS gives meaning to: queue URLs and ARNs, numbers at and past their limits,
    /// attribute names and types, policies, and `$HANDLE`, a receipt handle that exists.
    const SQS_VALUES: &[&str] = &[
        "http://localhost/000000000000/q",
        "http://localhost/000000000000/q.fifo",
        "http://localhost/000000000000/nope",
        "http://localhost/000000000000",
        "/000000000000/q",
        "q",
        "q.fifo",
        "$HANDLE",
        "0",
        "1",
        "10",
        "11",
        "20",
        "900",
        "43200",
        "43201",
        "-1",
        "18446744073709551616",
        "All",
        "String",
        "Number",
        "Binary",
        "String.x",
        "AAE=",
        "true",
        "false",
        "",
        "g",
        "FifoQueue",
        "VisibilityTimeout",
        "RedrivePolicy",
        "RedriveAllowPolicy",
        "ContentBasedDeduplication",
        "MaximumMessageSize",
        "KmsMasterKeyId",
        "SqsManagedSseEnabled",
        "Policy",
        "ApproximateReceiveCount",
        "AWSTraceHeader",
        "SendMessage",
        "*",
        "{\"maxReceiveCount\":\"1\",\"deadLetterTargetArn\":\"arn:aws:sqs:eu-central-1:000000000000:q\"}",
        "{\"redrivePermission\":\"byQueue\",\"sourceQueueArns\":[]}",
        "{}",
        "[]",
        "arn:aws:sqs:eu-central-1:000000000000:q",
        "arn:aws:sqs:eu-central-1:000000000000:q.fifo",
        "arn:aws:sqs:eu-central-1:000000000000:nope",
    ];

    const DDB_NAMES: &[&str] = &[
        "S",
        "N",
        "B",
        "BOOL",
        "NULL",
        "M",
        "L",
        "SS",
        "NS",
        "BS",
        "TableName",
        "Key",
        "Keys",
        "Item",
        "pk",
        "sk",
        "ConditionExpression",
        "UpdateExpression",
        "ProjectionExpression",
        "FilterExpression",
        "KeyConditionExpression",
        "ExpressionAttributeNames",
        "ExpressionAttributeValues",
        "ReturnValues",
        "ReturnConsumedCapacity",
        "ReturnValuesOnConditionCheckFailure",
        "Limit",
        "ExclusiveStartKey",
        "Segment",
        "TotalSegments",
        "Select",
        "IndexName",
        "ScanIndexForward",
        "ConsistentRead",
        "RequestItems",
        "PutRequest",
        "DeleteRequest",
        "TransactItems",
        "Put",
        "Update",
        "Delete",
        "ConditionCheck",
        "Get",
        "Statement",
        "Statements",
        "Parameters",
        "TransactStatements",
        "NextToken",
        "Expected",
        "AttributeUpdates",
        "KeyConditions",
        "QueryFilter",
        "ScanFilter",
        "AttributesToGet",
        "ComparisonOperator",
        "AttributeValueList",
        "Value",
        "Action",
        "Exists",
        "TimeToLiveSpecification",
        "Enabled",
        "AttributeName",
        "KeySchema",
        "AttributeDefinitions",
        "BillingMode",
        "GlobalSecondaryIndexes",
        "GlobalSecondaryIndexUpdates",
        "Create",
        "Projection",
        "StreamSpecification",
        "ResourceArn",
        "Tags",
        "ClientRequestToken",
    ];

    /// DynamoDB's meaningful values: attribute values, expressions and names.
    const DDB_VALUES: &[&str] = &[
        "pk",
        "sk",
        "x",
        "1",
        "-1.5e3",
        "1e999",
        "#n",
        ":v",
        ":w",
        "a.b[0].c",
        "pk = :v",
        "pk = :v AND sk > :w",
        "SET a = :v, b = b + :w REMOVE c",
        "ADD n :v",
        "attribute_exists(pk) AND size(a) < :v",
        "begins_with(sk, :v)",
        "SELECT * FROM tbl WHERE pk = ?",
        "INSERT INTO tbl VALUE {'pk': 'a', 'sk': 1}",
        "UPDATE tbl SET a = 1 WHERE pk = 'a' AND sk = 1",
        "DELETE FROM tbl WHERE pk = ? AND sk = ?",
        "ALL_OLD",
        "ALL_NEW",
        "UPDATED_NEW",
        "TOTAL",
        "INDEXES",
        "COUNT",
        "HASH",
        "RANGE",
        "EQ",
        "BETWEEN",
        "PUT",
        "ADD",
        "dGVzdA==",
        "arn:aws:dynamodb:us-east-1:000000000000:table/tbl",
    ];

    /// JSON shaped like a service's parameters: scalars of every JSON type among its own member
    /// `names` and meaningful `values`, nested in objects and arrays.
    fn service_json(
        names: &'static [&'static str],
        values: &'static [&'static str],
    ) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[ -~]{0,16}".prop_map(serde_json::Value::from),
            proptest::sample::select(values.to_vec()).prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                proptest::collection::vec((proptest::sample::select(names.to_vec()), inner), 0..5).prop_map(|kv| {
                    serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    fn ddb_request(operation: &str, body: &serde_json::Value) -> Request<Bytes> {
        Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
            .header("authorization", signed("dynamodb", "AKID"))
            .body(Bytes::from(body.to_string()))
            .unwrap()
    }
}
