//! DynamoDB's expression language: condition, filter, key condition, projection and update
//! expressions. Parsing follows the service's order of checks (syntax, then names and
//! functions as they appear, then placeholders and operand types), so that an invalid
//! expression gets the same ValidationException message the service gives.

mod check;
mod condition;
mod key;
pub mod legacy;
mod lexer;
mod projection;
mod reserved;
mod syntax;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::value::Value;

pub use condition::{Comparator, Condition, Operand};
pub use key::{KeyCondition, RangeCondition, parse_key_condition};
pub use projection::project;
pub use reserved::is_reserved;
pub use update::{SetValue, Update, UpdateAction};

/// A ValidationException's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// The request's ExpressionAttributeNames and ExpressionAttributeValues, and which of them
/// the request's expressions used: DynamoDB rejects a request that leaves one unused.
pub struct Placeholders<'a> {
    names: &'a HashMap<String, String>,
    values: &'a HashMap<String, Value>,
    used_names: HashSet<String>,
    used_values: HashSet<String>,
}

impl<'a> Placeholders<'a> {
    pub fn new(names: &'a HashMap<String, String>, values: &'a HashMap<String, Value>) -> Self {
        Placeholders { names, values, used_names: HashSet::new(), used_values: HashSet::new() }
    }

    fn name(&mut self, key: &str) -> Option<&'a str> {
        let names: &'a HashMap<String, String> = self.names;
        let name = names.get(key)?;
        self.used_names.insert(key.to_owned());
        Some(name.as_str())
    }

    fn value(&mut self, key: &str) -> Option<&'a Value> {
        let values: &'a HashMap<String, Value> = self.values;
        let value = values.get(key)?;
        self.used_values.insert(key.to_owned());
        Some(value)
    }

    /// Call once all of a request's expressions are parsed.
    pub fn finish(&self) -> Result<(), ExprError> {
        let unused = |keys: Vec<&String>| {
            let mut keys: Vec<&str> = keys.into_iter().map(String::as_str).collect();
            keys.sort_unstable();
            keys.join(", ")
        };
        let names: Vec<&String> = self.names.keys().filter(|k| !self.used_names.contains(*k)).collect();
        if !names.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                unused(names)
            )));
        }
        let values: Vec<&String> = self.values.keys().filter(|k| !self.used_values.contains(*k)).collect();
        if !values.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                unused(values)
            )));
        }
        Ok(())
    }
}

/// A document path with its placeholders resolved: `a.#b[2]` is `[Attr(a), Attr(b), Index(2)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(pub Vec<PathElem>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathElem {
    Attr(String),
    Index(usize),
}

impl Path {
    pub fn attr(name: &str) -> Path {
        Path(vec![PathElem::Attr(name.to_owned())])
    }

    /// The top-level attribute the path starts from.
    pub fn head(&self) -> &str {
        match self.0.first() {
            Some(PathElem::Attr(name)) => name,
            _ => "",
        }
    }

    /// The value at this path in `item`, if every step exists with the right type.
    pub fn resolve<'v>(&self, item: &'v crate::value::Item) -> Option<&'v Value> {
        let mut elems = self.0.iter();
        let mut current = match elems.next()? {
            PathElem::Attr(name) => item.get(name)?,
            PathElem::Index(_) => return None,
        };
        for elem in elems {
            current = match (elem, current) {
                (PathElem::Attr(name), Value::M(map)) => map.get(name)?,
                (PathElem::Index(i), Value::L(list)) => list.get(*i)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// As DynamoDB prints paths in messages: `[a, b, [2]]`.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, elem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match elem {
                PathElem::Attr(name) => f.write_str(name)?,
                PathElem::Index(index) => write!(f, "[{index}]")?,
            }
        }
        f.write_str("]")
    }
}

/// Parses a ConditionExpression or FilterExpression (`kind` names it in messages).
pub fn parse_condition(text: &str, kind: &'static str, p: &mut Placeholders) -> Result<Condition, ExprError> {
    let raw = syntax::parse_condition(text).map_err(|e| prefixed(kind, e))?;
    check::condition(&raw, p).map_err(|e| prefixed(kind, e))
}

pub fn parse_projection(text: &str, p: &mut Placeholders) -> Result<Vec<Path>, ExprError> {
    let kind = "ProjectionExpression";
    let raw = syntax::parse_projection(text).map_err(|e| prefixed(kind, e))?;
    check::projection(&raw, p).map_err(|e| prefixed(kind, e))
}

pub fn parse_update(text: &str, p: &mut Placeholders) -> Result<Update, ExprError> {
    let kind = "UpdateExpression";
    let raw = syntax::parse_update(text).map_err(|e| prefixed(kind, e))?;
    check::update(&raw, p).map_err(|e| prefixed(kind, e))
}

fn prefixed(kind: &str, detail: String) -> ExprError {
    ExprError(format!("Invalid {kind}: {detail}"))
}
