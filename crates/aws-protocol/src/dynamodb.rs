//! DynamoDB and DynamoDB Streams over the JSON 1.0 protocol: attribute values to and from the
//! domain's `Value`, each operation's parameters, and the service's error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use dynamodb::expr::{Condition, Path, legacy};
use dynamodb::{
    BatchGet, BatchWrite, Consumed, CreateTable, DeleteItem, DynamoDb, DynamoError, Exprs, GetItem, IndexUpdate, Item,
    KeyAttr, NewIndex, Number, PageOutput, Projection, PutItem, QueryInput, ReturnValues, ScalarType, ScanInput,
    Select, ShardIteratorType, Source, StreamView, TableDescription, TableId, TableUpdate, Throughput, TransactGet,
    TransactWrite, TransactWriteKind, UpdateItem, Value, WriteOutput, WriteRequest,
};
use http::{Response, StatusCode};
use serde_json::{Map, Value as Json, json};

use crate::Context;
use crate::error::{AwsError, respond};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const ERROR_PREFIX: &str = "com.amazonaws.dynamodb.v20120810#";

const OPERATIONS: &[&str] = &[
    "BatchExecuteStatement",
    "BatchGetItem",
    "BatchWriteItem",
    "CreateTable",
    "DeleteItem",
    "DeleteTable",
    "DescribeEndpoints",
    "DescribeLimits",
    "DescribeTable",
    "DescribeTimeToLive",
    "ExecuteStatement",
    "ExecuteTransaction",
    "GetItem",
    "ListTables",
    "ListTagsOfResource",
    "PutItem",
    "Query",
    "Scan",
    "TagResource",
    "TransactGetItems",
    "TransactWriteItems",
    "UntagResource",
    "UpdateItem",
    "UpdateTable",
    "UpdateTimeToLive",
];

/// Each operation's expression parameters, in the order DynamoDB names them in messages.
const PUT: [&str; 1] = ["ConditionExpression"];
const DELETE: [&str; 1] = ["ConditionExpression"];
const GET: [&str; 1] = ["ProjectionExpression"];
const UPDATE: [&str; 2] = ["UpdateExpression", "ConditionExpression"];
const QUERY: [&str; 3] = ["ProjectionExpression", "FilterExpression", "KeyConditionExpression"];
const SCAN: [&str; 2] = ["ProjectionExpression", "FilterExpression"];
const TRANSACT_WRITE: [&str; 2] = ["UpdateExpression", "ConditionExpression"];

const STREAM_OPERATIONS: &[&str] = &["DescribeStream", "GetRecords", "GetShardIterator", "ListStreams"];

pub(crate) async fn handle(
    db: &Arc<DynamoDb>,
    ctx: &Context,
    operation: &str,
    input: Json,
) -> Result<(&'static str, Response<Bytes>), AwsError> {
    let Some(&operation) = OPERATIONS.iter().find(|o| **o == operation) else {
        return Err(error(
            "UnknownOperationException",
            format!("Stratus does not serve the DynamoDB operation {operation}"),
        ));
    };
    let body = match run(db, ctx, operation, &input).await.map_err(to_aws)? {
        Body::Json(json) => json.to_string(),
        Body::Text(text) => text,
    };
    Ok((operation, respond(StatusCode::OK, CONTENT_TYPE, Bytes::from(body), &ctx.request_id)))
}

pub(crate) async fn handle_streams(
    db: &Arc<DynamoDb>,
    ctx: &Context,
    operation: &str,
    input: Json,
) -> Result<(&'static str, Response<Bytes>), AwsError> {
    let Some(&operation) = STREAM_OPERATIONS.iter().find(|o| **o == operation) else {
        return Err(error("UnknownOperationException", format!("DynamoDB Streams has no operation {operation}")));
    };
    let output = run_streams(db, ctx, operation, &input).map_err(to_aws)?;
    Ok((operation, respond(StatusCode::OK, CONTENT_TYPE, Bytes::from(output.to_string()), &ctx.request_id)))
}

fn error(code: &str, message: impl Into<String>) -> AwsError {
    AwsError::sender(format!("{ERROR_PREFIX}{code}"), message)
}

fn to_aws(e: DynamoError) -> AwsError {
    let message = e.to_string();
    match e {
        DynamoError::Validation(_) => error("ValidationException", message),
        DynamoError::ResourceNotFound(_) => error("ResourceNotFoundException", message),
        DynamoError::ResourceInUse(_) => error("ResourceInUseException", message),
        DynamoError::ConditionalCheckFailed(item) => {
            let mut e = error("ConditionalCheckFailedException", message);
            if let Some(item) = item {
                e.fields.insert("Item".into(), item_json(&item));
            }
            e
        }
        DynamoError::TransactionCanceled(reasons) => {
            let mut e = error("TransactionCanceledException", message.clone());
            let reasons: Vec<Json> = reasons
                .iter()
                .map(|r| {
                    let mut out = json!({ "Code": r.code });
                    if let Some(m) = &r.message {
                        out["Message"] = m.clone().into();
                    }
                    if let Some(item) = &r.item {
                        out["Item"] = item_json(item);
                    }
                    out
                })
                .collect();
            e.fields.insert("CancellationReasons".into(), reasons.into());
            // DynamoDB spells this error's message member with a capital M.
            e.fields.insert("Message".into(), message.into());
            e
        }
        DynamoError::IdempotentParameterMismatch(_) => error("IdempotentParameterMismatchException", message),
        DynamoError::DuplicateItem => error("DuplicateItemException", message),
        DynamoError::ItemCollectionSizeLimitExceeded => error("ItemCollectionSizeLimitExceededException", message),
        DynamoError::ProvisionedThroughputExceeded => error("ProvisionedThroughputExceededException", message),
        DynamoError::LimitExceeded(_) => error("LimitExceededException", message),
        DynamoError::TrimmedDataAccess(_) => error("TrimmedDataAccessException", message),
        DynamoError::ExpiredIterator(_) => error("ExpiredIteratorException", message),
        DynamoError::Internal(_) => {
            AwsError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{ERROR_PREFIX}InternalServerError"), message)
        }
    }
}

fn invalid(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

// ---- attribute values ----

/// Decodes one AttributeValue (`{"S": "x"}`), with DynamoDB's validation.
pub(crate) fn value_from_json(v: &Json) -> Result<Value, DynamoError> {
    let Some(obj) = v.as_object() else {
        return Err(invalid("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"));
    };
    let mut entries = obj.iter().filter(|(_, v)| !v.is_null());
    let (Some((kind, body)), None) = (entries.next(), entries.next()) else {
        return Err(invalid(if obj.is_empty() || obj.values().all(Json::is_null) {
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
        } else {
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"
        }));
    };
    let string = |b: &Json| b.as_str().map(str::to_string).ok_or_else(|| invalid(format!("Invalid {kind} value")));
    let number = |b: &Json| -> Result<Number, DynamoError> {
        let text = b.as_str().ok_or_else(|| invalid("The parameter cannot be converted to a numeric value"))?;
        Number::parse(text).map_err(|e| invalid(e.to_string()))
    };
    let binary = |b: &Json| -> Result<Vec<u8>, DynamoError> {
        let text = b.as_str().ok_or_else(|| invalid("Invalid binary value"))?;
        BASE64.decode(text).map_err(|_| invalid("Invalid base64 in a binary value"))
    };
    let set = |b: &Json, name: &str| -> Result<Vec<Json>, DynamoError> {
        let list = b.as_array().ok_or_else(|| invalid(format!("Invalid {kind} value")))?;
        if list.is_empty() {
            return Err(invalid(format!("One or more parameter values were invalid: An {name} set  may not be empty")));
        }
        Ok(list.clone())
    };
    fn distinct<T: PartialEq + std::fmt::Display>(items: Vec<T>) -> Result<Vec<T>, DynamoError> {
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
                let shown: Vec<String> = items.iter().map(ToString::to_string).collect();
                return Err(invalid(format!(
                    "One or more parameter values were invalid: Input collection [{}] contains duplicates.",
                    shown.join(", ")
                )));
            }
        }
        Ok(items)
    }
    Ok(match kind.as_str() {
        "S" => Value::S(string(body)?),
        "N" => Value::N(number(body)?),
        "B" => Value::B(binary(body)?),
        "BOOL" => Value::Bool(body.as_bool().ok_or_else(|| invalid("Invalid BOOL value"))?),
        "NULL" => {
            if body.as_bool() != Some(true) {
                return Err(invalid(
                    "One or more parameter values were invalid: Null attribute value types must have the value of true",
                ));
            }
            Value::Null
        }
        "M" => {
            let map = body.as_object().ok_or_else(|| invalid("Invalid M value"))?;
            Value::M(map.iter().map(|(k, v)| Ok((k.clone(), value_from_json(v)?))).collect::<Result<_, DynamoError>>()?)
        }
        "L" => {
            let list = body.as_array().ok_or_else(|| invalid("Invalid L value"))?;
            Value::L(list.iter().map(value_from_json).collect::<Result<_, _>>()?)
        }
        "SS" => Value::Ss(distinct(set(body, "string")?.iter().map(string).collect::<Result<_, _>>()?)?),
        "NS" => Value::Ns(distinct(set(body, "number")?.iter().map(number).collect::<Result<_, _>>()?)?),
        "BS" => {
            let items: Vec<Vec<u8>> = set(body, "binary")?.iter().map(binary).collect::<Result<_, _>>()?;
            for (i, a) in items.iter().enumerate() {
                if items[..i].contains(a) {
                    return Err(invalid(
                        "One or more parameter values were invalid: Input collection contains duplicates.",
                    ));
                }
            }
            Value::Bs(items)
        }
        _ => {
            return Err(invalid(
                "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
            ));
        }
    })
}

pub(crate) fn value_json(v: &Value) -> Json {
    match v {
        Value::S(s) => json!({ "S": s }),
        Value::N(n) => json!({ "N": n.to_string() }),
        Value::B(b) => json!({ "B": BASE64.encode(b) }),
        Value::Bool(b) => json!({ "BOOL": b }),
        Value::Null => json!({ "NULL": true }),
        Value::M(m) => json!({ "M": m.iter().map(|(k, v)| (k.clone(), value_json(v))).collect::<Map<_, _>>() }),
        Value::L(l) => json!({ "L": l.iter().map(value_json).collect::<Vec<_>>() }),
        Value::Ss(s) => json!({ "SS": s }),
        Value::Ns(s) => json!({ "NS": s.iter().map(ToString::to_string).collect::<Vec<_>>() }),
        Value::Bs(s) => json!({ "BS": s.iter().map(|b| BASE64.encode(b)).collect::<Vec<_>>() }),
    }
}

/// An attribute value written straight to JSON text in the wire's shape (`{"S": "x"}`), without
/// building a `serde_json::Value` tree first: GetItem, Query and Scan answers are mostly items.
struct Wire<'a>(&'a Value);

/// An item written straight to JSON text.
struct WireItem<'a>(&'a Item);

impl serde::Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Seq<'b, T>(&'b [T], fn(&T) -> String);
        impl<T> serde::Serialize for Seq<'_, T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for x in self.0 {
                    seq.serialize_element(&(self.1)(x))?;
                }
                seq.end()
            }
        }
        struct List<'b>(&'b [Value]);
        impl serde::Serialize for List<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for v in self.0 {
                    seq.serialize_element(&Wire(v))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        match self.0 {
            Value::S(v) => map.serialize_entry("S", v)?,
            Value::N(n) => map.serialize_entry("N", &n.to_string())?,
            Value::B(b) => map.serialize_entry("B", &BASE64.encode(b))?,
            Value::Bool(b) => map.serialize_entry("BOOL", b)?,
            Value::Null => map.serialize_entry("NULL", &true)?,
            Value::M(m) => map.serialize_entry("M", &WireItem(m))?,
            Value::L(l) => map.serialize_entry("L", &List(l))?,
            Value::Ss(v) => map.serialize_entry("SS", v)?,
            Value::Ns(v) => map.serialize_entry("NS", &Seq(v, |n| n.to_string()))?,
            Value::Bs(v) => map.serialize_entry("BS", &Seq(v, |b| BASE64.encode(b)))?,
        }
        map.end()
    }
}

impl serde::Serialize for WireItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &Wire(v))?;
        }
        map.end()
    }
}

/// The JSON text of `head` (an object) with one more member, `name`, written from `value`.
fn with_member(head: Json, name: &str, value: &impl serde::Serialize) -> String {
    let mut text = head.to_string();
    text.pop(); // the closing brace
    if text.len() > 1 {
        text.push(',');
    }
    let mut out = text.into_bytes();
    // Writing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, name);
    out.push(b':');
    let _ = serde_json::to_writer(&mut out, value);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn item_json(item: &Item) -> Json {
    Json::Object(item.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn item_from(v: &Json) -> Result<Item, DynamoError> {
    let Some(obj) = v.as_object() else { return Ok(Item::new()) };
    obj.iter().map(|(k, v)| Ok((k.clone(), value_from_json(v)?))).collect()
}

// ---- parameters ----

struct Input<'a>(&'a Json);

impl<'a> Input<'a> {
    fn get(&self, name: &str) -> Option<&'a Json> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(Json::as_str).map(str::to_string)
    }

    fn required(&self, name: &str, member: &str) -> Result<String, DynamoError> {
        self.string(name).ok_or_else(|| {
            invalid(format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    fn bool(&self, name: &str) -> bool {
        self.get(name).and_then(Json::as_bool).unwrap_or(false)
    }

    fn u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(Json::as_u64)
    }

    fn item(&self, name: &str) -> Result<Item, DynamoError> {
        self.get(name).map_or_else(|| Ok(Item::new()), item_from)
    }

    /// ExpressionAttributeNames and ExpressionAttributeValues, which need one of the operation's
    /// `expressions` (values only those that can hold values: not ProjectionExpression).
    fn exprs(&self, expressions: &[&str]) -> Result<Exprs, DynamoError> {
        if !expressions.iter().any(|e| self.get(e).is_some()) {
            for what in ["ExpressionAttributeNames", "ExpressionAttributeValues"] {
                let named: Vec<&str> = expressions
                    .iter()
                    .copied()
                    .filter(|e| what == "ExpressionAttributeNames" || *e != "ProjectionExpression")
                    .collect();
                if self.get(what).is_some() && !named.is_empty() {
                    let verb = if named.len() > 1 { "are" } else { "is" };
                    return Err(invalid(format!(
                        "{what} can only be specified when using expressions: {} {verb} null",
                        named.join(" and ")
                    )));
                }
            }
        }
        if self.get("ExpressionAttributeNames").and_then(Json::as_object).is_some_and(Map::is_empty) {
            return Err(invalid("ExpressionAttributeNames must not be empty"));
        }
        for (what, sigil) in [("ExpressionAttributeNames", '#'), ("ExpressionAttributeValues", ':')] {
            let keys = self.get(what).and_then(Json::as_object).into_iter().flat_map(|m| m.keys());
            for key in keys {
                if !key.starts_with(sigil) || key.len() < 2 {
                    return Err(invalid(format!("{what} contains invalid key: Syntax error; key: \"{key}\"")));
                }
            }
        }
        let names = self
            .get("ExpressionAttributeNames")
            .and_then(Json::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        let values: HashMap<String, Value> = match self.get("ExpressionAttributeValues").and_then(Json::as_object) {
            Some(m) => {
                if m.is_empty() {
                    return Err(invalid("ExpressionAttributeValues must not be empty"));
                }
                m.iter().map(|(k, v)| Ok((k.clone(), value_from_json(v)?))).collect::<Result<_, DynamoError>>()?
            }
            None => HashMap::new(),
        };
        Ok(Exprs { names, values })
    }

    fn table(&self, ctx: &Context) -> Result<TableId, DynamoError> {
        let name = self.required("TableName", "tableName")?;
        table_id(ctx, &name)
    }

    fn return_values(&self) -> Result<ReturnValues, DynamoError> {
        self.string("ReturnValues").map_or(Ok(ReturnValues::None), |s| ReturnValues::parse(&s))
    }

    fn return_old_on_failure(&self) -> bool {
        self.string("ReturnValuesOnConditionCheckFailure").as_deref() == Some("ALL_OLD")
    }

    fn select(&self) -> Result<Select, DynamoError> {
        self.string("Select").map_or(Ok(Select::Default), |s| Select::parse(&s))
    }

    fn limit(&self) -> Result<Option<usize>, DynamoError> {
        match self.get("Limit") {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if n >= 1 => Ok(Some(n as usize)),
                _ => Err(invalid(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
                ))),
            },
        }
    }

    /// An expression parameter, or the legacy parameter it replaces (never both, as DynamoDB
    /// says), converted by `convert`.
    fn source<T>(
        &self,
        expression: &str,
        old: &str,
        convert: impl FnOnce(&'a Json, legacy::ConditionalOperator) -> Result<Option<T>, DynamoError>,
    ) -> Result<Option<Source<T>>, DynamoError> {
        match (self.string(expression), self.get(old)) {
            (Some(_), Some(_)) => Err(invalid(format!(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{old}}} Expression parameters: {{{expression}}}"
            ))),
            (Some(text), None) => Ok(Some(Source::Text(text))),
            (None, Some(v)) => Ok(convert(v, self.conditional_operator()?)?.map(Source::Built)),
            (None, None) => Ok(None),
        }
    }

    fn conditional_operator(&self) -> Result<legacy::ConditionalOperator, DynamoError> {
        match self.string("ConditionalOperator").as_deref() {
            None | Some("AND") => Ok(legacy::ConditionalOperator::And),
            Some("OR") => Ok(legacy::ConditionalOperator::Or),
            Some(other) => Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]"
            ))),
        }
    }

    fn condition(&self) -> Result<Option<Source<Condition>>, DynamoError> {
        self.source("ConditionExpression", "Expected", |v, op| {
            let mut entries = Vec::new();
            for (name, e) in v.as_object().into_iter().flatten() {
                let e = Input(e);
                entries.push((
                    name.clone(),
                    legacy::ExpectedAttribute {
                        exists: e.get("Exists").and_then(Json::as_bool),
                        value: e.get("Value").map(value_from_json).transpose()?,
                        operator: e.get("ComparisonOperator").map(operator).transpose()?,
                        values: e.get("AttributeValueList").map(values).transpose()?,
                    },
                ));
            }
            Ok(legacy::expected(&entries, op)?)
        })
    }

    fn filter(&self, old: &str) -> Result<Option<Source<Condition>>, DynamoError> {
        self.source("FilterExpression", old, |v, op| Ok(legacy::filter(&attribute_conditions(v)?, op)?))
    }

    fn projection(&self) -> Result<Option<Source<Vec<Path>>>, DynamoError> {
        self.source("ProjectionExpression", "AttributesToGet", |v, _| {
            let names: Vec<String> =
                v.as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_string)).collect();
            Ok(Some(legacy::attributes_to_get(&names)))
        })
    }
}

fn operator(v: &Json) -> Result<legacy::ComparisonOperator, DynamoError> {
    let name = v.as_str().unwrap_or_default();
    legacy::ComparisonOperator::parse(name).ok_or_else(|| {
        invalid(format!("1 validation error detected: Value '{name}' at 'comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"))
    })
}

fn values(v: &Json) -> Result<Vec<Value>, DynamoError> {
    v.as_array().into_iter().flatten().map(value_from_json).collect()
}

/// QueryFilter, ScanFilter or KeyConditions: attribute name to {ComparisonOperator, AttributeValueList}.
fn attribute_conditions(v: &Json) -> Result<Vec<(String, legacy::AttributeCondition)>, DynamoError> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(name, c)| {
            let op = c.get("ComparisonOperator").map(operator).transpose()?.ok_or_else(|| {
                invalid("1 validation error detected: Value null at 'comparisonOperator' failed to satisfy constraint: Member must not be null")
            })?;
            let list = c.get("AttributeValueList").map(values).transpose()?.unwrap_or_default();
            Ok((name.clone(), legacy::AttributeCondition { operator: op, values: list }))
        })
        .collect()
}

/// A table name, or a table ARN (DynamoDB accepts either).
fn table_id(ctx: &Context, name: &str) -> Result<TableId, DynamoError> {
    if name.starts_with("arn:") {
        return TableId::from_arn(name).ok_or_else(|| invalid(format!("Invalid TableName or ARN: {name}")));
    }
    Ok(TableId { account: ctx.account.clone(), region: ctx.region.clone(), name: name.to_string() })
}

fn throughput(v: Option<&Json>) -> Option<Throughput> {
    let v = v?;
    Some(Throughput {
        read: v.get("ReadCapacityUnits").and_then(Json::as_u64).unwrap_or(0),
        write: v.get("WriteCapacityUnits").and_then(Json::as_u64).unwrap_or(0),
    })
}

fn key_elements(v: Option<&Json>) -> Vec<(String, String)> {
    v.and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
                    (s("AttributeName"), s("KeyType"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn projection(v: Option<&Json>) -> Result<Projection, DynamoError> {
    let kind = v.and_then(|p| p.get("ProjectionType")).and_then(Json::as_str).unwrap_or("ALL");
    let names: Vec<String> = v
        .and_then(|p| p.get("NonKeyAttributes"))
        .and_then(Json::as_array)
        .map(|l| l.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    match kind {
        "ALL" | "KEYS_ONLY" if !names.is_empty() => Err(invalid(format!(
            "One or more parameter values were invalid: ProjectionType is {kind}, but NonKeyAttributes is specified"
        ))),
        "ALL" => Ok(Projection::All),
        "KEYS_ONLY" => Ok(Projection::KeysOnly),
        "INCLUDE" => Ok(Projection::Include(names)),
        other => Err(invalid(format!("Unknown ProjectionType: {other}"))),
    }
}

fn new_index(v: &Json) -> Result<NewIndex, DynamoError> {
    let i = Input(v);
    Ok(NewIndex {
        name: i.string("IndexName").unwrap_or_default(),
        key: key_elements(i.get("KeySchema")),
        projection: projection(i.get("Projection"))?,
        throughput: throughput(i.get("ProvisionedThroughput")),
    })
}

fn attributes(v: Option<&Json>) -> Result<Vec<KeyAttr>, DynamoError> {
    let Some(list) = v.and_then(Json::as_array) else { return Ok(Vec::new()) };
    list.iter()
        .map(|a| {
            let name = a.get("AttributeName").and_then(Json::as_str).unwrap_or_default().to_string();
            let kind = a.get("AttributeType").and_then(Json::as_str).unwrap_or_default();
            let kind = ScalarType::parse(kind).ok_or_else(|| {
                invalid(format!("1 validation error detected: Value '{kind}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"))
            })?;
            Ok(KeyAttr { name, kind })
        })
        .collect()
}

fn stream_spec(v: Option<&Json>) -> Result<Option<(bool, Option<StreamView>)>, DynamoError> {
    let Some(v) = v else { return Ok(None) };
    let enabled = v.get("StreamEnabled").and_then(Json::as_bool).unwrap_or(false);
    let view = match v.get("StreamViewType").and_then(Json::as_str) {
        Some(s) => Some(StreamView::parse(s).ok_or_else(|| invalid(format!("1 validation error detected: Value '{s}' at 'streamSpecification.streamViewType' failed to satisfy constraint: Member must satisfy enum value set: [NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY]")))?),
        None => None,
    };
    Ok(Some((enabled, view)))
}

fn tags(v: Option<&Json>) -> Vec<(String, String)> {
    v.and_then(Json::as_array)
        .map(|l| {
            l.iter()
                .map(|t| {
                    let s = |k: &str| t.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
                    (s("Key"), s("Value"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- responses ----

fn key_schema_json(k: &dynamodb::KeySchema) -> Json {
    let mut out = vec![json!({ "AttributeName": k.hash.name, "KeyType": "HASH" })];
    if let Some(r) = &k.range {
        out.push(json!({ "AttributeName": r.name, "KeyType": "RANGE" }));
    }
    out.into()
}

fn projection_json(p: &Projection) -> Json {
    match p {
        Projection::All => json!({ "ProjectionType": "ALL" }),
        Projection::KeysOnly => json!({ "ProjectionType": "KEYS_ONLY" }),
        Projection::Include(n) => json!({ "ProjectionType": "INCLUDE", "NonKeyAttributes": n }),
    }
}

fn throughput_json(t: Option<Throughput>) -> Json {
    let t = t.unwrap_or_default();
    json!({ "NumberOfDecreasesToday": 0, "ReadCapacityUnits": t.read, "WriteCapacityUnits": t.write })
}

fn table_json(d: &TableDescription) -> Json {
    let def = &d.def;
    let arn = def.id.arn();
    let mut out = json!({
        "TableName": def.id.name,
        "TableArn": arn,
        "TableId": uuid_of(&def.uid),
        "TableStatus": d.status,
        "CreationDateTime": def.created_ms as f64 / 1000.0,
        "KeySchema": key_schema_json(&def.key),
        "AttributeDefinitions": def.attributes.iter().map(|a| json!({ "AttributeName": a.name, "AttributeType": a.kind.name() })).collect::<Vec<_>>(),
        "ProvisionedThroughput": throughput_json(def.throughput),
        "ItemCount": d.item_count,
        "TableSizeBytes": d.size_bytes,
        "DeletionProtectionEnabled": def.deletion_protection,
        "TableClassSummary": { "TableClass": def.table_class },
    });
    if def.throughput.is_none() {
        out["BillingModeSummary"] = json!({ "BillingMode": "PAY_PER_REQUEST", "LastUpdateToPayPerRequestDateTime": def.created_ms as f64 / 1000.0 });
    } else {
        out["BillingModeSummary"] = json!({ "BillingMode": "PROVISIONED" });
    }
    let index_json = |i: &dynamodb::IndexSpec, global: bool| {
        let (count, size) = d.index_sizes.get(&i.name).copied().unwrap_or_default();
        let mut o = json!({
            "IndexName": i.name,
            "KeySchema": key_schema_json(&i.key),
            "Projection": projection_json(&i.projection),
            "IndexSizeBytes": size,
            "ItemCount": count,
            "IndexArn": format!("{arn}/index/{}", i.name),
        });
        if global {
            o["IndexStatus"] = "ACTIVE".into();
            o["ProvisionedThroughput"] = throughput_json(i.throughput);
        }
        o
    };
    if !def.global.is_empty() {
        out["GlobalSecondaryIndexes"] = def.global.iter().map(|i| index_json(i, true)).collect();
    }
    if !def.local.is_empty() {
        out["LocalSecondaryIndexes"] = def.local.iter().map(|i| index_json(i, false)).collect();
    }
    if let Some(stream) = &def.stream {
        if stream.enabled {
            out["StreamSpecification"] = json!({ "StreamEnabled": true, "StreamViewType": stream.view.name() });
        }
        out["LatestStreamLabel"] = stream.label.clone().into();
        out["LatestStreamArn"] = def.stream_arn().into();
    }
    out
}

/// A table's uid shown as a UUID.
fn uuid_of(uid: &str) -> String {
    uuid::Uuid::try_parse(uid).map(|u| u.hyphenated().to_string()).unwrap_or_else(|_| uid.to_string())
}

fn consumed_json(c: &Consumed, mode: Option<&str>) -> Option<Json> {
    let mode = mode?;
    if mode == "NONE" {
        return None;
    }
    let mut out = json!({ "TableName": c.table, "CapacityUnits": c.total() });
    if c.read > 0.0 {
        out["ReadCapacityUnits"] = c.read.into();
    }
    if c.write > 0.0 {
        out["WriteCapacityUnits"] = c.write.into();
    }
    if mode == "INDEXES" {
        out["Table"] = json!({ "CapacityUnits": c.table_units });
        let units = |m: &std::collections::BTreeMap<String, f64>| {
            m.iter().map(|(k, v)| (k.clone(), json!({ "CapacityUnits": v }))).collect::<Map<_, _>>()
        };
        if !c.global.is_empty() {
            out["GlobalSecondaryIndexes"] = units(&c.global).into();
        }
        if !c.local.is_empty() {
            out["LocalSecondaryIndexes"] = units(&c.local).into();
        }
    }
    Some(out)
}

fn with_consumed(mut out: Json, c: &Consumed, input: &Input) -> Json {
    if let Some(consumed) = consumed_json(c, input.string("ReturnConsumedCapacity").as_deref()) {
        out["ConsumedCapacity"] = consumed;
    }
    out
}

fn page_json(page: PageOutput, input: &Input) -> String {
    let mut out = json!({ "Count": page.count, "ScannedCount": page.scanned });
    if let Some(key) = &page.last_key {
        out["LastEvaluatedKey"] = item_json(key);
    }
    let out = with_consumed(out, &page.consumed, input);
    match &page.items {
        Some(items) => with_member(out, "Items", &WireItems(items)),
        None => out.to_string(),
    }
}

/// Items written straight to JSON text.
struct WireItems<'a>(&'a [Arc<Item>]);

impl serde::Serialize for WireItems<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&WireItem(item))?;
        }
        seq.end()
    }
}

/// An answer: a JSON tree, or text already written (items go straight to text).
enum Body {
    Json(Json),
    Text(String),
}

impl From<Json> for Body {
    fn from(json: Json) -> Body {
        Body::Json(json)
    }
}

// ---- operations ----

async fn run(db: &Arc<DynamoDb>, ctx: &Context, operation: &str, body: &Json) -> Result<Body, DynamoError> {
    let input = Input(body);
    Ok(Body::Json(match operation {
        "CreateTable" => {
            let id = input.table(ctx)?;
            let global = match input.get("GlobalSecondaryIndexes").and_then(Json::as_array) {
                Some(list) => list.iter().map(new_index).collect::<Result<_, DynamoError>>()?,
                None => Vec::new(),
            };
            let local = match input.get("LocalSecondaryIndexes").and_then(Json::as_array) {
                Some(list) => list.iter().map(new_index).collect::<Result<_, DynamoError>>()?,
                None => Vec::new(),
            };
            let spec = CreateTable {
                attributes: attributes(input.get("AttributeDefinitions"))?,
                key: key_elements(input.get("KeySchema")),
                throughput: throughput(input.get("ProvisionedThroughput")),
                billing_mode: input.string("BillingMode"),
                global,
                local,
                stream: stream_spec(input.get("StreamSpecification"))?,
                tags: tags(input.get("Tags")),
                deletion_protection: input.bool("DeletionProtectionEnabled"),
                table_class: input.string("TableClass"),
            };
            json!({ "TableDescription": table_json(&db.create_table(id, spec).await?) })
        }
        "DescribeTable" => json!({ "Table": table_json(&db.describe_table(&input.table(ctx)?)?) }),
        "DeleteTable" => json!({ "TableDescription": table_json(&db.delete_table(&input.table(ctx)?).await?) }),
        "ListTables" => {
            let limit = match input.get("Limit") {
                None => 100,
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=100) => n as usize,
                    _ => {
                        return Err(invalid(format!(
                            "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value {}",
                            if v.as_i64().unwrap_or(0) < 1 {
                                "greater than or equal to 1"
                            } else {
                                "less than or equal to 100"
                            }
                        )));
                    }
                },
            };
            let start = input.string("ExclusiveStartTableName");
            let (names, last) = db.list_tables(&ctx.account, &ctx.region, start.as_deref(), limit);
            let mut out = json!({ "TableNames": names });
            if let Some(last) = last {
                out["LastEvaluatedTableName"] = last.into();
            }
            out
        }
        "UpdateTable" => {
            let id = input.table(ctx)?;
            let mut indexes = Vec::new();
            for u in input.get("GlobalSecondaryIndexUpdates").and_then(Json::as_array).into_iter().flatten() {
                if let Some(c) = u.get("Create") {
                    indexes.push(IndexUpdate::Create(new_index(c)?));
                } else if let Some(c) = u.get("Update") {
                    let ci = Input(c);
                    indexes.push(IndexUpdate::Update {
                        name: ci.string("IndexName").unwrap_or_default(),
                        throughput: throughput(ci.get("ProvisionedThroughput")),
                    });
                } else if let Some(d) = u.get("Delete") {
                    indexes.push(IndexUpdate::Delete { name: Input(d).string("IndexName").unwrap_or_default() });
                }
            }
            let update = TableUpdate {
                attributes: attributes(input.get("AttributeDefinitions"))?,
                billing_mode: input.string("BillingMode"),
                throughput: throughput(input.get("ProvisionedThroughput")),
                indexes,
                stream: stream_spec(input.get("StreamSpecification"))?,
                deletion_protection: input.get("DeletionProtectionEnabled").and_then(Json::as_bool),
                table_class: input.string("TableClass"),
            };
            json!({ "TableDescription": table_json(&db.update_table(&id, update).await?) })
        }
        "DescribeTimeToLive" => {
            let attr = db.describe_ttl(&input.table(ctx)?)?;
            match attr {
                Some(a) => json!({ "TimeToLiveDescription": { "TimeToLiveStatus": "ENABLED", "AttributeName": a } }),
                None => json!({ "TimeToLiveDescription": { "TimeToLiveStatus": "DISABLED" } }),
            }
        }
        "UpdateTimeToLive" => {
            let id = input.table(ctx)?;
            let spec = input.get("TimeToLiveSpecification").ok_or_else(|| {
                invalid("1 validation error detected: Value null at 'timeToLiveSpecification' failed to satisfy constraint: Member must not be null")
            })?;
            let spec = Input(spec);
            let enabled = spec.bool("Enabled");
            let attr = spec.required("AttributeName", "timeToLiveSpecification.attributeName")?;
            db.update_ttl(&id, enabled, &attr).await?;
            json!({ "TimeToLiveSpecification": { "Enabled": enabled, "AttributeName": attr } })
        }
        "TagResource" => {
            let arn = input.required("ResourceArn", "resourceArn")?;
            db.change_tags(&arn, tags(input.get("Tags")), Vec::new()).await?;
            json!({})
        }
        "UntagResource" => {
            let arn = input.required("ResourceArn", "resourceArn")?;
            let keys = input
                .get("TagKeys")
                .and_then(Json::as_array)
                .map(|l| l.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            db.change_tags(&arn, Vec::new(), keys).await?;
            json!({})
        }
        "ListTagsOfResource" => {
            let arn = input.required("ResourceArn", "resourceArn")?;
            let tags: Vec<Json> =
                db.list_tags(&arn)?.into_iter().map(|(k, v)| json!({ "Key": k, "Value": v })).collect();
            json!({ "Tags": tags })
        }
        "DescribeLimits" => json!({
            "AccountMaxReadCapacityUnits": 80000, "AccountMaxWriteCapacityUnits": 80000,
            "TableMaxReadCapacityUnits": 40000, "TableMaxWriteCapacityUnits": 40000,
        }),
        "DescribeEndpoints" => json!({ "Endpoints": [{ "Address": ctx.host, "CachePeriodInMinutes": 1440 }] }),
        "PutItem" => {
            let id = input.table(ctx)?;
            let request = PutItem {
                item: input.item("Item")?,
                condition: input.condition()?,
                return_values: input.return_values()?,
                return_old_on_failure: input.return_old_on_failure(),
                exprs: input.exprs(&PUT)?,
            };
            let out = db.put_item(&id, request).await?;
            write_json(out, &input)
        }
        "GetItem" => {
            let id = input.table(ctx)?;
            let request = GetItem {
                key: input.item("Key")?,
                consistent: input.bool("ConsistentRead"),
                projection: input.projection()?,
                exprs: input.exprs(&GET)?,
            };
            let out = db.get_item(&id, request).await?;
            let head = with_consumed(json!({}), &out.consumed, &input);
            return Ok(Body::Text(match &out.item {
                Some(item) => with_member(head, "Item", &WireItem(item)),
                None => head.to_string(),
            }));
        }
        "UpdateItem" => {
            let id = input.table(ctx)?;
            let update = input.source("UpdateExpression", "AttributeUpdates", |v, _| {
                let mut updates = Vec::new();
                for (name, u) in v.as_object().into_iter().flatten() {
                    let action = match u.get("Action").and_then(Json::as_str) {
                        None | Some("PUT") => legacy::AttributeAction::Put,
                        Some("ADD") => legacy::AttributeAction::Add,
                        Some("DELETE") => legacy::AttributeAction::Delete,
                        Some(other) => return Err(invalid(format!("1 validation error detected: Value '{other}' at 'attributeUpdates.{name}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"))),
                    };
                    let value = u.get("Value").map(value_from_json).transpose()?;
                    updates.push((name.clone(), legacy::AttributeUpdate { action, value }));
                }
                Ok(Some(legacy::attribute_updates(&updates)?))
            })?;
            let request = UpdateItem {
                key: input.item("Key")?,
                update,
                condition: input.condition()?,
                return_values: input.return_values()?,
                return_old_on_failure: input.return_old_on_failure(),
                exprs: input.exprs(&UPDATE)?,
            };
            let out = db.update_item(&id, request).await?;
            write_json(out, &input)
        }
        "DeleteItem" => {
            let id = input.table(ctx)?;
            let request = DeleteItem {
                key: input.item("Key")?,
                condition: input.condition()?,
                return_values: input.return_values()?,
                return_old_on_failure: input.return_old_on_failure(),
                exprs: input.exprs(&DELETE)?,
            };
            let out = db.delete_item(&id, request).await?;
            write_json(out, &input)
        }
        "Query" => {
            let id = input.table(ctx)?;
            let request = QueryInput {
                index: input.string("IndexName"),
                key_condition: input
                    .source("KeyConditionExpression", "KeyConditions", |v, _| Ok(Some(attribute_conditions(v)?)))?,
                filter: input.filter("QueryFilter")?,
                projection: input.projection()?,
                forward: input.get("ScanIndexForward").and_then(Json::as_bool).unwrap_or(true),
                limit: input.limit()?,
                start_key: input.get("ExclusiveStartKey").map(item_from).transpose()?,
                select: input.select()?,
                consistent: input.bool("ConsistentRead"),
                exprs: input.exprs(&QUERY)?,
            };
            return Ok(Body::Text(page_json(db.query(&id, request).await?, &input)));
        }
        "Scan" => {
            let id = input.table(ctx)?;
            let segment = match (input.get("Segment"), input.get("TotalSegments")) {
                (None, None) => None,
                (Some(s), Some(t)) => Some((s.as_u64().unwrap_or(u64::MAX), t.as_u64().unwrap_or(0))),
                (Some(_), None) => {
                    return Err(invalid(
                        "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
                    ));
                }
            };
            let request = ScanInput {
                index: input.string("IndexName"),
                filter: input.filter("ScanFilter")?,
                projection: input.projection()?,
                limit: input.limit()?,
                start_key: input.get("ExclusiveStartKey").map(item_from).transpose()?,
                segment,
                select: input.select()?,
                consistent: input.bool("ConsistentRead"),
                exprs: input.exprs(&SCAN)?,
            };
            return Ok(Body::Text(page_json(db.scan(&id, request).await?, &input)));
        }
        "BatchGetItem" => {
            let Some(request_items) = input.get("RequestItems").and_then(Json::as_object).filter(|m| !m.is_empty())
            else {
                return Err(invalid(
                    "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
                ));
            };
            let mut requests = Vec::new();
            for (name, r) in request_items {
                let ri = Input(r);
                let keys = ri
                    .get("Keys")
                    .and_then(Json::as_array)
                    .map(|l| l.iter().map(item_from).collect::<Result<Vec<_>, _>>())
                    .transpose()?
                    .unwrap_or_default();
                requests.push(BatchGet {
                    table: table_id(ctx, name)?,
                    keys,
                    consistent: ri.bool("ConsistentRead"),
                    projection: ri.projection()?,
                    exprs: ri.exprs(&GET)?,
                });
            }
            let results = db.batch_get(requests).await?;
            let mut responses = Map::new();
            let mut consumed = Vec::new();
            let mode = input.string("ReturnConsumedCapacity");
            let mut unprocessed = Map::new();
            for (id, items, left, c) in results {
                responses.insert(id.name.clone(), items.iter().map(item_json).collect());
                consumed.extend(consumed_json(&c, mode.as_deref()));
                if !left.is_empty() {
                    // The table's request as sent, with only the keys still to read.
                    let mut again = request_items.get(&id.name).cloned().unwrap_or_else(|| json!({}));
                    again["Keys"] = left.iter().map(item_json).collect();
                    unprocessed.insert(id.name.clone(), again);
                }
            }
            let mut out = json!({ "Responses": responses, "UnprocessedKeys": unprocessed });
            if mode.is_some_and(|m| m != "NONE") {
                out["ConsumedCapacity"] = consumed.into();
            }
            out
        }
        "BatchWriteItem" => {
            let Some(request_items) = input.get("RequestItems").and_then(Json::as_object).filter(|m| !m.is_empty())
            else {
                return Err(invalid(
                    "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
                ));
            };
            let mut batches = Vec::new();
            for (name, list) in request_items {
                let mut requests = Vec::new();
                for r in list.as_array().into_iter().flatten() {
                    if let Some(p) = r.get("PutRequest") {
                        requests.push(WriteRequest::Put(Input(p).item("Item")?));
                    } else if let Some(d) = r.get("DeleteRequest") {
                        requests.push(WriteRequest::Delete(Input(d).item("Key")?));
                    } else {
                        return Err(invalid(
                            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                        ));
                    }
                }
                batches.push(BatchWrite { table: table_id(ctx, name)?, requests });
            }
            let (consumed, left) = db.batch_write(batches).await?;
            let mut unprocessed = Map::new();
            for (id, request) in left {
                let entry = match request {
                    WriteRequest::Put(item) => json!({ "PutRequest": { "Item": item_json(&item) } }),
                    WriteRequest::Delete(key) => json!({ "DeleteRequest": { "Key": item_json(&key) } }),
                };
                let list = unprocessed.entry(id.name).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(entry);
                }
            }
            let mut out = json!({ "UnprocessedItems": unprocessed });
            let mode = input.string("ReturnConsumedCapacity");
            if mode.as_deref().is_some_and(|m| m != "NONE") {
                out["ConsumedCapacity"] = consumed.iter().filter_map(|c| consumed_json(c, mode.as_deref())).collect();
            }
            out
        }
        "TransactWriteItems" => {
            let items = input.get("TransactItems").and_then(Json::as_array).cloned().unwrap_or_default();
            let mut actions = Vec::new();
            for item in &items {
                let (kind_name, body) = ["Put", "Update", "Delete", "ConditionCheck"]
                    .iter()
                    .find_map(|k| item.get(*k).map(|b| (*k, b)))
                    .ok_or_else(|| invalid("TransactItems can only contain one of Check, Put, Update or Delete"))?;
                let b = Input(body);
                let kind = match kind_name {
                    "Put" => TransactWriteKind::Put { item: b.item("Item")? },
                    "Update" => TransactWriteKind::Update {
                        key: b.item("Key")?,
                        update: b.required("UpdateExpression", "transactItems.member.update.updateExpression")?,
                    },
                    "Delete" => TransactWriteKind::Delete { key: b.item("Key")? },
                    _ => TransactWriteKind::ConditionCheck { key: b.item("Key")? },
                };
                actions.push(TransactWrite {
                    table: b.table(ctx)?,
                    kind,
                    condition: b.string("ConditionExpression"),
                    return_old_on_failure: b.return_old_on_failure(),
                    exprs: b.exprs(&TRANSACT_WRITE)?,
                });
            }
            let consumed = db.transact_write(&ctx.account, actions, input.string("ClientRequestToken")).await?;
            let mut out = json!({});
            let mode = input.string("ReturnConsumedCapacity");
            if mode.as_deref().is_some_and(|m| m != "NONE") {
                out["ConsumedCapacity"] = consumed.iter().filter_map(|c| consumed_json(c, mode.as_deref())).collect();
            }
            out
        }
        "TransactGetItems" => {
            let items = input.get("TransactItems").and_then(Json::as_array).cloned().unwrap_or_default();
            let mut gets = Vec::new();
            for item in &items {
                let body = item.get("Get").ok_or_else(|| invalid("TransactGetItems can only contain Get"))?;
                let b = Input(body);
                gets.push(TransactGet {
                    table: b.table(ctx)?,
                    key: b.item("Key")?,
                    projection: b.string("ProjectionExpression"),
                    exprs: b.exprs(&GET)?,
                });
            }
            let (found, consumed) = db.transact_get(gets).await?;
            let responses: Vec<Json> = found
                .iter()
                .map(|item| match item {
                    Some(i) => json!({ "Item": item_json(i) }),
                    None => json!({}),
                })
                .collect();
            let mut out = json!({ "Responses": responses });
            let mode = input.string("ReturnConsumedCapacity");
            if mode.as_deref().is_some_and(|m| m != "NONE") {
                out["ConsumedCapacity"] = consumed.iter().filter_map(|c| consumed_json(c, mode.as_deref())).collect();
            }
            out
        }
        "ExecuteStatement" => {
            let text = input.required("Statement", "statement")?;
            let params = parameters(input.get("Parameters"))?;
            let next = input.string("NextToken");
            let out = db
                .execute_statement(
                    &ctx.account,
                    &ctx.region,
                    &text,
                    &params,
                    input.bool("ConsistentRead"),
                    input.limit()?,
                    next.as_deref(),
                )
                .await?;
            let mut json = json!({ "Items": out.items.iter().map(item_json).collect::<Vec<_>>() });
            if let Some(token) = out.next_token {
                json["NextToken"] = token.into();
            }
            with_consumed(json, &out.consumed, &input)
        }
        "BatchExecuteStatement" => {
            let statements = input.get("Statements").and_then(Json::as_array).cloned().unwrap_or_default();
            if statements.is_empty() || statements.len() > 25 {
                return Err(invalid(format!(
                    "1 validation error detected: Value at 'statements' failed to satisfy constraint: Member must have length {}",
                    if statements.is_empty() { "greater than or equal to 1" } else { "less than or equal to 25" }
                )));
            }
            let parsed: Vec<(String, Vec<Value>)> = statements
                .iter()
                .filter_map(|s| {
                    Some((s.get("Statement")?.as_str()?.to_string(), parameters(s.get("Parameters")).ok()?))
                })
                .collect();
            db.check_batch_statements(&parsed)?;
            let mut responses = Vec::new();
            for s in &statements {
                let si = Input(s);
                let result =
                    match (si.required("Statement", "statements.member.statement"), parameters(si.get("Parameters"))) {
                        (Ok(text), Ok(params)) => {
                            db.execute_statement(
                                &ctx.account,
                                &ctx.region,
                                &text,
                                &params,
                                si.bool("ConsistentRead"),
                                None,
                                None,
                            )
                            .await
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                responses.push(match result {
                    Ok(out) => match out.items.first() {
                        Some(item) => json!({ "Item": item_json(item) }),
                        None => json!({}),
                    },
                    Err(e) => {
                        let code = to_aws(e);
                        let short =
                            code.code.trim_start_matches(ERROR_PREFIX).trim_end_matches("Exception").to_string();
                        json!({ "Error": { "Code": short, "Message": code.message } })
                    }
                });
            }
            json!({ "Responses": responses })
        }
        "ExecuteTransaction" => {
            let statements = input
                .get("TransactStatements")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let si = Input(s);
                    Ok((
                        si.required("Statement", "transactStatements.member.statement")?,
                        parameters(si.get("Parameters"))?,
                    ))
                })
                .collect::<Result<Vec<_>, DynamoError>>()?;
            let items = db.execute_transaction(&ctx.account, &ctx.region, statements).await?;
            if items.is_empty() {
                json!({})
            } else {
                json!({ "Responses": items.iter().map(|i| match i {
                    Some(item) => json!({ "Item": item_json(item) }),
                    None => json!({}),
                }).collect::<Vec<_>>() })
            }
        }
        _ => return Err(invalid(format!("{operation} is not served"))),
    }))
}

/// PartiQL parameters: a list of attribute values.
fn parameters(v: Option<&Json>) -> Result<Vec<Value>, DynamoError> {
    v.and_then(Json::as_array).map_or(Ok(Vec::new()), |l| l.iter().map(value_from_json).collect())
}

fn write_json(out: WriteOutput, input: &Input) -> Json {
    let mut json = json!({});
    if let Some(a) = &out.attributes {
        json["Attributes"] = item_json(a);
    }
    if let (Some(collection), Some("SIZE")) = (&out.collection, input.string("ReturnItemCollectionMetrics").as_deref())
    {
        // DynamoDB estimates the size as a range of whole gigabytes around it.
        let gb = (collection.bytes as f64 / (1u64 << 30) as f64).floor();
        json["ItemCollectionMetrics"] =
            json!({ "ItemCollectionKey": item_json(&collection.key), "SizeEstimateRangeGB": [gb, gb + 1.0] });
    }
    with_consumed(json, &out.consumed, input)
}

fn run_streams(db: &Arc<DynamoDb>, ctx: &Context, operation: &str, body: &Json) -> Result<Json, DynamoError> {
    let input = Input(body);
    Ok(match operation {
        "ListStreams" => {
            let table = input.string("TableName");
            let limit = input.u64("Limit").unwrap_or(100).clamp(1, 100) as usize;
            let start = input.string("ExclusiveStartStreamArn");
            let all = db.list_streams(&ctx.account, &ctx.region, table.as_deref());
            let after: Vec<_> = all.into_iter().filter(|(arn, _, _)| start.as_ref().is_none_or(|s| arn > s)).collect();
            let more = after.len() > limit;
            let page = &after[..after.len().min(limit)];
            let streams: Vec<Json> = page
                .iter()
                .map(|(arn, table, label)| json!({ "StreamArn": arn, "TableName": table, "StreamLabel": label }))
                .collect();
            let mut out = json!({ "Streams": streams });
            if let (true, Some((arn, _, _))) = (more, page.last()) {
                out["LastEvaluatedStreamArn"] = arn.clone().into();
            }
            out
        }
        "DescribeStream" => {
            let arn = input.required("StreamArn", "streamArn")?;
            let d = db.describe_stream(&arn)?;
            let mut range = json!({});
            if let Some((first, last)) = d.range {
                range = json!({ "StartingSequenceNumber": dynamodb_seq(first), "EndingSequenceNumber": dynamodb_seq(last) });
                if d.enabled {
                    range.as_object_mut().map(|m| m.remove("EndingSequenceNumber"));
                }
            }
            json!({ "StreamDescription": {
                "StreamArn": d.arn, "StreamLabel": d.label, "TableName": d.table,
                "StreamStatus": if d.enabled { "ENABLED" } else { "DISABLED" },
                "StreamViewType": d.view.name(),
                "CreationRequestDateTime": d.created_ms as f64 / 1000.0,
                "KeySchema": key_schema_json(&d.key),
                "Shards": [{ "ShardId": d.shard_id, "SequenceNumberRange": range }],
            }})
        }
        "GetShardIterator" => {
            let arn = input.required("StreamArn", "streamArn")?;
            let shard = input.required("ShardId", "shardId")?;
            let kind_text = input.required("ShardIteratorType", "shardIteratorType")?;
            let kind = ShardIteratorType::parse(&kind_text).ok_or_else(|| {
                invalid(format!("1 validation error detected: Value '{kind_text}' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_SEQUENCE_NUMBER, TRIM_HORIZON]"))
            })?;
            let seq = input.string("SequenceNumber");
            json!({ "ShardIterator": db.get_shard_iterator(&arn, &shard, kind, seq.as_deref())? })
        }
        "GetRecords" => {
            let iterator = input.required("ShardIterator", "shardIterator")?;
            let limit = input.u64("Limit").unwrap_or(1000).clamp(1, 1000) as usize;
            let (records, next) = db.get_records(&iterator, limit)?;
            let records: Vec<Json> = records
                .into_iter()
                .map(|v| {
                    let r = &v.record;
                    let mut data = json!({
                        "ApproximateCreationDateTime": r.created_s,
                        "Keys": item_json(&r.keys),
                        "SequenceNumber": dynamodb_seq(r.sequence),
                        "SizeBytes": r.size,
                        "StreamViewType": r.view.name(),
                    });
                    if let Some(i) = &r.new_image {
                        data["NewImage"] = item_json(i);
                    }
                    if let Some(i) = &r.old_image {
                        data["OldImage"] = item_json(i);
                    }
                    let mut record = json!({
                        "eventID": format!("{:032x}", r.sequence),
                        "eventName": r.event,
                        "eventVersion": "1.1",
                        "eventSource": "aws:dynamodb",
                        "awsRegion": v.region,
                        "dynamodb": data,
                    });
                    if r.by_ttl {
                        record["userIdentity"] = json!({ "PrincipalId": "dynamodb.amazonaws.com", "Type": "Service" });
                    }
                    record
                })
                .collect();
            json!({ "Records": records, "NextShardIterator": next })
        }
        _ => return Err(invalid(format!("{operation} is not served"))),
    })
}

fn dynamodb_seq(seq: u64) -> String {
    format!("{seq:021}")
}
