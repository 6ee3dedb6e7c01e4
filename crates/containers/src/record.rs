//! How containers, volumes and networks are kept in the store: postcard behind a format version.
//! postcard is not self-describing, so a struct that gains a field no longer reads what an older
//! build wrote; with a version, the build that changes a record's shape bumps [`VERSION`], keeps
//! the old shape and converts from it in [`decode`]'s caller.
//!
//! A record is `0x80 0x00`, the version, then the postcard bytes. Records written before versions
//! existed are bare postcard and have today's shape; they never begin with `0x80 0x00` (each
//! begins with the varint length of a string, and postcard writes no such non-minimal varint).

use serde::Serialize;
use serde::de::DeserializeOwned;

const MARK: [u8; 2] = [0x80, 0x00];

/// The shape of today's records.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(record: &T) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(record, [MARK[0], MARK[1], VERSION].to_vec())
}

/// Decodes a record of version [`VERSION`] (or from before versions); another version is an
/// error, which names it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match bytes {
        [0x80, 0x00, VERSION, payload @ ..] => postcard::from_bytes(payload).map_err(|e| e.to_string()),
        [0x80, 0x00, version, ..] => Err(format!("a record of format version {version}, which this build cannot read")),
        _ => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
    }
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

    #[test]
    fn records_carry_their_version_and_older_ones_still_read() {
        let shape = Shape { name: "v".repeat(200), size: 7 };
        let bytes = encode(&shape).unwrap();
        assert_eq!(bytes[..3], [0x80, 0x00, VERSION]);
        assert_eq!(decode::<Shape>(&bytes).unwrap(), shape);
        // Before versions: bare postcard, even with a name long enough for a two-byte length.
        assert_eq!(decode::<Shape>(&postcard::to_stdvec(&shape).unwrap()).unwrap(), shape);
        let mut newer = bytes.clone();
        newer[2] = VERSION + 1;
        assert!(decode::<Shape>(&newer).unwrap_err().contains("format version 2"));
    }
}
