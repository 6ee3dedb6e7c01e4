//! How containers, volumes and networks are kept in the store: CBOR behind a format version.
//! CBOR names each field, so a record type can gain fields: a field added later carries
//! `#[serde(default)]`, and records written before it read with the default. The version is for
//! changes that are not additions.
//!
//! A record is `0x80 0x00`, the version, then the encoded record. Version 1 was postcard, which
//! reads only the exact shape that wrote it, so [`upgrade`] rewrites such records as version 2
//! when the engine opens. Records from before versions existed are bare postcard and read as
//! version 1; they never begin with `0x80 0x00` (each begins with the varint length of a string,
//! and postcard writes no such non-minimal varint). Volumes still have version 1's shape;
//! containers and networks have gained fields since, so their version 1 records (written by
//! builds before 2026-11-26's change to CBOR) no longer read, and stop `stratus up` with an error
//! naming the record.

use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{Op, Store, Txn};

use crate::error::{Error, Result};

const MARK: [u8; 2] = [0x80, 0x00];
const VERSION: u8 = 2;

pub fn encode<T: Serialize>(record: &T) -> std::result::Result<Vec<u8>, String> {
    let mut out = vec![MARK[0], MARK[1], VERSION];
    ciborium::into_writer(record, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a record of any version this build reads; another version is an error naming it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match bytes {
        [0x80, 0x00, VERSION, payload @ ..] => ciborium::from_reader(payload).map_err(|e| e.to_string()),
        [0x80, 0x00, 1, payload @ ..] => postcard::from_bytes(payload).map_err(|e| e.to_string()),
        [0x80, 0x00, version, ..] => Err(format!("a record of format version {version}, which this build cannot read")),
        _ => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
    }
}

/// Rewrites the records of type `T` under `prefix` that are in an older format (each only if
/// it is unchanged meanwhile).
pub async fn upgrade<T: Serialize + DeserializeOwned>(store: &dyn Store, prefix: &[u8]) -> Result<()> {
    for kv in store.range(prefix, &store::prefix_end(prefix), None).await? {
        if kv.value.starts_with(&[MARK[0], MARK[1], VERSION]) {
            continue;
        }
        let name = String::from_utf8_lossy(&kv.key).into_owned();
        let record: T = decode(&kv.value).map_err(|e| Error::Record(name.clone(), e))?;
        let bytes = encode(&record).map_err(|e| Error::Record(name, e))?;
        let unchanged = store::Compare::ModRevision { key: kv.key.to_vec(), revision: kv.mod_revision };
        store
            .txn(Txn { compares: vec![unchanged], success: vec![Op::put(kv.key.to_vec(), bytes)], failure: vec![] })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Shape {
        name: String,
        size: u64,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Grown {
        name: String,
        size: u64,
        #[serde(default)]
        added: Vec<String>,
    }

    #[test]
    fn records_carry_their_version_gain_fields_and_older_formats_still_read() {
        let shape = Shape { name: "v".repeat(200), size: 7 };
        let bytes = encode(&shape).unwrap();
        assert_eq!(bytes[..3], [0x80, 0x00, VERSION]);
        assert_eq!(decode::<Shape>(&bytes).unwrap(), shape);
        let grown: Grown = decode(&bytes).unwrap();
        assert_eq!((grown.name.len(), grown.size, grown.added.len()), (200, 7, 0));
        // Version 1, and bare postcard from before versions, even with a two-byte length first.
        let postcard = postcard::to_stdvec(&shape).unwrap();
        assert_eq!(decode::<Shape>(&postcard).unwrap(), shape);
        assert_eq!(decode::<Shape>(&[&[0x80, 0x00, 1][..], &postcard].concat()).unwrap(), shape);
        let mut newer = bytes.clone();
        newer[2] = VERSION + 1;
        assert!(decode::<Shape>(&newer).unwrap_err().contains("format version 3"));
    }

    #[tokio::test]
    async fn upgrade_rewrites_older_records_in_the_current_format() {
        let store = store::ephemeral(store::StoreOptions::default()).unwrap();
        let shape = Shape { name: "old".into(), size: 1 };
        store.put(b"t/old", &postcard::to_stdvec(&shape).unwrap()).await.unwrap();
        store.put(b"t/new", &encode(&shape).unwrap()).await.unwrap();
        upgrade::<Shape>(store.as_ref(), b"t/").await.unwrap();
        for key in [&b"t/old"[..], b"t/new"] {
            let kv = store.get(key).await.unwrap().unwrap();
            assert_eq!(kv.value[..3], [0x80, 0x00, VERSION]);
            assert_eq!(decode::<Shape>(&kv.value).unwrap(), shape);
        }
        // Only the old one was rewritten.
        assert_eq!(store.get(b"t/new").await.unwrap().unwrap().version, 1);
    }
}
