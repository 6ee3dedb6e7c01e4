//! Amazon DynamoDB, the domain: tables whose items live on partitions chosen by hashing the
//! partition key, the expression language, indexes, transactions, streams and TTL.

pub mod expr;
pub mod number;
pub mod partiql;
pub mod value;

pub use number::Number;
pub use value::{Item, KeyValue, Value};
