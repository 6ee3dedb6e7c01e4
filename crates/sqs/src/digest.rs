//! The MD5 digests SQS returns and SDKs verify, computed as AWS documents them.

use md5::{Digest, Md5};

use crate::{AttributeValue, MessageAttribute};

pub(crate) fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// MD5 over the attributes sorted by name, each as: name, data type (each a 4-byte big-endian
/// length and the bytes), a transport byte (1 string, 2 binary), and the value (length and bytes).
/// `None` when there are no attributes, since SQS then returns no digest.
pub(crate) fn md5_of_attributes(attributes: &[MessageAttribute]) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let mut sorted: Vec<&MessageAttribute> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Md5::new();
    for attribute in sorted {
        field(&mut hasher, attribute.name.as_bytes());
        field(&mut hasher, attribute.data_type.as_bytes());
        match &attribute.value {
            AttributeValue::String(s) => {
                hasher.update([1]);
                field(&mut hasher, s.as_bytes());
            }
            AttributeValue::Binary(b) => {
                hasher.update([2]);
                field(&mut hasher, b);
            }
        }
    }
    Some(hex(&hasher.finalize()))
}

fn field(hasher: &mut Md5, bytes: &[u8]) {
    hasher.update((bytes.len() as u32).to_be_bytes());
    hasher.update(bytes);
}

/// The deduplication id of content-based deduplication (SQS FIFO queues and SNS FIFO topics):
/// the SHA-256 of the body, in hex.
pub fn content_deduplication_id(body: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(body.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_digest() {
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }
}
