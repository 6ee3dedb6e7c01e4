//! The pre-expression parameters (Expected, QueryFilter/ScanFilter, KeyConditions,
//! AttributeUpdates, AttributesToGet), converted to the expression AST so that one evaluator
//! serves both. The wire layer fills these plain structs.

use super::condition::{Comparator, Condition, Operand};
use super::key::{KeyCondition, RangeCondition};
use super::update::{SetValue, Update, UpdateAction};
use super::{ExprError, Path};
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComparisonOperator {
    Eq,
    Ne,
    Le,
    Lt,
    Ge,
    Gt,
    NotNull,
    Null,
    Contains,
    NotContains,
    BeginsWith,
    In,
    Between,
}

impl ComparisonOperator {
    const ALL: [ComparisonOperator; 13] = [
        ComparisonOperator::Eq,
        ComparisonOperator::Ne,
        ComparisonOperator::Le,
        ComparisonOperator::Lt,
        ComparisonOperator::Ge,
        ComparisonOperator::Gt,
        ComparisonOperator::NotNull,
        ComparisonOperator::Null,
        ComparisonOperator::Contains,
        ComparisonOperator::NotContains,
        ComparisonOperator::BeginsWith,
        ComparisonOperator::In,
        ComparisonOperator::Between,
    ];

    /// The operator named as on the wire (`EQ`, `BEGINS_WITH`, ...).
    pub fn parse(name: &str) -> Option<ComparisonOperator> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ComparisonOperator::Eq => "EQ",
            ComparisonOperator::Ne => "NE",
            ComparisonOperator::Le => "LE",
            ComparisonOperator::Lt => "LT",
            ComparisonOperator::Ge => "GE",
            ComparisonOperator::Gt => "GT",
            ComparisonOperator::NotNull => "NOT_NULL",
            ComparisonOperator::Null => "NULL",
            ComparisonOperator::Contains => "CONTAINS",
            ComparisonOperator::NotContains => "NOT_CONTAINS",
            ComparisonOperator::BeginsWith => "BEGINS_WITH",
            ComparisonOperator::In => "IN",
            ComparisonOperator::Between => "BETWEEN",
        }
    }

    /// The value types the operator accepts.
    fn types(self) -> &'static [&'static str] {
        match self {
            ComparisonOperator::Eq | ComparisonOperator::Ne => &["S", "N", "B", "SS", "NS", "BS"],
            ComparisonOperator::BeginsWith => &["S", "B"],
            ComparisonOperator::NotNull | ComparisonOperator::Null => &[],
            _ => &["S", "N", "B"],
        }
    }
}

/// One attribute's condition in QueryFilter, ScanFilter or KeyConditions.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeCondition {
    pub operator: ComparisonOperator,
    pub values: Vec<Value>,
}

/// One attribute's entry in Expected.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectedAttribute {
    pub exists: Option<bool>,
    pub value: Option<Value>,
    pub operator: Option<ComparisonOperator>,
    pub values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConditionalOperator {
    #[default]
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttributeAction {
    #[default]
    Put,
    Add,
    Delete,
}

/// One attribute's entry in AttributeUpdates.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdate {
    pub action: AttributeAction,
    pub value: Option<Value>,
}

fn invalid(detail: impl std::fmt::Display) -> ExprError {
    ExprError(format!("One or more parameter values were invalid: {detail}"))
}

fn to_condition(name: &str, cond: &AttributeCondition) -> Result<Condition, ExprError> {
    use ComparisonOperator as Op;
    let op = cond.operator;
    let count = cond.values.len();
    let count_ok = match op {
        Op::Null | Op::NotNull => count == 0,
        Op::Between => count == 2,
        Op::In => count >= 1,
        _ => count == 1,
    };
    if !count_ok {
        return Err(invalid(format!("Invalid number of argument(s) for the {} ComparisonOperator", op.name())));
    }
    if let Some(first) = cond.values.first()
        && cond.values.iter().any(|v| v.type_name() != first.type_name())
    {
        return Err(invalid("AttributeValues inside AttributeValueList must be of same type"));
    }
    if let Some(v) = cond.values.iter().find(|v| !op.types().contains(&v.type_name())) {
        return Err(invalid(format!(
            "ComparisonOperator {} is not valid for {} AttributeValue type",
            op.name(),
            v.type_name()
        )));
    }
    let path = || Operand::Path(Path::attr(name));
    let mut values = cond.values.iter().cloned().map(Operand::Value);
    let mut value = || values.next().unwrap_or(Operand::Value(Value::Null));
    let compare = |c: Comparator, v: Operand| Condition::Compare(c, path(), v);
    Ok(match op {
        Op::Eq => compare(Comparator::Eq, value()),
        Op::Ne => compare(Comparator::Ne, value()),
        Op::Le => compare(Comparator::Le, value()),
        Op::Lt => compare(Comparator::Lt, value()),
        Op::Ge => compare(Comparator::Ge, value()),
        Op::Gt => compare(Comparator::Gt, value()),
        Op::NotNull => Condition::AttributeExists(Path::attr(name)),
        Op::Null => Condition::AttributeNotExists(Path::attr(name)),
        Op::Contains => Condition::Contains(path(), value()),
        Op::NotContains => Condition::Not(Box::new(Condition::Contains(path(), value()))),
        Op::BeginsWith => Condition::BeginsWith(path(), value()),
        Op::In => Condition::In(path(), cond.values.iter().cloned().map(Operand::Value).collect()),
        Op::Between => {
            if let [low, high] = cond.values.as_slice()
                && low.compare(high) == Some(std::cmp::Ordering::Greater)
            {
                return Err(ExprError(
                    "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound"
                        .to_owned(),
                ));
            }
            Condition::Between(path(), value(), value())
        }
    })
}

fn combine(conditions: Vec<Condition>, op: ConditionalOperator) -> Option<Condition> {
    conditions.into_iter().reduce(|a, b| match op {
        ConditionalOperator::And => Condition::And(Box::new(a), Box::new(b)),
        ConditionalOperator::Or => Condition::Or(Box::new(a), Box::new(b)),
    })
}

/// QueryFilter or ScanFilter; `None` when empty.
pub fn filter(
    filter: &[(String, AttributeCondition)],
    op: ConditionalOperator,
) -> Result<Option<Condition>, ExprError> {
    let conditions = filter.iter().map(|(name, c)| to_condition(name, c)).collect::<Result<Vec<_>, _>>()?;
    Ok(combine(conditions, op))
}

/// Expected; `None` when empty.
pub fn expected(
    expected: &[(String, ExpectedAttribute)],
    op: ConditionalOperator,
) -> Result<Option<Condition>, ExprError> {
    let mut conditions = Vec::with_capacity(expected.len());
    for (name, e) in expected {
        if e.values.is_some() && e.value.is_some() {
            return Err(invalid(format!("Value and AttributeValueList cannot be used together for Attribute: {name}")));
        }
        let condition = match (e.operator, e.exists) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "Exists and ComparisonOperator cannot be used together for Attribute: {name}"
                )));
            }
            (Some(operator), None) => {
                let values = match (&e.values, &e.value) {
                    (Some(values), _) => values.clone(),
                    (None, Some(value)) => vec![value.clone()],
                    (None, None) if matches!(operator, ComparisonOperator::Null | ComparisonOperator::NotNull) => {
                        Vec::new()
                    }
                    (None, None) => {
                        return Err(invalid(format!(
                            "Value or AttributeValueList must be used with ComparisonOperator: {} for Attribute: {name}",
                            operator.name()
                        )));
                    }
                };
                to_condition(name, &AttributeCondition { operator, values })?
            }
            (None, exists) => {
                if e.values.is_some() {
                    return Err(invalid(format!(
                        "AttributeValueList can only be used with a ComparisonOperator for Attribute: {name}"
                    )));
                }
                match (exists, &e.value) {
                    (Some(false), None) => Condition::AttributeNotExists(Path::attr(name)),
                    (Some(false), Some(_)) => {
                        return Err(invalid(format!(
                            "Value cannot be used when Exists is false for Attribute: {name}"
                        )));
                    }
                    (_, Some(value)) => Condition::Compare(
                        Comparator::Eq,
                        Operand::Path(Path::attr(name)),
                        Operand::Value(value.clone()),
                    ),
                    (_, None) => {
                        let shown = if exists.is_some() { "true" } else { "null" };
                        return Err(invalid(format!(
                            "Value must be provided when Exists is {shown} for Attribute: {name}"
                        )));
                    }
                }
            }
        };
        conditions.push(condition);
    }
    Ok(combine(conditions, op))
}

/// KeyConditions, checked against the key schema as Query does.
pub fn key_conditions(
    conditions: &[(String, AttributeCondition)],
    hash_key: &str,
    range_key: Option<&str>,
) -> Result<KeyCondition, ExprError> {
    for (name, c) in conditions {
        to_condition(name, c)?;
    }
    let not_supported = || ExprError("Query key condition not supported".to_owned());
    let missed = |name: &str| ExprError(format!("Query condition missed key schema element: {name}"));
    if conditions.len() > if range_key.is_some() { 2 } else { 1 } {
        return Err(not_supported());
    }
    let Some((_, hash)) = conditions.iter().find(|(name, _)| name == hash_key) else { return Err(missed(hash_key)) };
    let hash = match (hash.operator, hash.values.as_slice()) {
        (ComparisonOperator::Eq, [value]) => value.clone(),
        _ => return Err(not_supported()),
    };
    let Some((name, range)) = conditions.iter().find(|(name, _)| name != hash_key) else {
        return Ok(KeyCondition { hash, range: None });
    };
    if Some(name.as_str()) != range_key {
        return Err(missed(range_key.unwrap_or(hash_key)));
    }
    let one = || range.values.first().cloned().ok_or_else(not_supported);
    let range = match range.operator {
        ComparisonOperator::Eq => RangeCondition::Eq(one()?),
        ComparisonOperator::Lt => RangeCondition::Lt(one()?),
        ComparisonOperator::Le => RangeCondition::Le(one()?),
        ComparisonOperator::Gt => RangeCondition::Gt(one()?),
        ComparisonOperator::Ge => RangeCondition::Ge(one()?),
        ComparisonOperator::BeginsWith => RangeCondition::BeginsWith(one()?),
        ComparisonOperator::Between => match range.values.as_slice() {
            [low, high] => RangeCondition::Between(low.clone(), high.clone()),
            _ => return Err(not_supported()),
        },
        _ => return Err(not_supported()),
    };
    Ok(KeyCondition { hash, range: Some(range) })
}

/// AttributeUpdates. ADD of a list appends to it, as the legacy API does.
pub fn attribute_updates(updates: &[(String, AttributeUpdate)]) -> Result<Update, ExprError> {
    let mut actions = Vec::with_capacity(updates.len());
    for (name, update) in updates {
        let path = Path::attr(name);
        actions.push(match (update.action, &update.value) {
            (AttributeAction::Delete, None) => UpdateAction::Remove(path),
            (_, None) => return Err(invalid("Only DELETE action is allowed when no attribute value is specified")),
            (AttributeAction::Put, Some(value)) => UpdateAction::Set(path, SetValue::Value(value.clone())),
            (AttributeAction::Add, Some(list @ Value::L(_))) => UpdateAction::Set(
                path.clone(),
                SetValue::ListAppend(
                    Box::new(SetValue::IfNotExists(path, Box::new(SetValue::Value(Value::L(Vec::new()))))),
                    Box::new(SetValue::Value(list.clone())),
                ),
            ),
            (AttributeAction::Add, Some(value @ (Value::N(_) | Value::Ss(_) | Value::Ns(_) | Value::Bs(_)))) => {
                UpdateAction::Add(path, value.clone())
            }
            (AttributeAction::Add, Some(value)) => {
                return Err(invalid(format!("ADD action is not supported for the type {}", value.type_name())));
            }
            (AttributeAction::Delete, Some(value @ (Value::Ss(_) | Value::Ns(_) | Value::Bs(_)))) => {
                UpdateAction::Delete(path, value.clone())
            }
            (AttributeAction::Delete, Some(value)) => {
                return Err(invalid(format!(
                    "DELETE action with value is not supported for the type {}",
                    value.type_name()
                )));
            }
        });
    }
    Ok(Update { actions })
}

/// AttributesToGet: top-level attributes, by name (dots are part of the name).
pub fn attributes_to_get(names: &[String]) -> Vec<Path> {
    names.iter().map(|n| Path::attr(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::number::Number;
    use crate::value::Item;

    fn n(x: &str) -> Value {
        Value::N(Number::parse(x).expect(x))
    }

    fn cond(op: ComparisonOperator, values: Vec<Value>) -> AttributeCondition {
        AttributeCondition { operator: op, values }
    }

    #[test]
    fn filters_and_expected() {
        let item: Item = [("a".to_owned(), n("5"))].into_iter().collect();
        let f = filter(
            &[
                ("a".into(), cond(ComparisonOperator::Between, vec![n("1"), n("9")])),
                ("b".into(), cond(ComparisonOperator::Null, vec![])),
            ],
            ConditionalOperator::And,
        )
        .expect("filter")
        .expect("some");
        assert!(f.eval(&item));
        let e = expected(
            &[("a".into(), ExpectedAttribute { value: Some(n("6")), ..Default::default() })],
            ConditionalOperator::Or,
        )
        .expect("expected")
        .expect("some");
        assert!(!e.eval(&item));
        assert_eq!(
            filter(&[("a".into(), cond(ComparisonOperator::Eq, vec![]))], ConditionalOperator::And)
                .expect_err("count")
                .0,
            "One or more parameter values were invalid: Invalid number of argument(s) for the EQ ComparisonOperator"
        );
        assert_eq!(
            expected(
                &[("a".into(), ExpectedAttribute { exists: Some(true), ..Default::default() })],
                ConditionalOperator::And
            )
            .expect_err("no value")
            .0,
            "One or more parameter values were invalid: Value must be provided when Exists is true for Attribute: a"
        );
        assert_eq!(
            filter(&[("a".into(), cond(ComparisonOperator::Lt, vec![Value::Bool(true)]))], ConditionalOperator::And)
                .expect_err("type")
                .0,
            "One or more parameter values were invalid: ComparisonOperator LT is not valid for BOOL AttributeValue type"
        );
    }

    #[test]
    fn keys_and_updates() {
        let k = key_conditions(
            &[
                ("sk".into(), cond(ComparisonOperator::Ge, vec![n("2")])),
                ("pk".into(), cond(ComparisonOperator::Eq, vec![n("1")])),
            ],
            "pk",
            Some("sk"),
        )
        .expect("keys");
        assert_eq!(k, KeyCondition { hash: n("1"), range: Some(RangeCondition::Ge(n("2"))) });
        assert_eq!(
            key_conditions(&[("sk".into(), cond(ComparisonOperator::Eq, vec![n("1")]))], "pk", Some("sk"))
                .expect_err("missed")
                .0,
            "Query condition missed key schema element: pk"
        );
        let update = attribute_updates(&[
            ("l".into(), AttributeUpdate { action: AttributeAction::Add, value: Some(Value::L(vec![n("1")])) }),
            ("c".into(), AttributeUpdate { action: AttributeAction::Add, value: Some(n("2")) }),
            ("gone".into(), AttributeUpdate { action: AttributeAction::Delete, value: None }),
        ])
        .expect("updates");
        let mut item: Item = [("gone".to_owned(), n("1"))].into_iter().collect();
        update.apply(&mut item).expect("apply");
        assert_eq!(item["l"], Value::L(vec![n("1")]));
        assert_eq!(item["c"], n("2"));
        assert!(!item.contains_key("gone"));
        assert_eq!(
            attribute_updates(&[(
                "s".into(),
                AttributeUpdate { action: AttributeAction::Add, value: Some(Value::Null) }
            )])
            .expect_err("add null")
            .0,
            "One or more parameter values were invalid: ADD action is not supported for the type NULL"
        );
        assert_eq!(attributes_to_get(&["a.b".into()]), vec![Path::attr("a.b")]);
    }
}
