//! DynamoDB's keys in the store (`dynamodb/...`) and its records (postcard-encoded):
//!
//! - `dynamodb/table/<account>/<region>/<name>`: the table's definition (`TableDef`), including its
//!   partition map;
//! - `dynamodb/item/<table uid>/<hash: 8 bytes BE><partition key length: u32 BE><partition key><sort key>`:
//!   an item. Keys start with the partition key's hash, so the store, too, keeps each partition's
//!   items together and each item collection contiguous;
//! - `dynamodb/stream/<table uid>/<stream label>/<sequence: 20 digits>`: a stream record;
//! - `dynamodb/token/<account>/<token>`: a TransactWriteItems ClientRequestToken of the last
//!   10 minutes, written with the transaction it made idempotent.

use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{Store, prefix_end};

use crate::model::{DynamoError, TableDef, TableId};
use crate::partition::{SortKey, hash};
use crate::table::{StreamRecord, Table};
use crate::value::{Item, KeyValue};

pub const TABLES: &str = "dynamodb/table/";

pub fn table_key(id: &TableId) -> Vec<u8> {
    format!("{TABLES}{}/{}/{}", id.account, id.region, id.name).into_bytes()
}

pub fn items_prefix(uid: &str) -> Vec<u8> {
    format!("dynamodb/item/{uid}/").into_bytes()
}

pub fn item_key(uid: &str, pk: &KeyValue, sk: &SortKey) -> Vec<u8> {
    let pk_bytes = pk.bytes();
    let mut key = items_prefix(uid);
    key.extend_from_slice(&hash(pk).to_be_bytes());
    key.extend_from_slice(&(pk_bytes.len() as u32).to_be_bytes());
    key.extend_from_slice(&pk_bytes);
    for part in sk {
        key.extend_from_slice(&part.bytes());
    }
    key
}

/// A TransactWriteItems ClientRequestToken: (request fingerprint, epoch seconds).
pub fn token_key(account: &str, token: &str) -> Vec<u8> {
    format!("dynamodb/token/{account}/{token}").into_bytes()
}

/// Tokens of the idempotency window: ((account, token), (fingerprint, epoch seconds)).
pub async fn load_tokens(store: &dyn Store) -> Result<Vec<((String, String), (u64, u64))>, DynamoError> {
    let mut tokens = Vec::new();
    each(store, b"dynamodb/token/", |k, v| {
        let path = String::from_utf8_lossy(&k[b"dynamodb/token/".len()..]).into_owned();
        if let Some((account, token)) = path.split_once('/') {
            tokens.push(((account.to_string(), token.to_string()), decode(k, v)?));
        }
        Ok(())
    })
    .await?;
    Ok(tokens)
}

pub fn stream_prefix(uid: &str) -> Vec<u8> {
    format!("dynamodb/stream/{uid}/").into_bytes()
}

pub fn stream_key(uid: &str, label: &str, sequence: u64) -> Vec<u8> {
    format!("dynamodb/stream/{uid}/{label}/{sequence:020}").into_bytes()
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, DynamoError> {
    postcard::from_bytes(bytes)
        .map_err(|e| DynamoError::Internal(format!("corrupt record {}: {e}", String::from_utf8_lossy(key))))
}

/// Every key from `prefix`, read in pages so a large table does not need one huge range.
async fn each(
    store: &dyn Store,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), DynamoError>,
) -> Result<(), DynamoError> {
    const PAGE: usize = 4096;
    let end = prefix_end(prefix);
    let mut from = prefix.to_vec();
    loop {
        let page = store.range(&from, &end, Some(PAGE)).await?;
        for kv in &page {
            f(&kv.key, &kv.value)?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => {
                from = last.key.to_vec();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Loads every table with its items, indexes and stream records.
pub async fn load(store: &dyn Store, split_bytes: usize) -> Result<Vec<Table>, DynamoError> {
    let mut defs: Vec<TableDef> = Vec::new();
    each(store, TABLES.as_bytes(), |k, v| {
        defs.push(decode(k, v)?);
        Ok(())
    })
    .await?;
    let mut tables = Vec::new();
    for def in defs {
        let mut table = Table::new(def, split_bytes);
        let mut items: Vec<Item> = Vec::new();
        each(store, &items_prefix(&table.def.uid), |k, v| {
            items.push(decode(k, v)?);
            Ok(())
        })
        .await?;
        // Rebuild through the normal write path (indexes, TTL index), without a stream record
        // and without counting it as capacity used.
        let mut ignored = Vec::new();
        let stream = table.def.stream.take();
        let now = crate::now_s();
        for item in items {
            if let Some((pk, sk)) = table.key_of(&item) {
                table.write(pk, sk, Some(item), now, false, &mut ignored);
            }
        }
        table.reset_meters();
        let mut records: Vec<StreamRecord> = Vec::new();
        if let Some(stream) = &stream {
            each(store, format!("dynamodb/stream/{}/{}/", table.def.uid, stream.label).as_bytes(), |k, v| {
                records.push(decode(k, v)?);
                Ok(())
            })
            .await?;
        }
        table.def.stream = stream;
        records.sort_by_key(|r| r.sequence);
        table.next_sequence = records.last().map_or(1, |r| r.sequence + 1);
        table.stream = records.into();
        tables.push(table);
    }
    Ok(tables)
}
