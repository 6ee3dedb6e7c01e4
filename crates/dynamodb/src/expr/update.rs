//! Update expressions (and what AttributeUpdates and PartiQL's UPDATE become), applied to an
//! item with the service's semantics and errors.

use super::{ExprError, Path, PathElem};
use crate::value::{Item, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub actions: Vec<UpdateAction>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpdateAction {
    Set(Path, SetValue),
    Remove(Path),
    /// Adds a number, or a set's elements; creates the attribute if missing.
    Add(Path, Value),
    /// Removes a set's elements; removes the attribute once the set is empty.
    Delete(Path, Value),
}

/// The right-hand side of a SET action.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Path(Path),
    Value(Value),
    IfNotExists(Path, Box<SetValue>),
    ListAppend(Box<SetValue>, Box<SetValue>),
    Plus(Box<SetValue>, Box<SetValue>),
    Minus(Box<SetValue>, Box<SetValue>),
}

fn missing_attribute() -> ExprError {
    ExprError("The provided expression refers to an attribute that does not exist in the item".to_owned())
}

fn wrong_type() -> ExprError {
    ExprError("An operand in the update expression has an incorrect data type".to_owned())
}

fn invalid_path() -> ExprError {
    ExprError("The document path provided in the update expression is invalid for update".to_owned())
}

impl SetValue {
    fn eval(&self, item: &Item) -> Result<Value, ExprError> {
        match self {
            SetValue::Path(path) => path.resolve(item).cloned().ok_or_else(missing_attribute),
            SetValue::Value(value) => Ok(value.clone()),
            SetValue::IfNotExists(path, default) => match path.resolve(item) {
                Some(value) => Ok(value.clone()),
                None => default.eval(item),
            },
            SetValue::ListAppend(a, b) => match (a.eval(item)?, b.eval(item)?) {
                (Value::L(mut a), Value::L(b)) => {
                    a.extend(b);
                    Ok(Value::L(a))
                }
                _ => Err(wrong_type()),
            },
            SetValue::Plus(a, b) | SetValue::Minus(a, b) => match (a.eval(item)?, b.eval(item)?) {
                (Value::N(a), Value::N(b)) => {
                    let result = if matches!(self, SetValue::Plus(..)) { a.add(&b) } else { a.sub(&b) };
                    result.map(Value::N).map_err(|e| ExprError(e.to_string()))
                }
                _ => Err(wrong_type()),
            },
        }
    }
}

impl Update {
    /// The paths the update writes, for ReturnValues UPDATED_OLD / UPDATED_NEW.
    pub fn paths(&self) -> Vec<Path> {
        self.actions
            .iter()
            .map(|a| match a {
                UpdateAction::Set(p, _)
                | UpdateAction::Remove(p)
                | UpdateAction::Add(p, _)
                | UpdateAction::Delete(p, _) => p.clone(),
            })
            .collect()
    }

    /// Applies the update. Every SET value is computed from the item as it was before the
    /// update (so `SET a = b, b = a` swaps); list elements are removed by their original
    /// indexes. On error the item may be partly updated: apply to a copy.
    pub fn apply(&self, item: &mut Item) -> Result<(), ExprError> {
        let mut sets = Vec::new();
        for action in &self.actions {
            if let UpdateAction::Set(path, value) = action {
                sets.push((path, value.eval(item)?));
            }
        }
        for (path, value) in sets {
            set_at(item, path, value)?;
        }
        let mut removes: Vec<&Path> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                UpdateAction::Remove(p) => Some(p),
                _ => None,
            })
            .collect();
        // Higher indexes first, so earlier removals do not shift later ones.
        removes.sort_by(|a, b| b.cmp(a));
        for path in removes {
            remove_at(item, path)?;
        }
        for action in &self.actions {
            match action {
                UpdateAction::Add(path, value) => add_at(item, path, value)?,
                UpdateAction::Delete(path, value) => delete_at(item, path, value)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The value at `path`, or `None` if only its last step is missing; an error if the path
/// cannot exist in this item (a missing or non-container parent).
fn get_at<'v>(item: &'v Item, path: &Path) -> Result<Option<&'v Value>, ExprError> {
    let Some((last, parents)) = path.0.split_last() else { return Err(invalid_path()) };
    if parents.is_empty() {
        return match last {
            PathElem::Attr(name) => Ok(item.get(name)),
            PathElem::Index(_) => Err(invalid_path()),
        };
    }
    let parent = Path(parents.to_vec()).resolve(item).ok_or_else(invalid_path)?;
    match (last, parent) {
        (PathElem::Attr(name), Value::M(map)) => Ok(map.get(name)),
        (PathElem::Index(i), Value::L(list)) => Ok(list.get(*i)),
        _ => Err(invalid_path()),
    }
}

/// The container holding the path's last step.
fn parent_mut<'v>(item: &'v mut Item, parents: &[PathElem]) -> Result<&'v mut Value, ExprError> {
    let mut elems = parents.iter();
    let mut current = match elems.next() {
        Some(PathElem::Attr(name)) => item.get_mut(name).ok_or_else(invalid_path)?,
        _ => return Err(invalid_path()),
    };
    for elem in elems {
        current = match (elem, current) {
            (PathElem::Attr(name), Value::M(map)) => map.get_mut(name).ok_or_else(invalid_path)?,
            (PathElem::Index(i), Value::L(list)) => list.get_mut(*i).ok_or_else(invalid_path)?,
            _ => return Err(invalid_path()),
        };
    }
    Ok(current)
}

/// Writes `value` at `path`; an index past a list's end appends.
fn set_at(item: &mut Item, path: &Path, value: Value) -> Result<(), ExprError> {
    let Some((last, parents)) = path.0.split_last() else { return Err(invalid_path()) };
    if parents.is_empty() {
        return match last {
            PathElem::Attr(name) => {
                item.insert(name.clone(), value);
                Ok(())
            }
            PathElem::Index(_) => Err(invalid_path()),
        };
    }
    match (last, parent_mut(item, parents)?) {
        (PathElem::Attr(name), Value::M(map)) => {
            map.insert(name.clone(), value);
        }
        (PathElem::Index(i), Value::L(list)) => match list.get_mut(*i) {
            Some(slot) => *slot = value,
            None => list.push(value),
        },
        _ => return Err(invalid_path()),
    }
    Ok(())
}

/// Removes what is at `path`; nothing to remove is not an error.
fn remove_at(item: &mut Item, path: &Path) -> Result<(), ExprError> {
    let Some((last, parents)) = path.0.split_last() else { return Err(invalid_path()) };
    if parents.is_empty() {
        return match last {
            PathElem::Attr(name) => {
                item.remove(name);
                Ok(())
            }
            PathElem::Index(_) => Err(invalid_path()),
        };
    }
    match (last, parent_mut(item, parents)?) {
        (PathElem::Attr(name), Value::M(map)) => {
            map.remove(name);
        }
        (PathElem::Index(i), Value::L(list)) => {
            if *i < list.len() {
                list.remove(*i);
            }
        }
        _ => return Err(invalid_path()),
    }
    Ok(())
}

fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

fn difference<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

fn add_at(item: &mut Item, path: &Path, value: &Value) -> Result<(), ExprError> {
    let new = match (get_at(item, path)?, value) {
        (None, Value::N(_) | Value::Ss(_) | Value::Ns(_) | Value::Bs(_)) => value.clone(),
        (Some(Value::N(a)), Value::N(b)) => Value::N(a.add(b).map_err(|e| ExprError(e.to_string()))?),
        (Some(Value::Ss(a)), Value::Ss(b)) => Value::Ss(union(a, b)),
        (Some(Value::Ns(a)), Value::Ns(b)) => Value::Ns(union(a, b)),
        (Some(Value::Bs(a)), Value::Bs(b)) => Value::Bs(union(a, b)),
        _ => return Err(wrong_type()),
    };
    set_at(item, path, new)
}

fn delete_at(item: &mut Item, path: &Path, value: &Value) -> Result<(), ExprError> {
    let new = match (get_at(item, path)?, value) {
        (None, _) => return Ok(()),
        (Some(Value::Ss(a)), Value::Ss(b)) => Value::Ss(difference(a, b)),
        (Some(Value::Ns(a)), Value::Ns(b)) => Value::Ns(difference(a, b)),
        (Some(Value::Bs(a)), Value::Bs(b)) => Value::Bs(difference(a, b)),
        _ => return Err(wrong_type()),
    };
    let empty = matches!(&new, Value::Ss(s) if s.is_empty())
        || matches!(&new, Value::Ns(s) if s.is_empty())
        || matches!(&new, Value::Bs(s) if s.is_empty());
    if empty { remove_at(item, path) } else { set_at(item, path, new) }
}
