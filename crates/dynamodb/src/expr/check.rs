//! The checks DynamoDB makes once an expression parses, in the service's order: first a walk
//! in document order (reserved words, list indexes, function names and where functions may
//! appear, repeated update sections), then a validation that resolves placeholders and checks
//! each operator's operands after its children.

use super::condition::{Comparator, Condition, Operand};
use super::syntax::{RawCond, RawElem, RawOperand, RawPath, RawSection};
use super::update::{SetValue, Update, UpdateAction};
use super::{Path, PathElem, Placeholders, is_reserved};
use crate::value::Value;

/// DynamoDB's limits.
const MAX_PATH_DEPTH: usize = 32;
const MAX_OPERATORS: usize = 300;
const MAX_IN_OPERANDS: usize = 100;

const VALID_TYPES: [&str; 10] = ["B", "NULL", "SS", "BOOL", "L", "BS", "N", "NS", "S", "M"];
/// How the service lists "any type" in an operand type error.
const ANY_TYPE: &str = "{NS,SS,L,BS,N,M,B,BOOL,NULL,S}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    AttributeExists,
    AttributeNotExists,
    AttributeType,
    BeginsWith,
    Contains,
    Size,
    IfNotExists,
    ListAppend,
}

impl Function {
    /// Function names are case-sensitive.
    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "attribute_exists" => Function::AttributeExists,
            "attribute_not_exists" => Function::AttributeNotExists,
            "attribute_type" => Function::AttributeType,
            "begins_with" => Function::BeginsWith,
            "contains" => Function::Contains,
            "size" => Function::Size,
            "if_not_exists" => Function::IfNotExists,
            "list_append" => Function::ListAppend,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Function::AttributeExists => "attribute_exists",
            Function::AttributeNotExists => "attribute_not_exists",
            Function::AttributeType => "attribute_type",
            Function::BeginsWith => "begins_with",
            Function::Contains => "contains",
            Function::Size => "size",
            Function::IfNotExists => "if_not_exists",
            Function::ListAppend => "list_append",
        }
    }

    fn in_updates(self) -> bool {
        matches!(self, Function::IfNotExists | Function::ListAppend)
    }

    fn arity(self) -> usize {
        match self {
            Function::AttributeExists | Function::AttributeNotExists | Function::Size => 1,
            _ => 2,
        }
    }

    /// The operand types accepted; `None` for any.
    fn operand_types(self) -> Option<&'static [&'static str]> {
        match self {
            Function::BeginsWith => Some(&["S", "B"]),
            Function::Size => Some(&["S", "B", "SS", "NS", "BS", "L", "M"]),
            Function::ListAppend => Some(&["L"]),
            _ => None,
        }
    }

    /// Whether the first operand may not be repeated as a later one.
    fn distinct_operands(self) -> bool {
        !self.in_updates()
    }
}

fn context_error(name: &str) -> String {
    format!("The function is not allowed to be used this way in an expression; function: {name}")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Condition,
    Update,
}

// ---- The walk in document order.

fn walk_path(path: &RawPath) -> Result<(), String> {
    for elem in &path.0 {
        match elem {
            RawElem::Id(id) if is_reserved(id) => {
                return Err(format!("Attribute name is a reserved keyword; reserved keyword: {id}"));
            }
            RawElem::Index(digits) if index_value(digits).is_none() => {
                return Err(format!("List index is not within the allowable range; index: [{digits}]"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A list index, within the service's range (a 32-bit signed integer).
fn index_value(digits: &str) -> Option<usize> {
    digits.parse::<i32>().ok().map(|i| i as usize)
}

fn walk_operand(op: &RawOperand, category: Category, nesting: usize) -> Result<(), String> {
    match op {
        RawOperand::Path(path) => walk_path(path),
        RawOperand::Value(_) => Ok(()),
        RawOperand::Func(name, args) => {
            let Some(function) = Function::from_name(name) else {
                return Err(format!("Invalid function name; function: {name}"));
            };
            match category {
                Category::Update => {
                    if !function.in_updates() {
                        return Err(format!("The function is not allowed in an update expression; function: {name}"));
                    }
                    if nesting > 0 && function != Function::IfNotExists {
                        return Err(context_error(name));
                    }
                }
                Category::Condition => {
                    if function.in_updates() {
                        return Err(format!("The function is not allowed in a condition expression; function: {name}"));
                    }
                    // At the top a function must be a condition; inside one, only size().
                    if (nesting == 0) == (function == Function::Size) {
                        return Err(context_error(name));
                    }
                }
            }
            args.iter().try_for_each(|a| walk_operand(a, category, nesting + 1))
        }
        RawOperand::Arith(_, a, b) => {
            walk_operand(a, category, nesting + 1)?;
            walk_operand(b, category, nesting + 1)
        }
    }
}

fn walk_condition(cond: &RawCond) -> Result<(), String> {
    let operand = |op: &RawOperand| walk_operand(op, Category::Condition, 1);
    match cond {
        RawCond::Compare(_, a, b) => [a, b].into_iter().try_for_each(operand),
        RawCond::Between(a, b, c) => [a, b, c].into_iter().try_for_each(operand),
        RawCond::In(a, list) => std::iter::once(a).chain(list).try_for_each(operand),
        RawCond::Func(op) => walk_operand(op, Category::Condition, 0),
        RawCond::And(a, b) | RawCond::Or(a, b) => {
            walk_condition(a)?;
            walk_condition(b)
        }
        RawCond::Not(a) | RawCond::Paren(a) => walk_condition(a),
    }
}

// ---- Validation.

/// An operand once placeholders are resolved.
enum Checked {
    Path(Path),
    Value(Value),
    Func(Function, Vec<Checked>),
    Arith(bool, Box<Checked>, Box<Checked>),
}

impl Checked {
    /// The one type this operand can have, if known before evaluation.
    fn known_type(&self) -> Option<&'static str> {
        match self {
            Checked::Path(_) => None,
            Checked::Value(v) => Some(v.type_name()),
            Checked::Func(Function::Size, _) | Checked::Arith(..) => Some("N"),
            Checked::Func(Function::ListAppend, _) => Some("L"),
            Checked::Func(Function::IfNotExists, _) => None,
            Checked::Func(..) => Some("BOOL"),
        }
    }

    fn type_symbols(&self) -> &'static str {
        self.known_type().unwrap_or(ANY_TYPE)
    }
}

struct Validator<'p, 'a> {
    p: &'p mut Placeholders<'a>,
    operators: usize,
}

impl Validator<'_, '_> {
    fn count_operator(&mut self) -> Result<(), String> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(format!("The expression contains too many operators; operator count: {}", self.operators));
        }
        Ok(())
    }

    fn path(&mut self, raw: &RawPath) -> Result<Path, String> {
        if raw.0.len() > MAX_PATH_DEPTH {
            return Err(format!("The document path has too many nesting levels; nesting levels: {}", raw.0.len()));
        }
        let mut elems = Vec::with_capacity(raw.0.len());
        for elem in &raw.0 {
            elems.push(match elem {
                RawElem::Id(id) => PathElem::Attr(id.clone()),
                RawElem::Name(key) => match self.p.name(key) {
                    Some(name) => PathElem::Attr(name.to_owned()),
                    None => {
                        return Err(format!(
                            "An expression attribute name used in the document path is not defined; attribute name: {key}"
                        ));
                    }
                },
                RawElem::Index(digits) => PathElem::Index(index_value(digits).unwrap_or_default()),
            });
        }
        Ok(Path(elems))
    }

    fn value(&mut self, key: &str) -> Result<Value, String> {
        match self.p.value(key) {
            Some(value) => Ok(value.clone()),
            None => {
                Err(format!("An expression attribute value used in expression is not defined; attribute value: {key}"))
            }
        }
    }

    fn operand(&mut self, raw: &RawOperand) -> Result<Checked, String> {
        match raw {
            RawOperand::Path(path) => Ok(Checked::Path(self.path(path)?)),
            RawOperand::Value(key) => Ok(Checked::Value(self.value(key)?)),
            RawOperand::Func(name, args) => {
                let Some(function) = Function::from_name(name) else {
                    return Err(format!("Invalid function name; function: {name}"));
                };
                let args = args.iter().map(|a| self.operand(a)).collect::<Result<Vec<_>, _>>()?;
                check_operands(function.name(), function.arity(), false, &args, function.operand_types())?;
                if function.distinct_operands() {
                    check_distinct(function.name(), &args)?;
                }
                check_function(function, &args)?;
                self.count_operator()?;
                Ok(Checked::Func(function, args))
            }
            RawOperand::Arith(plus, a, b) => {
                let args = [self.operand(a)?, self.operand(b)?];
                check_operands(if *plus { "+" } else { "-" }, 2, false, &args, Some(&["N"]))?;
                self.count_operator()?;
                let [a, b] = args;
                Ok(Checked::Arith(*plus, Box::new(a), Box::new(b)))
            }
        }
    }

    fn condition(&mut self, raw: &RawCond) -> Result<Condition, String> {
        const ORDERED: &[&str] = &["S", "N", "B"];
        let cond = match raw {
            RawCond::Compare(cmp, a, b) => {
                let args = [self.operand(a)?, self.operand(b)?];
                let types = if matches!(cmp, Comparator::Eq | Comparator::Ne) { None } else { Some(ORDERED) };
                check_operands(cmp.symbol(), 2, false, &args, types)?;
                check_distinct(cmp.symbol(), &args)?;
                let [a, b] = args;
                Condition::Compare(*cmp, to_operand(a)?, to_operand(b)?)
            }
            RawCond::Between(a, low, high) => {
                let args = [self.operand(a)?, self.operand(low)?, self.operand(high)?];
                check_operands("BETWEEN", 3, false, &args, Some(ORDERED))?;
                check_distinct("BETWEEN", &args)?;
                if let [_, Checked::Value(low), Checked::Value(high)] = &args {
                    check_bounds(low, high)?;
                }
                let [a, low, high] = args;
                Condition::Between(to_operand(a)?, to_operand(low)?, to_operand(high)?)
            }
            RawCond::In(a, list) => {
                let mut args = vec![self.operand(a)?];
                for op in list {
                    args.push(self.operand(op)?);
                }
                check_distinct("IN", &args)?;
                if args.len() > MAX_IN_OPERANDS + 1 {
                    return Err(format!(
                        "The IN operator is provided with too many operands; number of operands: {}",
                        args.len() - 1
                    ));
                }
                let mut operands = args.into_iter().map(to_operand);
                let first = operands.next().transpose()?.ok_or_else(|| context_error("IN"))?;
                Condition::In(first, operands.collect::<Result<_, _>>()?)
            }
            RawCond::Func(op) => {
                let checked = self.operand(op)?;
                return to_condition(checked);
            }
            RawCond::And(a, b) => Condition::And(Box::new(self.condition(a)?), Box::new(self.condition(b)?)),
            RawCond::Or(a, b) => Condition::Or(Box::new(self.condition(a)?), Box::new(self.condition(b)?)),
            RawCond::Not(a) => Condition::Not(Box::new(self.condition(a)?)),
            RawCond::Paren(a) => return self.condition(a),
        };
        self.count_operator()?;
        Ok(cond)
    }
}

fn check_operands(
    name: &str,
    arity: usize,
    variadic: bool,
    args: &[Checked],
    types: Option<&[&str]>,
) -> Result<(), String> {
    let count_ok = if variadic { args.len() >= arity } else { args.len() == arity };
    if !count_ok {
        return Err(format!(
            "Incorrect number of operands for operator or function; operator or function: {name}, number of operands: {}",
            args.len()
        ));
    }
    if let Some(types) = types {
        for arg in args {
            if let Some(t) = arg.known_type().filter(|t| !types.contains(t)) {
                return Err(format!(
                    "Incorrect operand type for operator or function; operator or function: {name}, operand type: {t}"
                ));
            }
        }
    }
    Ok(())
}

fn check_distinct(name: &str, args: &[Checked]) -> Result<(), String> {
    let Some((Checked::Path(first), rest)) = args.split_first() else { return Ok(()) };
    if rest.iter().any(|a| matches!(a, Checked::Path(p) if p == first)) {
        return Err(format!(
            "The first operand must be distinct from the remaining operands for this operator or function; operator: {name}, first operand: {first}"
        ));
    }
    Ok(())
}

fn check_function(function: Function, args: &[Checked]) -> Result<(), String> {
    let requires_path =
        matches!(function, Function::AttributeExists | Function::AttributeNotExists | Function::IfNotExists);
    if requires_path && !matches!(args.first(), Some(Checked::Path(_))) {
        return Err(format!(
            "Operator or function requires a document path; operator or function: {}",
            function.name()
        ));
    }
    if function == Function::AttributeType {
        let type_name = match args.get(1) {
            Some(Checked::Value(Value::S(s))) => s,
            other => {
                return Err(format!(
                    "Incorrect operand type for operator or function; operator or function: attribute_type, operand type: {}",
                    other.map_or(ANY_TYPE, Checked::type_symbols)
                ));
            }
        };
        if !VALID_TYPES.contains(&type_name.as_str()) {
            return Err(format!(
                "Invalid attribute type name found; type: {type_name}, valid types: {{{}}}",
                VALID_TYPES.join(",")
            ));
        }
    }
    Ok(())
}

/// How the service prints a value in BETWEEN's messages.
fn describe(value: &Value) -> String {
    let body = match value {
        Value::S(s) => s.clone(),
        Value::N(n) => n.to_string(),
        Value::B(b) => format!("{b:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Null => "true".to_owned(),
        Value::Ss(s) => format!("[{}]", s.join(", ")),
        Value::Ns(s) => format!("[{}]", s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    };
    format!("AttributeValue: {{{}:{body}}}", value.type_name())
}

fn check_bounds(low: &Value, high: &Value) -> Result<(), String> {
    let describe_both = || format!("lower bound operand: {}, upper bound operand: {}", describe(low), describe(high));
    if low.type_name() != high.type_name() {
        return Err(format!(
            "The BETWEEN operator requires same data type for lower and upper bounds; {}",
            describe_both()
        ));
    }
    if low.compare(high) == Some(std::cmp::Ordering::Greater) {
        return Err(format!(
            "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; {}",
            describe_both()
        ));
    }
    Ok(())
}

/// A condition operand: a path, a value, or `size(...)` (the walk refused other functions).
fn to_operand(checked: Checked) -> Result<Operand, String> {
    match checked {
        Checked::Path(p) => Ok(Operand::Path(p)),
        Checked::Value(v) => Ok(Operand::Value(v)),
        Checked::Func(Function::Size, args) => {
            let arg = args.into_iter().next().ok_or_else(|| context_error("size"))?;
            Ok(Operand::Size(Box::new(to_operand(arg)?)))
        }
        Checked::Func(f, _) => Err(context_error(f.name())),
        Checked::Arith(plus, ..) => Err(context_error(if plus { "+" } else { "-" })),
    }
}

/// A function standing as a condition.
fn to_condition(checked: Checked) -> Result<Condition, String> {
    let Checked::Func(function, args) = checked else { return Err(context_error("")) };
    let mut args = args.into_iter();
    let mut next = || args.next().ok_or_else(|| context_error(function.name())).and_then(to_operand);
    Ok(match function {
        Function::AttributeExists | Function::AttributeNotExists => {
            let Operand::Path(path) = next()? else { return Err(context_error(function.name())) };
            if function == Function::AttributeExists {
                Condition::AttributeExists(path)
            } else {
                Condition::AttributeNotExists(path)
            }
        }
        Function::AttributeType => {
            let a = next()?;
            let Operand::Value(Value::S(t)) = next()? else { return Err(context_error(function.name())) };
            Condition::AttributeType(a, t)
        }
        Function::BeginsWith => Condition::BeginsWith(next()?, next()?),
        Function::Contains => Condition::Contains(next()?, next()?),
        Function::Size | Function::IfNotExists | Function::ListAppend => return Err(context_error(function.name())),
    })
}

fn to_set_value(checked: Checked) -> Result<SetValue, String> {
    Ok(match checked {
        Checked::Path(p) => SetValue::Path(p),
        Checked::Value(v) => SetValue::Value(v),
        Checked::Arith(plus, a, b) => {
            let (a, b) = (Box::new(to_set_value(*a)?), Box::new(to_set_value(*b)?));
            if plus { SetValue::Plus(a, b) } else { SetValue::Minus(a, b) }
        }
        Checked::Func(function, args) => {
            let mut args = args.into_iter();
            let (Some(a), Some(b)) = (args.next(), args.next()) else { return Err(context_error(function.name())) };
            match (function, a) {
                (Function::IfNotExists, Checked::Path(path)) => SetValue::IfNotExists(path, Box::new(to_set_value(b)?)),
                (Function::ListAppend, a) => {
                    SetValue::ListAppend(Box::new(to_set_value(a)?), Box::new(to_set_value(b)?))
                }
                _ => return Err(context_error(function.name())),
            }
        }
    })
}

/// Refuses a path that overlaps (is, contains or lies within) or conflicts with (indexes a map
/// as a list, or the reverse) one already used. The earlier path is "path one", as DynamoDB
/// reports it.
fn check_overlap(earlier: &[Path], path: &Path) -> Result<(), String> {
    for other in earlier {
        let mut clash = "overlap";
        let mut disjoint = false;
        for (a, b) in path.0.iter().zip(&other.0) {
            match (a, b) {
                (PathElem::Attr(x), PathElem::Attr(y)) if x == y => continue,
                (PathElem::Index(x), PathElem::Index(y)) if x == y => continue,
                (PathElem::Attr(_), PathElem::Attr(_)) | (PathElem::Index(_), PathElem::Index(_)) => disjoint = true,
                _ => clash = "conflict",
            }
            break;
        }
        if !disjoint {
            return Err(format!(
                "Two document paths {clash} with each other; must remove or rewrite one of these paths; path one: {other}, path two: {path}"
            ));
        }
    }
    Ok(())
}

pub fn condition(raw: &RawCond, p: &mut Placeholders) -> Result<Condition, String> {
    walk_condition(raw)?;
    Validator { p, operators: 0 }.condition(raw)
}

pub fn projection(raw: &[RawPath], p: &mut Placeholders) -> Result<Vec<Path>, String> {
    raw.iter().try_for_each(walk_path)?;
    let mut validator = Validator { p, operators: 0 };
    let mut paths: Vec<Path> = Vec::with_capacity(raw.len());
    for path in raw {
        let path = validator.path(path)?;
        check_overlap(&paths, &path)?;
        paths.push(path);
    }
    Ok(paths)
}

pub fn update(raw: &[RawSection], p: &mut Placeholders) -> Result<Update, String> {
    let mut seen: [bool; 4] = [false; 4];
    for section in raw {
        let (slot, name) = match section {
            RawSection::Set(actions) => {
                for (path, value) in actions {
                    walk_path(path)?;
                    walk_operand(value, Category::Update, 0)?;
                }
                (0, "SET")
            }
            RawSection::Remove(paths) => {
                paths.iter().try_for_each(walk_path)?;
                (1, "REMOVE")
            }
            RawSection::Add(actions) => {
                actions.iter().try_for_each(|(path, _)| walk_path(path))?;
                (2, "ADD")
            }
            RawSection::Delete(actions) => {
                actions.iter().try_for_each(|(path, _)| walk_path(path))?;
                (3, "DELETE")
            }
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(format!("The \"{name}\" section can only be used once in an update expression;"));
        }
    }

    let mut validator = Validator { p, operators: 0 };
    let raw_paths = raw.iter().flat_map(|section| -> Vec<&RawPath> {
        match section {
            RawSection::Set(actions) => actions.iter().map(|(path, _)| path).collect(),
            RawSection::Remove(paths) => paths.iter().collect(),
            RawSection::Add(actions) | RawSection::Delete(actions) => actions.iter().map(|(path, _)| path).collect(),
        }
    });
    let mut paths: Vec<Path> = Vec::new();
    for raw_path in raw_paths {
        let path = validator.path(raw_path)?;
        check_overlap(&paths, &path)?;
        paths.push(path);
    }

    let mut paths = paths.into_iter();
    // The paths come in the actions' order; there is one per action.
    let mut next_path = || paths.next().ok_or_else(|| "The document path has no element(s);".to_owned());
    let mut actions = Vec::new();
    for section in raw {
        match section {
            RawSection::Set(set) => {
                for (_, value) in set {
                    let path = next_path()?;
                    let value = validator.operand(value)?;
                    actions.push(UpdateAction::Set(path, to_set_value(value)?));
                }
            }
            RawSection::Remove(removes) => {
                for _ in removes {
                    actions.push(UpdateAction::Remove(next_path()?));
                }
            }
            RawSection::Add(set) | RawSection::Delete(set) => {
                let add = matches!(section, RawSection::Add(_));
                for (_, key) in set {
                    let path = next_path()?;
                    let value = validator.value(key)?;
                    check_set_operand(if add { "ADD" } else { "DELETE" }, &value)?;
                    actions.push(if add { UpdateAction::Add(path, value) } else { UpdateAction::Delete(path, value) });
                }
            }
        }
    }
    Ok(Update { actions })
}

/// ADD takes a number or a set; DELETE a set.
fn check_set_operand(operator: &str, value: &Value) -> Result<(), String> {
    let allowed = match value {
        Value::Ss(_) | Value::Ns(_) | Value::Bs(_) => true,
        Value::N(_) => operator == "ADD",
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let type_name = match value {
        Value::S(_) => "STRING",
        Value::N(_) => "NUMBER",
        Value::B(_) => "BINARY",
        Value::Bool(_) => "BOOLEAN",
        Value::Null => "NULL",
        Value::L(_) => "LIST",
        Value::M(_) => "MAP",
        Value::Ss(_) => "STRING_SET",
        Value::Ns(_) => "NUMBER_SET",
        Value::Bs(_) => "BINARY_SET",
    };
    Err(format!(
        "Incorrect operand type for operator or function; operator: {operator}, operand type: {type_name}, typeSet: ALLOWED_FOR_{operator}_OPERAND"
    ))
}
