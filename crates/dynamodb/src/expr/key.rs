//! KeyConditionExpression: a condition that must reduce to an equality on the partition key
//! and at most one condition on the sort key.

use super::condition::{Comparator, Condition, Operand};
use super::{ExprError, Placeholders, parse_condition};
use crate::value::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyCondition {
    pub hash: Value,
    pub range: Option<RangeCondition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RangeCondition {
    Eq(Value),
    Lt(Value),
    Le(Value),
    Gt(Value),
    Ge(Value),
    Between(Value, Value),
    BeginsWith(Value),
}

fn invalid(detail: &str) -> ExprError {
    ExprError(format!("Invalid condition in KeyConditionExpression: {detail}"))
}

/// One key attribute's condition, before the key schema is consulted.
struct KeyTerm {
    name: String,
    condition: RangeCondition,
}

fn collect(cond: &Condition, terms: &mut Vec<KeyTerm>) -> Result<(), ExprError> {
    let operator = |name: &str| ExprError(format!("Invalid operator used in KeyConditionExpression: {name}"));
    let (op_name, operands): (&str, Vec<&Operand>) = match cond {
        Condition::And(a, b) => {
            collect(a, terms)?;
            return collect(b, terms);
        }
        Condition::Or(..) => return Err(operator("OR")),
        Condition::Not(..) => return Err(operator("NOT")),
        Condition::In(..) => return Err(operator("IN")),
        Condition::Compare(Comparator::Ne, ..) => return Err(operator("<>")),
        Condition::AttributeExists(_) => return Err(operator("attribute_exists")),
        Condition::AttributeNotExists(_) => return Err(operator("attribute_not_exists")),
        Condition::AttributeType(..) => return Err(operator("attribute_type")),
        Condition::Contains(..) => return Err(operator("contains")),
        Condition::Compare(cmp, a, b) => (cmp.symbol(), vec![a, b]),
        Condition::Between(a, low, high) => ("BETWEEN", vec![a, low, high]),
        Condition::BeginsWith(a, prefix) => ("begins_with", vec![a, prefix]),
    };
    let mut name: Option<&str> = None;
    let mut swapped = false;
    let mut values = Vec::new();
    for operand in operands {
        match operand {
            Operand::Path(path) => {
                if name.is_some() {
                    return Err(invalid("Multiple attribute names used in one condition"));
                }
                if path.0.len() > 1 {
                    return Err(ExprError(
                        "KeyConditionExpressions cannot have conditions on nested attributes".to_owned(),
                    ));
                }
                name = Some(path.head());
            }
            Operand::Value(value) => {
                if name.is_none() {
                    if matches!(cond, Condition::Between(..) | Condition::BeginsWith(..)) {
                        return Err(invalid(&format!(
                            "{op_name} operator must have the key attribute as its first operand"
                        )));
                    }
                    swapped = true;
                }
                values.push(value.clone());
            }
            Operand::Size(_) => {
                return Err(ExprError("KeyConditionExpressions cannot contain nested operations".to_owned()));
            }
        }
    }
    let Some(name) = name else { return Err(invalid("No key attribute specified")) };
    if terms.iter().any(|t| t.name == name) {
        return Err(ExprError("KeyConditionExpressions must only contain one condition per key".to_owned()));
    }
    let mut values = values.into_iter();
    let Some(first) = values.next() else { return Err(invalid("No key attribute specified")) };
    let condition = match cond {
        Condition::Between(..) => RangeCondition::Between(first, values.next().unwrap_or(Value::Null)),
        Condition::BeginsWith(..) => RangeCondition::BeginsWith(first),
        Condition::Compare(cmp, ..) => match if swapped { cmp.swapped() } else { *cmp } {
            Comparator::Lt => RangeCondition::Lt(first),
            Comparator::Le => RangeCondition::Le(first),
            Comparator::Gt => RangeCondition::Gt(first),
            Comparator::Ge => RangeCondition::Ge(first),
            _ => RangeCondition::Eq(first),
        },
        _ => return Err(invalid("No key attribute specified")),
    };
    terms.push(KeyTerm { name: name.to_owned(), condition });
    Ok(())
}

/// Parses a KeyConditionExpression against the key schema of the table or index queried.
pub fn parse_key_condition(
    text: &str,
    p: &mut Placeholders,
    hash_key: &str,
    range_key: Option<&str>,
) -> Result<KeyCondition, ExprError> {
    let cond = parse_condition(text, "KeyConditionExpression", p)?;
    let mut terms = Vec::new();
    collect(&cond, &mut terms)?;
    let not_supported = || ExprError("Query key condition not supported".to_owned());
    let missed = |name: &str| ExprError(format!("Query condition missed key schema element: {name}"));
    let schema_size = if range_key.is_some() { 2 } else { 1 };
    if terms.len() > schema_size {
        return Err(not_supported());
    }
    let Some(hash_at) = terms.iter().position(|t| t.name == hash_key) else { return Err(missed(hash_key)) };
    let hash = match terms.remove(hash_at).condition {
        RangeCondition::Eq(value) => value,
        _ => return Err(not_supported()),
    };
    let range = match terms.pop() {
        None => None,
        Some(term) if Some(term.name.as_str()) == range_key => Some(term.condition),
        Some(_) => return Err(missed(range_key.unwrap_or(hash_key))),
    };
    Ok(KeyCondition { hash, range })
}
