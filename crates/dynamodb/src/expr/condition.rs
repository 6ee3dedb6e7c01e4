//! Conditions (ConditionExpression, FilterExpression, and what PartiQL's WHERE and the legacy
//! Expected/QueryFilter parameters become) and their evaluation against an item.

use std::cmp::Ordering;

use super::Path;
use crate::value::{Item, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparator {
    /// The symbol DynamoDB names the operator by in messages.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "<>",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
        }
    }

    /// The same comparison with its operands swapped (`:v < a` is `a > :v`).
    pub fn swapped(self) -> Comparator {
        match self {
            Comparator::Lt => Comparator::Gt,
            Comparator::Le => Comparator::Ge,
            Comparator::Gt => Comparator::Lt,
            Comparator::Ge => Comparator::Le,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Path),
    Value(Value),
    /// `size(...)`: a number, or nothing for a missing attribute or a type without a size.
    Size(Box<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare(Comparator, Operand, Operand),
    /// `a BETWEEN low AND high`
    Between(Operand, Operand, Operand),
    /// `a IN (b, c, ...)`
    In(Operand, Vec<Operand>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    AttributeExists(Path),
    AttributeNotExists(Path),
    /// `attribute_type(a, :t)` with `:t` one of DynamoDB's type names (`S`, `NS`, ...).
    AttributeType(Operand, String),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
}

/// A resolved operand: borrowed from the item or the expression, or a computed size.
enum Resolved<'a> {
    Ref(&'a Value),
    Owned(Value),
}

impl Resolved<'_> {
    fn get(&self) -> &Value {
        match self {
            Resolved::Ref(v) => v,
            Resolved::Owned(v) => v,
        }
    }
}

impl Operand {
    fn resolve<'a>(&'a self, item: &'a Item) -> Option<Resolved<'a>> {
        match self {
            Operand::Path(path) => path.resolve(item).map(Resolved::Ref),
            Operand::Value(value) => Some(Resolved::Ref(value)),
            Operand::Size(inner) => {
                let inner = inner.resolve(item)?;
                size_of(inner.get()).map(|n| Resolved::Owned(Value::N(crate::number::Number::from_i64(n as i64))))
            }
        }
    }
}

/// `size()`: strings count UTF-16 code units (as the service does), binaries bytes, sets,
/// lists and maps their elements; other types have no size.
fn size_of(value: &Value) -> Option<usize> {
    Some(match value {
        Value::S(s) => s.encode_utf16().count(),
        Value::B(b) => b.len(),
        Value::Ss(s) => s.len(),
        Value::Ns(s) => s.len(),
        Value::Bs(s) => s.len(),
        Value::L(l) => l.len(),
        Value::M(m) => m.len(),
        Value::N(_) | Value::Bool(_) | Value::Null => return None,
    })
}

impl Condition {
    /// Whether `item` satisfies the condition. Comparisons with a missing attribute or
    /// between different types are false (and `<>` is their negation, so true).
    pub fn eval(&self, item: &Item) -> bool {
        match self {
            Condition::Compare(cmp, a, b) => {
                let equal_or_order = |a: &Value, b: &Value| match cmp {
                    Comparator::Eq | Comparator::Ne => Some(a.equals(b)),
                    _ => a.compare(b).map(|o| match cmp {
                        Comparator::Lt => o == Ordering::Less,
                        Comparator::Le => o != Ordering::Greater,
                        Comparator::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    }),
                };
                let result = match (a.resolve(item), b.resolve(item)) {
                    (Some(a), Some(b)) => equal_or_order(a.get(), b.get()).unwrap_or(false),
                    _ => false,
                };
                if *cmp == Comparator::Ne { !result } else { result }
            }
            Condition::Between(a, low, high) => {
                let (Some(a), Some(low), Some(high)) = (a.resolve(item), low.resolve(item), high.resolve(item)) else {
                    return false;
                };
                let above = a.get().compare(low.get()).is_some_and(|o| o != Ordering::Less);
                let below = a.get().compare(high.get()).is_some_and(|o| o != Ordering::Greater);
                above && below
            }
            Condition::In(a, list) => {
                let Some(a) = a.resolve(item) else { return false };
                list.iter().any(|b| b.resolve(item).is_some_and(|b| a.get().equals(b.get())))
            }
            Condition::And(a, b) => a.eval(item) && b.eval(item),
            Condition::Or(a, b) => a.eval(item) || b.eval(item),
            Condition::Not(a) => !a.eval(item),
            Condition::AttributeExists(path) => path.resolve(item).is_some(),
            Condition::AttributeNotExists(path) => path.resolve(item).is_none(),
            Condition::AttributeType(a, type_name) => a.resolve(item).is_some_and(|v| v.get().type_name() == type_name),
            Condition::BeginsWith(a, prefix) => match (a.resolve(item), prefix.resolve(item)) {
                (Some(a), Some(prefix)) => match (a.get(), prefix.get()) {
                    (Value::S(a), Value::S(p)) => a.starts_with(p.as_str()),
                    (Value::B(a), Value::B(p)) => a.starts_with(p),
                    _ => false,
                },
                _ => false,
            },
            Condition::Contains(a, b) => match (a.resolve(item), b.resolve(item)) {
                (Some(a), Some(b)) => contains(a.get(), b.get()),
                _ => false,
            },
        }
    }
}

/// `contains`: a substring of a string or binary, an element of a set or a list.
fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::S(s), Value::S(n)) => s.contains(n.as_str()),
        (Value::B(b), Value::B(n)) => n.is_empty() || b.windows(n.len()).any(|w| w == n.as_slice()),
        (Value::Ss(set), Value::S(n)) => set.contains(n),
        (Value::Ns(set), Value::N(n)) => set.contains(n),
        (Value::Bs(set), Value::B(n)) => set.contains(n),
        (Value::L(list), n) => list.iter().any(|v| v.equals(n)),
        _ => false,
    }
}
