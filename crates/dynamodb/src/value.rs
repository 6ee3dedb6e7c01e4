//! Attribute values and items, as DynamoDB's data model defines them (independent of the wire).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::number::Number;

/// One attribute value. Sets keep the order they were written in, without duplicates (DynamoDB
/// returns sets in no particular order).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, Value>),
    L(Vec<Value>),
    Ss(Vec<String>),
    Ns(Vec<Number>),
    Bs(Vec<Vec<u8>>),
}

/// An item: attribute name to value.
pub type Item = BTreeMap<String, Value>;

impl Value {
    /// The type descriptor DynamoDB uses on the wire and in `attribute_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::S(_) => "S",
            Value::N(_) => "N",
            Value::B(_) => "B",
            Value::Bool(_) => "BOOL",
            Value::Null => "NULL",
            Value::M(_) => "M",
            Value::L(_) => "L",
            Value::Ss(_) => "SS",
            Value::Ns(_) => "NS",
            Value::Bs(_) => "BS",
        }
    }

    /// Bytes this value counts for in an item's size (DynamoDB's documented sizing rules).
    pub fn size(&self) -> usize {
        match self {
            Value::S(s) => s.len(),
            Value::N(n) => n.size(),
            Value::B(b) => b.len(),
            Value::Bool(_) | Value::Null => 1,
            Value::M(m) => 3 + m.iter().map(|(k, v)| k.len() + v.size() + 1).sum::<usize>(),
            Value::L(l) => 3 + l.iter().map(|v| v.size() + 1).sum::<usize>(),
            Value::Ss(s) => s.iter().map(String::len).sum(),
            Value::Ns(s) => s.iter().map(Number::size).sum(),
            Value::Bs(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// Order between two values of the same scalar type (S by UTF-8 bytes, N numerically, B by
    /// unsigned bytes); `None` for other types or mixed types, which do not compare in DynamoDB.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::S(a), Value::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::N(a), Value::N(b)) => Some(a.cmp(b)),
            (Value::B(a), Value::B(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Equality as DynamoDB's `=` sees it: sets are equal regardless of order.
    pub fn equals(&self, other: &Value) -> bool {
        fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.len() == b.len() && a.iter().all(|x| b.contains(x))
        }
        match (self, other) {
            (Value::Ss(a), Value::Ss(b)) => same_set(a, b),
            (Value::Ns(a), Value::Ns(b)) => same_set(a, b),
            (Value::Bs(a), Value::Bs(b)) => same_set(a, b),
            (Value::M(a), Value::M(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.equals(w)))
            }
            (Value::L(a), Value::L(b)) => a.len() == b.len() && a.iter().zip(b).all(|(v, w)| v.equals(w)),
            _ => self == other,
        }
    }
}

/// An item's size: each attribute's name plus its value.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

/// The largest item DynamoDB stores (400 KB, names included).
pub const MAX_ITEM_SIZE: usize = 400 * 1024;

/// A key attribute's value: DynamoDB keys are scalars (S, N or B), ordered as `Value::compare`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyValue {
    S(String),
    N(Number),
    B(Vec<u8>),
}

impl KeyValue {
    pub fn from_value(v: &Value) -> Option<KeyValue> {
        match v {
            Value::S(s) => Some(KeyValue::S(s.clone())),
            Value::N(n) => Some(KeyValue::N(n.clone())),
            Value::B(b) => Some(KeyValue::B(b.clone())),
            _ => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            KeyValue::S(s) => Value::S(s.clone()),
            KeyValue::N(n) => Value::N(n.clone()),
            KeyValue::B(b) => Value::B(b.clone()),
        }
    }

    /// The bytes hashed to place a partition key, and stored in keys: a type tag, then the
    /// value (numbers in their canonical text, so equal numbers hash alike).
    pub fn bytes(&self) -> Vec<u8> {
        let (tag, body): (u8, &[u8]) = match self {
            KeyValue::S(s) => (b'S', s.as_bytes()),
            KeyValue::N(n) => return [b"N".as_slice(), n.to_string().as_bytes()].concat(),
            KeyValue::B(b) => (b'B', b),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(body);
        out
    }
}

impl Ord for KeyValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (KeyValue::S(a), KeyValue::S(b)) => a.as_bytes().cmp(b.as_bytes()),
            (KeyValue::N(a), KeyValue::N(b)) => a.cmp(b),
            (KeyValue::B(a), KeyValue::B(b)) => a.cmp(b),
            // A key attribute has one type per table; order types only to make Ord total.
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for KeyValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl KeyValue {
    fn rank(&self) -> u8 {
        match self {
            KeyValue::S(_) => 0,
            KeyValue::N(_) => 1,
            KeyValue::B(_) => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_documented_rules() {
        let mut item = Item::new();
        item.insert("pk".into(), Value::S("abc".into()));
        item.insert("n".into(), Value::N(Number::parse("12345").unwrap()));
        item.insert("b".into(), Value::Bool(true));
        assert_eq!(item_size(&item), 2 + 3 + 1 + 4 + 1 + 1);
        let list = Value::L(vec![Value::S("ab".into()), Value::Null]);
        assert_eq!(list.size(), 3 + (2 + 1) + (1 + 1));
    }

    #[test]
    fn sets_compare_without_order() {
        let a = Value::Ss(vec!["x".into(), "y".into()]);
        let b = Value::Ss(vec!["y".into(), "x".into()]);
        assert!(a.equals(&b));
        assert!(!a.equals(&Value::Ss(vec!["x".into()])));
    }

    #[test]
    fn strings_order_by_utf8_bytes() {
        let a = KeyValue::S("Z".into());
        let b = KeyValue::S("a".into());
        let c = KeyValue::S("é".into());
        assert!(a < b && b < c);
    }
}
