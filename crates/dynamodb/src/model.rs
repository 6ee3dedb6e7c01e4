//! Table definitions and the errors of the service, as plain types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::{Item, KeyValue, Value};

/// Which table: tables are per account and region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    pub account: String,
    pub region: String,
    pub name: String,
}

impl TableId {
    pub fn arn(&self) -> String {
        format!("arn:aws:dynamodb:{}:{}:table/{}", self.region, self.account, self.name)
    }

    /// `arn:aws:dynamodb:<region>:<account>:table/<name>[/...]`.
    pub fn from_arn(arn: &str) -> Option<TableId> {
        let rest = arn.strip_prefix("arn:aws:dynamodb:")?;
        let mut parts = rest.splitn(3, ':');
        let region = parts.next()?.to_string();
        let account = parts.next()?.to_string();
        let name = parts.next()?.strip_prefix("table/")?.split('/').next()?.to_string();
        Some(TableId { account, region, name })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalarType {
    S,
    N,
    B,
}

impl ScalarType {
    pub fn parse(s: &str) -> Option<ScalarType> {
        match s {
            "S" => Some(ScalarType::S),
            "N" => Some(ScalarType::N),
            "B" => Some(ScalarType::B),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScalarType::S => "S",
            ScalarType::N => "N",
            ScalarType::B => "B",
        }
    }

    pub fn matches(self, v: &Value) -> bool {
        matches!((self, v), (ScalarType::S, Value::S(_)) | (ScalarType::N, Value::N(_)) | (ScalarType::B, Value::B(_)))
    }
}

/// A key attribute: its name and type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttr {
    pub name: String,
    pub kind: ScalarType,
}

/// A key schema: the partition (hash) key and the optional sort (range) key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchema {
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
}

impl KeySchema {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.name.as_str()).chain(self.range.as_ref().map(|r| r.name.as_str()))
    }

    /// The key attributes of `item`, if it has all of them with the right types.
    pub fn key_of(&self, item: &Item) -> Option<(KeyValue, Option<KeyValue>)> {
        let hash = item.get(&self.hash.name).filter(|v| self.hash.kind.matches(v)).and_then(KeyValue::from_value)?;
        let range = match &self.range {
            Some(r) => Some(item.get(&r.name).filter(|v| r.kind.matches(v)).and_then(KeyValue::from_value)?),
            None => None,
        };
        Some((hash, range))
    }

    /// The key attributes alone, as an item (what a key-only projection or a Key parameter is).
    pub fn key_item(&self, item: &Item) -> Item {
        self.names().filter_map(|n| item.get(n).map(|v| (n.to_string(), v.clone()))).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Projection {
    KeysOnly,
    Include(Vec<String>),
    All,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    pub read: u64,
    pub write: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub name: String,
    pub key: KeySchema,
    pub projection: Projection,
    /// Global indexes of provisioned tables have their own throughput.
    pub throughput: Option<Throughput>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamView {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

impl StreamView {
    pub fn parse(s: &str) -> Option<StreamView> {
        match s {
            "KEYS_ONLY" => Some(StreamView::KeysOnly),
            "NEW_IMAGE" => Some(StreamView::NewImage),
            "OLD_IMAGE" => Some(StreamView::OldImage),
            "NEW_AND_OLD_IMAGES" => Some(StreamView::NewAndOldImages),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamView::KeysOnly => "KEYS_ONLY",
            StreamView::NewImage => "NEW_IMAGE",
            StreamView::OldImage => "OLD_IMAGE",
            StreamView::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }
}

/// Everything CreateTable decides, kept as the table's durable definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: TableId,
    /// Unique per incarnation: a table deleted and created again under the same name is new.
    pub uid: String,
    pub key: KeySchema,
    pub attributes: Vec<KeyAttr>,
    /// `None` means PAY_PER_REQUEST.
    pub throughput: Option<Throughput>,
    pub global: Vec<IndexSpec>,
    pub local: Vec<IndexSpec>,
    pub stream: Option<Stream>,
    pub ttl_attribute: Option<String>,
    /// When TTL was last enabled or disabled.
    pub ttl_changed_ms: Option<u64>,
    pub tags: BTreeMap<String, String>,
    pub created_ms: u64,
    pub deletion_protection: bool,
    pub table_class: String,
    /// Where each partition of the table and of each global index starts (its lowest hash);
    /// the last runs to `u64::MAX`.
    pub partitions: BTreeMap<String, Vec<u64>>,
}

/// A table's current stream (a new one, with a new label, each time streams are enabled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub view: StreamView,
    pub label: String,
    pub enabled: bool,
}

impl TableDef {
    pub fn stream_arn(&self) -> Option<String> {
        self.stream.as_ref().map(|s| format!("{}/stream/{}", self.id.arn(), s.label))
    }

    pub fn index(&self, name: &str) -> Option<(&IndexSpec, bool)> {
        self.global.iter().map(|i| (i, true)).chain(self.local.iter().map(|i| (i, false))).find(|(i, _)| i.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DynamoError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    /// The item is returned when ReturnValuesOnConditionCheckFailure asked for it.
    #[error("The conditional request failed")]
    ConditionalCheckFailed(Option<Item>),
    #[error("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", .0.iter().map(|r| r.code.as_str()).collect::<Vec<_>>().join(", "))]
    TransactionCanceled(Vec<CancellationReason>),
    #[error("{0}")]
    IdempotentParameterMismatch(String),
    #[error("Item collection size limit exceeded")]
    ItemCollectionSizeLimitExceeded,
    /// A PartiQL INSERT of a key that exists.
    #[error("Duplicate primary key exists in table")]
    DuplicateItem,
    #[error(
        "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."
    )]
    ProvisionedThroughputExceeded,
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    TrimmedDataAccess(String),
    #[error("{0}")]
    ExpiredIterator(String),
    #[error("{0}")]
    Internal(String),
}

/// One entry of TransactionCanceledException's CancellationReasons, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct CancellationReason {
    /// `None`, `ConditionalCheckFailed`, `ValidationError`, ...
    pub code: String,
    pub message: Option<String>,
    pub item: Option<Item>,
}

impl DynamoError {
    pub fn validation(message: impl Into<String>) -> Self {
        DynamoError::Validation(message.into())
    }

    pub fn table_not_found() -> Self {
        DynamoError::ResourceNotFound("Requested resource not found".into())
    }
}

impl From<store::StoreError> for DynamoError {
    fn from(e: store::StoreError) -> Self {
        DynamoError::Internal(format!("storage failed: {e}"))
    }
}
