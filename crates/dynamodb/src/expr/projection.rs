//! Projection: the parts of an item a ProjectionExpression (or AttributesToGet) names, with
//! nested paths keeping their structure.

use std::collections::BTreeMap;

use super::{Path, PathElem};
use crate::value::{Item, Value};

/// The projected shape before lists are compacted: list elements keyed by original index.
enum Node {
    Leaf(Value),
    Map(BTreeMap<String, Node>),
    List(BTreeMap<usize, Node>),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Leaf(v) => v,
            Node::Map(m) => Value::M(m.into_iter().map(|(k, n)| (k, n.into_value())).collect()),
            // Selected elements, in index order, without gaps (as DynamoDB returns them).
            Node::List(l) => Value::L(l.into_values().map(Node::into_value).collect()),
        }
    }

    /// Inserts `value` under `rest`; a path crossing an already projected leaf or a
    /// container of the other kind is ignored (overlaps are refused when parsing).
    fn insert(&mut self, rest: &[PathElem], value: Value) {
        let Some((first, rest)) = rest.split_first() else { return };
        let child = match (first, self) {
            (PathElem::Attr(name), Node::Map(map)) => map.entry(name.clone()),
            (PathElem::Index(i), Node::List(list)) => {
                let slot = list.entry(*i).or_insert_with(|| empty_for(rest, &value));
                return insert_into(slot, rest, value);
            }
            _ => return,
        };
        let slot = child.or_insert_with(|| empty_for(rest, &value));
        insert_into(slot, rest, value);
    }
}

fn empty_for(rest: &[PathElem], value: &Value) -> Node {
    match rest.first() {
        None => Node::Leaf(value.clone()),
        Some(PathElem::Attr(_)) => Node::Map(BTreeMap::new()),
        Some(PathElem::Index(_)) => Node::List(BTreeMap::new()),
    }
}

fn insert_into(slot: &mut Node, rest: &[PathElem], value: Value) {
    if !rest.is_empty() {
        slot.insert(rest, value);
    }
}

/// The attributes of `item` at `paths`; paths that do not resolve are left out.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut root = Node::Map(BTreeMap::new());
    for path in paths {
        if let Some(value) = path.resolve(item) {
            root.insert(&path.0, value.clone());
        }
    }
    match root.into_value() {
        Value::M(map) => map,
        _ => Item::new(),
    }
}
