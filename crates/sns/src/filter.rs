//! Subscription filter policies: the JSON language that decides which published messages a
//! subscription receives, matched against the message attributes or against the message body.
//!
//! The semantics are those of the SNS developer guide (subscription filter policies, filter policy
//! constraints, string and numeric value matching, key matching, AND/OR logic). SNS compiles
//! policies with the rule language EventBridge also uses (event-ruler), and its validation errors
//! are that compiler's texts, which [`FilterPolicy::parse`] reproduces without the JSON position
//! (`\n at [Source: ...; line: 1, column: N]`) SNS appends to some of them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::{Bound, RangeBounds};
use std::slice;

use serde_json::{Map, Value};
use sqs::{AttributeValue, MessageAttribute};

/// The most value combinations a policy may have (see [`compile`]).
const MAX_COMBINATIONS: u64 = 150;
/// The most top-level keys one `$or` branch of a policy may use.
const MAX_KEYS: usize = 5;
/// Operator names: an `"$or"` array whose objects use one is an ordinary key, not alternatives.
const RESERVED: &[&str] = &[
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
    "=",
    "<",
    "<=",
    ">",
    ">=",
];
const ONE_KEY: &str = "Only one key allowed in match expression";
/// SNS says this of any extra key next to `numeric` or `anything-but`, not only of numeric terms.
const TOO_MANY_ELEMENTS: &str = "Too many elements in numeric expression";

/// What a policy is matched against: the subscription's `FilterPolicyScope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    MessageAttributes,
    MessageBody,
}

/// A parsed, validated filter policy.
#[derive(Clone, Debug)]
pub struct FilterPolicy {
    scope: Scope,
    rule: Rule,
}

impl FilterPolicy {
    /// Parses and validates a policy document. The error is SNS's message text that follows
    /// "Invalid parameter: FilterPolicy: " in the InvalidParameter error (the caller adds that
    /// prefix). One exception: SNS words the nesting error as "Invalid parameter: Filter policy
    /// scope MessageAttributes does not support nested filter policy", without "FilterPolicy: ".
    pub fn parse(document: &str, scope: Scope) -> Result<FilterPolicy, String> {
        let policy: Value = serde_json::from_str(document).map_err(|error| error.to_string())?;
        let Value::Object(root) = policy else { return Err("Filter is not an object".into()) };
        // `{}` filters nothing; only nested objects must have keys.
        if root.is_empty() {
            return Ok(FilterPolicy { scope, rule: Rule::default() });
        }
        // SNS reports syntax errors before it looks at the scope and the limits.
        let compiled = compile(&root, "", 1)?;
        if scope == Scope::MessageAttributes && compiled.nested {
            return Err("Filter policy scope MessageAttributes does not support nested filter policy".into());
        }
        if compiled.keys > MAX_KEYS {
            return Err(format!("Filter policy can not have more than {MAX_KEYS} keys"));
        }
        if compiled.combinations > MAX_COMBINATIONS {
            return Err("Filter policy is too complex".into());
        }
        Ok(FilterPolicy { scope, rule: compiled.rule })
    }

    /// Whether a published message passes: on its message attributes (attribute scope) or on its
    /// body parsed as JSON (body scope; a body that is not a JSON object matches nothing).
    pub fn matches(&self, attributes: &[MessageAttribute], body: &str) -> bool {
        if self.rule.is_empty() {
            return true;
        }
        let parsed_body;
        let fields = match self.scope {
            Scope::MessageAttributes => attribute_fields(attributes),
            Scope::MessageBody => {
                let Ok(body @ Value::Object(_)) = serde_json::from_str(body) else { return false };
                parsed_body = body;
                let mut fields = Fields::new();
                flatten(&parsed_body, "", &mut fields);
                fields
            }
        };
        // The guide: a message without attributes matches no policy, not even `"exists": false`.
        !fields.is_empty() && self.rule.matches(&fields)
    }
}

/// Conditions that must all hold: one per key, and one alternative of each `$or` group.
#[derive(Clone, Debug, Default)]
struct Rule {
    keys: Vec<Key>,
    any_of: Vec<Vec<Rule>>,
}

impl Rule {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.any_of.is_empty()
    }

    fn matches(&self, fields: &Fields<'_>) -> bool {
        self.keys.iter().all(|key| key.matches(fields.get(&key.path).map_or(&[], Vec::as_slice)))
            && self.any_of.iter().all(|alternatives| alternatives.iter().any(|rule| rule.matches(fields)))
    }
}

/// A key's conditions, of which one must hold. Nested keys are joined with dots, as SNS flattens
/// both policy and body: `{"a": {"b": ...}}` and `{"a.b": ...}` name the same key.
#[derive(Clone, Debug)]
struct Key {
    path: String,
    conditions: Vec<Condition>,
}

impl Key {
    fn matches(&self, values: &[Scalar<'_>]) -> bool {
        self.conditions.iter().any(|condition| match condition {
            // The guide: to exist, a key needs a value that is not null.
            Condition::Exists(exists) => values.iter().any(|value| *value != Scalar::Null) == *exists,
            Condition::Matches(pattern) => values.iter().any(|value| pattern.matches(value)),
        })
    }
}

#[derive(Clone, Debug)]
enum Condition {
    Exists(bool),
    /// Holds when any of the key's values (an array has several) matches.
    Matches(Pattern),
}

#[derive(Clone, Debug)]
enum Pattern {
    Exact(Scalar<'static>),
    Prefix(String),
    Suffix(String),
    /// The operand, lower-cased.
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    Numeric((Bound<f64>, Bound<f64>)),
    Cidr(IpAddr, u32),
    /// Matches a value that none of these match.
    AnythingBut(Vec<Pattern>),
}

impl Pattern {
    fn matches(&self, value: &Scalar<'_>) -> bool {
        match (self, value) {
            (Pattern::Exact(expected), _) => expected == value,
            (Pattern::AnythingBut(excluded), _) => !excluded.iter().any(|pattern| pattern.matches(value)),
            (Pattern::Numeric(range), Scalar::Num(number)) => range.contains(number),
            (Pattern::Prefix(prefix), Scalar::Str(text)) => text.starts_with(prefix.as_str()),
            (Pattern::Suffix(suffix), Scalar::Str(text)) => text.ends_with(suffix.as_str()),
            (Pattern::EqualsIgnoreCase(lower), Scalar::Str(text)) => text.to_lowercase() == *lower,
            (Pattern::Wildcard(wildcard), Scalar::Str(text)) => wildcard.matches(text),
            (Pattern::Cidr(network, bits), Scalar::Str(text)) => in_network(*network, *bits, text),
            _ => false,
        }
    }
}

/// A leaf value of a message, or a value a policy asks for. Values compare with their type: the
/// string "5" is not the number 5, while 301.5 and 3.015e2 are the same number.
#[derive(Clone, Debug, PartialEq)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Null,
}

impl Scalar<'_> {
    fn of(value: &Value) -> Option<Scalar<'_>> {
        Some(match value {
            Value::String(text) => Scalar::Str(Cow::Borrowed(text)),
            Value::Number(_) => Scalar::Num(value.as_f64()?),
            Value::Bool(boolean) => Scalar::Bool(*boolean),
            Value::Null => Scalar::Null,
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Str(text) => Scalar::Str(Cow::Owned(text.into_owned())),
            Scalar::Num(number) => Scalar::Num(number),
            Scalar::Bool(boolean) => Scalar::Bool(boolean),
            Scalar::Null => Scalar::Null,
        }
    }
}

/// A message's values by dotted key.
type Fields<'a> = HashMap<String, Vec<Scalar<'a>>>;

/// `String` attributes are strings, `Number` attributes numbers (custom suffixes such as
/// `Number.float` included), `String.Array` attributes their elements. The guide also publishes a
/// `Number.Array`, so it is read the same way. SNS ignores `Binary` attributes.
fn attribute_fields(attributes: &[MessageAttribute]) -> Fields<'_> {
    let mut fields = Fields::new();
    for attribute in attributes {
        let AttributeValue::String(text) = &attribute.value else { continue };
        let kind = attribute.data_type.as_str();
        let values: Vec<Scalar<'_>> = match kind {
            "String.Array" | "Number.Array" => match serde_json::from_str::<Vec<Value>>(text) {
                Ok(items) => items.iter().filter_map(Scalar::of).map(Scalar::into_owned).collect(),
                Err(_) => continue,
            },
            _ if kind == "Number" || kind.starts_with("Number.") => text
                .trim()
                .parse()
                .ok()
                .filter(|number: &f64| number.is_finite())
                .map(Scalar::Num)
                .into_iter()
                .collect(),
            _ if kind == "String" || kind.starts_with("String.") => vec![Scalar::Str(Cow::Borrowed(text))],
            _ => continue,
        };
        if !values.is_empty() {
            fields.entry(attribute.name.clone()).or_default().extend(values);
        }
    }
    fields
}

/// Collects a body's leaf values under their dotted keys; an array's elements, at any depth,
/// share the array's key, so a condition holds if any element satisfies it.
fn flatten<'a>(value: &'a Value, path: &str, fields: &mut Fields<'a>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                flatten(member, &join(path, key), fields);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| flatten(item, path, fields)),
        leaf => fields.entry(path.to_owned()).or_default().extend(Scalar::of(leaf)),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// A policy object compiled, with what the limits are checked against.
struct Compiled {
    rule: Rule,
    /// The guide's "total combination": the product, over the keys, of each key's number of
    /// values times its nesting depth, summed over the alternatives of each `$or`.
    combinations: u64,
    /// Top-level keys, counting the `$or` alternative that uses the most.
    keys: usize,
    nested: bool,
}

/// Compiles a policy object whose keys sit `depth` levels deep under the dotted `prefix`.
fn compile(object: &Map<String, Value>, prefix: &str, depth: u64) -> Result<Compiled, String> {
    if object.is_empty() {
        return Err("Empty objects are not allowed".into());
    }
    let mut compiled = Compiled { rule: Rule::default(), combinations: 1, keys: 0, nested: false };
    for (key, value) in object {
        if key == "$or"
            && let Some(alternatives) = or_alternatives(value)
        {
            let (mut group, mut combinations, mut keys) = (Vec::new(), 0u64, 0);
            for alternative in alternatives {
                let branch = compile(alternative, prefix, depth)?;
                combinations = combinations.saturating_add(branch.combinations);
                keys = keys.max(branch.keys);
                compiled.nested |= branch.nested;
                group.push(branch.rule);
            }
            compiled.combinations = compiled.combinations.saturating_mul(combinations);
            compiled.keys += keys;
            compiled.rule.any_of.push(group);
            continue;
        }
        let path = join(prefix, key);
        compiled.keys += 1;
        match value {
            Value::Object(inner) => {
                let inner = compile(inner, &path, depth + 1)?;
                compiled.combinations = compiled.combinations.saturating_mul(inner.combinations);
                compiled.rule.keys.extend(inner.rule.keys);
                compiled.rule.any_of.extend(inner.rule.any_of);
                compiled.nested = true;
            }
            Value::Array(values) => {
                let conditions = values.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
                if conditions.is_empty() {
                    return Err("Empty arrays are not allowed".into());
                }
                let weight = depth.saturating_mul(conditions.len() as u64);
                compiled.combinations = compiled.combinations.saturating_mul(weight);
                compiled.rule.keys.push(Key { path, conditions });
            }
            _ => return Err(format!("\"{key}\" must be an object or an array")),
        }
    }
    Ok(compiled)
}

/// The alternatives of an `"$or"` key, when SNS reads it as one: an array of at least two objects
/// none of which uses an operator name as a key. Otherwise `"$or"` is an ordinary key.
fn or_alternatives(value: &Value) -> Option<Vec<&Map<String, Value>>> {
    let alternatives = value.as_array()?.iter().map(Value::as_object).collect::<Option<Vec<_>>>()?;
    let plain = alternatives.iter().all(|alternative| alternative.keys().all(|key| !RESERVED.contains(&key.as_str())));
    (alternatives.len() >= 2 && plain).then_some(alternatives)
}

/// One element of a key's array: a value to equal, or an operator object.
fn condition(value: &Value) -> Result<Condition, String> {
    let Value::Object(expression) = value else {
        return Scalar::of(value)
            .map(|exact| Condition::Matches(Pattern::Exact(exact.into_owned())))
            .ok_or_else(|| "Match value must be String, number, true, false, or null".into());
    };
    let mut entries = expression.iter();
    let Some((name, operand)) = entries.next() else { return Err("Match expression name not found".into()) };
    let (condition, extra_key_error) = match name.as_str() {
        "exists" => match operand {
            Value::Bool(exists) => (Condition::Exists(*exists), ONE_KEY),
            _ => return Err("exists match pattern must be either true or false.".into()),
        },
        "numeric" => (Condition::Matches(Pattern::Numeric(numeric(operand)?)), TOO_MANY_ELEMENTS),
        "anything-but" => (Condition::Matches(anything_but(operand)?), TOO_MANY_ELEMENTS),
        _ => match StringOperator::named(name) {
            Some(operator) => (Condition::Matches(operator.compile(operand)?), ONE_KEY),
            None => return Err(format!("Unrecognized match type {name}")),
        },
    };
    match entries.next() {
        None => Ok(condition),
        Some(_) => Err(extra_key_error.into()),
    }
}

/// `numeric`: `["=", n]`, `["<" or "<=", n]`, `[">" or ">=", n]`, or
/// `[">" or ">=", low, "<" or "<=", high]`.
fn numeric(operand: &Value) -> Result<(Bound<f64>, Bound<f64>), String> {
    let Value::Array(terms) = operand else { return Err("Value of numeric must be an array.".into()) };
    let mut terms = terms.iter();
    let operator = match terms.next() {
        Some(Value::String(operator)) => operator.as_str(),
        other => return Err(format!("Invalid member in numeric match: {}", token(other))),
    };
    let range = match operator {
        "=" => {
            let number = number_after(&mut terms, "equals")?;
            (Bound::Included(number), Bound::Included(number))
        }
        "<" | "<=" => (Bound::Unbounded, bound(operator, number_after(&mut terms, operator)?)),
        ">" | ">=" => {
            let low = number_after(&mut terms, operator)?;
            let top_operator = match terms.next() {
                None => return Ok((bound(operator, low), Bound::Unbounded)),
                Some(Value::String(top)) if top == "<" || top == "<=" => top.as_str(),
                Some(Value::String(other)) => return Err(format!("Bad numeric range operator: {other}")),
                other => return Err(format!("Bad value in numeric range: {}", token(other))),
            };
            let high = number_after(&mut terms, top_operator)?;
            if terms.next().is_some() {
                return Err("Too many terms in numeric range expression".into());
            }
            if low >= high {
                return Err("Bottom must be less than top".into());
            }
            return Ok((bound(operator, low), bound(top_operator, high)));
        }
        other => return Err(format!("Unrecognized numeric range operator: {other}")),
    };
    match terms.next() {
        None => Ok(range),
        Some(_) => Err(TOO_MANY_ELEMENTS.into()),
    }
}

fn number_after(terms: &mut slice::Iter<'_, Value>, operator: &str) -> Result<f64, String> {
    terms.next().and_then(Value::as_f64).ok_or_else(|| format!("Value of {operator} must be numeric"))
}

fn bound(operator: &str, number: f64) -> Bound<f64> {
    if operator.ends_with('=') { Bound::Included(number) } else { Bound::Excluded(number) }
}

/// How SNS's JSON parser names the token it stopped at (`None`: the array ended).
fn token(value: Option<&Value>) -> String {
    match value {
        None => "]".into(),
        Some(Value::Array(_)) => "[".into(),
        Some(Value::Object(_)) => "{".into(),
        Some(Value::String(text)) => text.clone(),
        Some(literal) => literal.to_string(),
    }
}

/// `anything-but`: a string or number, or a list of only strings or only numbers, to exclude; or
/// `{"prefix" | "suffix" | "wildcard": pattern or list of patterns}`.
fn anything_but(operand: &Value) -> Result<Pattern, String> {
    let values = match operand {
        Value::Object(expression) => return anything_but_matching(expression),
        Value::Array(values) => values.as_slice(),
        Value::String(_) | Value::Number(_) => slice::from_ref(operand),
        _ => return Err("Value of anything-but must be an array or single string/number value.".into()),
    };
    let excluded = values
        .iter()
        .map(|value| match Scalar::of(value) {
            Some(scalar @ (Scalar::Str(_) | Scalar::Num(_))) => Ok(scalar.into_owned()),
            _ => Err("Inside anything but list, start|null|boolean is not supported."),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let strings = excluded.iter().filter(|value| matches!(value, Scalar::Str(_))).count();
    if excluded.is_empty() || (strings != 0 && strings != excluded.len()) {
        return Err(
            "Inside anything but list, either all values are number or string, mixed type is not supported".into()
        );
    }
    Ok(Pattern::AnythingBut(excluded.into_iter().map(Pattern::Exact).collect()))
}

fn anything_but_matching(expression: &Map<String, Value>) -> Result<Pattern, String> {
    let mut entries = expression.iter();
    let Some((name, operand)) = entries.next() else { return Err("Anything-But expression name not found".into()) };
    let operator = StringOperator::named(name)
        .filter(|operator| {
            matches!(operator, StringOperator::Prefix | StringOperator::Suffix | StringOperator::Wildcard)
        })
        .ok_or_else(|| format!("Unsupported anything-but pattern: {name}"))?;
    if entries.next().is_some() {
        return Err(TOO_MANY_ELEMENTS.into());
    }
    let patterns = match operand {
        Value::Array(patterns) => patterns.as_slice(),
        single => slice::from_ref(single),
    };
    let excluded = patterns
        .iter()
        .map(|pattern| {
            // An empty prefix or suffix would exclude every string.
            if operator != StringOperator::Wildcard && pattern.as_str() == Some("") {
                return Err("Null prefix/suffix not allowed".to_owned());
            }
            operator.compile(pattern)
        })
        .collect::<Result<_, _>>()?;
    Ok(Pattern::AnythingBut(excluded))
}

/// The operators whose operand is one string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StringOperator {
    Prefix,
    Suffix,
    EqualsIgnoreCase,
    Wildcard,
    Cidr,
}

impl StringOperator {
    fn named(name: &str) -> Option<StringOperator> {
        Some(match name {
            "prefix" => StringOperator::Prefix,
            "suffix" => StringOperator::Suffix,
            "equals-ignore-case" => StringOperator::EqualsIgnoreCase,
            "wildcard" => StringOperator::Wildcard,
            "cidr" => StringOperator::Cidr,
            _ => return None,
        })
    }

    fn compile(self, operand: &Value) -> Result<Pattern, String> {
        let Value::String(text) = operand else {
            let name = match self {
                // SNS calls a `cidr` operand a prefix here.
                StringOperator::Prefix | StringOperator::Cidr => "prefix",
                StringOperator::Suffix => "suffix",
                StringOperator::EqualsIgnoreCase => "equals-ignore-case",
                StringOperator::Wildcard => "wildcard",
            };
            return Err(format!("{name} match pattern must be a string"));
        };
        Ok(match self {
            StringOperator::Prefix => Pattern::Prefix(text.clone()),
            StringOperator::Suffix => Pattern::Suffix(text.clone()),
            StringOperator::EqualsIgnoreCase => Pattern::EqualsIgnoreCase(text.to_lowercase()),
            StringOperator::Wildcard => Pattern::Wildcard(Wildcard::parse(text)?),
            StringOperator::Cidr => cidr(text)?,
        })
    }
}

/// A `wildcard` pattern: the literal pieces around its `*`s.
#[derive(Clone, Debug)]
struct Wildcard(Vec<String>);

impl Wildcard {
    /// `\*` is a literal star and `\\` a backslash; error positions are byte offsets, as in SNS.
    fn parse(pattern: &str) -> Result<Wildcard, String> {
        let (mut pieces, mut piece) = (Vec::new(), String::new());
        let mut chars = pattern.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '*' if chars.peek().is_some_and(|&(_, next)| next == '*') => {
                    return Err(format!("Consecutive wildcard characters at pos {at}"));
                }
                '*' => pieces.push(std::mem::take(&mut piece)),
                '\\' => match chars.next() {
                    Some((_, escaped @ ('*' | '\\'))) => piece.push(escaped),
                    _ => return Err(format!("Invalid escape character at pos {at}")),
                },
                _ => piece.push(c),
            }
        }
        pieces.push(piece);
        Ok(Wildcard(pieces))
    }

    fn matches(&self, text: &str) -> bool {
        let [first, middle @ .., last] = self.0.as_slice() else {
            return self.0 == [text];
        };
        let Some(mut rest) = text.strip_prefix(first.as_str()) else { return false };
        // Taking each middle piece at its first occurrence leaves the most room for the rest.
        for piece in middle {
            let Some(at) = rest.find(piece.as_str()) else { return false };
            rest = &rest[at + piece.len()..];
        }
        rest.ends_with(last.as_str())
    }
}

/// `cidr`: an IPv4 or IPv6 network.
fn cidr(text: &str) -> Result<Pattern, String> {
    let Some((address, bits)) = text.split_once('/').filter(|(_, bits)| !bits.contains('/')) else {
        return Err("Malformed CIDR, one '/' required".into());
    };
    let bits: i64 = bits.parse().map_err(|_| "Malformed CIDR, mask bits must be an integer")?;
    if bits < 0 {
        return Err("Malformed CIDR, mask bits must not be negative".into());
    }
    let network: IpAddr = address.parse().map_err(|_| format!("Invalid IP address: {address}"))?;
    // SNS rejects a /32 (or /128) network: the mask must leave at least one host bit.
    let (family, width) = if network.is_ipv4() { ("IPv4", 32) } else { ("IPv6", 128) };
    match u32::try_from(bits) {
        Ok(bits) if bits < width => Ok(Pattern::Cidr(network, bits)),
        _ => Err(format!("{family} mask bits must be < {width}")),
    }
}

fn in_network(network: IpAddr, bits: u32, text: &str) -> bool {
    // Both addresses are aligned to the top of a u128, so the network's bits are the high ones.
    let (network, address) = match (network, text.parse::<IpAddr>()) {
        (IpAddr::V4(network), Ok(IpAddr::V4(address))) => {
            (u128::from(network.to_bits()) << 96, u128::from(address.to_bits()) << 96)
        }
        (IpAddr::V6(network), Ok(IpAddr::V6(address))) => (network.to_bits(), address.to_bits()),
        _ => return false,
    };
    (network ^ address).checked_shr(128 - bits).unwrap_or(0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published message: attributes as the guide writes them (`{"name": {"Type": ..., "Value":
    /// ...}}`), matched in attribute scope, or a body, matched in body scope.
    #[derive(Clone, Copy, Debug)]
    enum Message {
        A(&'static str),
        B(&'static str),
    }
    use Message::{A, B};

    fn attributes(json: &str) -> Vec<MessageAttribute> {
        let attributes: Map<String, Value> = serde_json::from_str(json).expect("attributes are a JSON object");
        attributes
            .into_iter()
            .map(|(name, attribute)| {
                let data_type = attribute["Type"].as_str().expect("a Type").to_owned();
                let text = attribute["Value"].as_str().expect("a string Value").to_owned();
                let value = if data_type == "Binary" {
                    AttributeValue::Binary(text.into_bytes())
                } else {
                    AttributeValue::String(text)
                };
                MessageAttribute { name, data_type, value }
            })
            .collect()
    }

    fn check(policy: &str, message: Message, expected: bool) {
        let (scope, attributes, body) = match message {
            A(json) => (Scope::MessageAttributes, attributes(json), ""),
            B(body) => (Scope::MessageBody, Vec::new(), body),
        };
        let parsed = FilterPolicy::parse(policy, scope).unwrap_or_else(|error| panic!("{policy}: {error}"));
        assert_eq!(parsed.matches(&attributes, body), expected, "{policy} on {message:?}");
    }

    fn check_all(cases: &[(&str, Message, bool)]) {
        for &(policy, message, expected) in cases {
            check(policy, message, expected);
        }
    }

    fn rejected(policy: &str, scope: Scope, error: &str) {
        assert_eq!(FilterPolicy::parse(policy, scope).err().as_deref(), Some(error), "{policy}");
    }

    fn combinations(policy: &str) -> u64 {
        let root: Map<String, Value> = serde_json::from_str(policy).expect("a JSON object");
        compile(&root, "", 1).expect("a valid policy").combinations
    }

    // The guide, "String value matching".
    #[test]
    fn exact_string_matching() {
        let policy = r#"{"customer_interests": ["rugby", "tennis"]}"#;
        check_all(&[
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "rugby"}}"#), true),
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "tennis"}}"#), true),
            (
                policy,
                A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"rugby\", \"tennis\"]"}}"#),
                true,
            ),
            (policy, B(r#"{"customer_interests": "rugby"}"#), true),
            (policy, B(r#"{"customer_interests": "tennis"}"#), true),
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "baseball"}}"#), false),
            (policy, A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"baseball\"]"}}"#), false),
            (policy, B(r#"{"customer_interests": "baseball"}"#), false),
            (policy, B(r#"{"customer_interests": "Rugby"}"#), false),
        ]);
    }

    #[test]
    fn anything_but_string_matching() {
        let policy = r#"{"customer_interests": [{"anything-but": ["rugby", "tennis"]}]}"#;
        check_all(&[
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "baseball"}}"#), true),
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "football"}}"#), true),
            // An array matches when one of its elements is not excluded.
            (
                policy,
                A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"rugby\", \"baseball\"]"}}"#),
                true,
            ),
            (policy, B(r#"{"customer_interests": "baseball"}"#), true),
            (policy, B(r#"{"customer_interests": "football"}"#), true),
            (policy, B(r#"{"customer_interests": ["rugby", "baseball"]}"#), true),
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "rugby"}}"#), false),
            (policy, A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"rugby\"]"}}"#), false),
            (policy, B(r#"{"customer_interests": ["rugby"]}"#), false),
            // anything-but needs the key: an absent one matches only `"exists": false`.
            (policy, B(r#"{"store": "example_corp"}"#), false),
            (r#"{"event": [{"anything-but": "order_cancelled"}]}"#, B(r#"{"event": "order_placed"}"#), true),
            (r#"{"event": [{"anything-but": "order_cancelled"}]}"#, B(r#"{"event": "order_cancelled"}"#), false),
            (r#"{"event": [{"anything-but": "x"}, {"exists": false}]}"#, B(r#"{"store": "example_corp"}"#), true),
        ]);
    }

    #[test]
    fn anything_but_prefix_suffix_and_wildcard() {
        let prefix = r#"{"event": [{"anything-but": {"prefix": "order-"}}]}"#;
        let wildcard = r#"{"customer_interests": [{"anything-but": {"wildcard": "*ball"}}]}"#;
        let suffix = r#"{"customer_interests": [{"anything-but": {"suffix": "ball"}}]}"#;
        check_all(&[
            (prefix, A(r#"{"event": {"Type": "String", "Value": "data-entry"}}"#), true),
            (prefix, A(r#"{"event": {"Type": "String", "Value": "order_number"}}"#), true),
            (prefix, B(r#"{"event": "data-entry"}"#), true),
            (prefix, B(r#"{"event": "order_number"}"#), true),
            (prefix, A(r#"{"event": {"Type": "String", "Value": "order-cancelled"}}"#), false),
            (prefix, B(r#"{"event": "order-cancelled"}"#), false),
            (wildcard, B(r#"{"customer_interests": ["hockey", "rugby", "soccer"]}"#), true),
            (wildcard, B(r#"{"customer_interests": ["baseball", "basketball"]}"#), false),
            (suffix, B(r#"{"customer_interests": ["hockey", "rugby", "soccer"]}"#), true),
            (suffix, B(r#"{"customer_interests": ["baseball", "basketball"]}"#), false),
            (r#"{"a": [{"anything-but": {"prefix": ["x", "y"]}}]}"#, B(r#"{"a": "yes"}"#), false),
            (r#"{"a": [{"anything-but": {"prefix": ["x", "y"]}}]}"#, B(r#"{"a": "no"}"#), true),
        ]);
    }

    #[test]
    fn equals_ignore_case_matching() {
        let policy = r#"{"customer_interests": [{"equals-ignore-case": "tennis"}]}"#;
        check_all(&[
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "TENNIS"}}"#), true),
            (policy, A(r#"{"customer_interests": {"Type": "String", "Value": "Tennis"}}"#), true),
            (policy, B(r#"{"customer_interests": "TENNIS"}"#), true),
            (policy, B(r#"{"customer_interests": "teNnis"}"#), true),
            (policy, B(r#"{"customer_interests": "tennis ball"}"#), false),
        ]);
    }

    #[test]
    fn ip_address_matching() {
        let policy = r#"{"source_ip": [{"cidr": "10.0.0.0/24"}]}"#;
        let v6 = r#"{"source_ip": [{"cidr": "2001:db8::/32"}]}"#;
        check_all(&[
            (policy, A(r#"{"source_ip": {"Type": "String", "Value": "10.0.0.0"}}"#), true),
            (policy, A(r#"{"source_ip": {"Type": "String", "Value": "10.0.0.255"}}"#), true),
            (policy, B(r#"{"source_ip": "10.0.0.0"}"#), true),
            (policy, B(r#"{"source_ip": "10.0.0.255"}"#), true),
            (policy, A(r#"{"source_ip": {"Type": "String", "Value": "10.1.1.0"}}"#), false),
            (policy, B(r#"{"source_ip": "10.1.1.0"}"#), false),
            (policy, B(r#"{"source_ip": "not an address"}"#), false),
            (policy, B(r#"{"source_ip": "::ffff:10.0.0.1"}"#), false),
            (v6, B(r#"{"source_ip": "2001:db8:1::7"}"#), true),
            (v6, B(r#"{"source_ip": "2001:db9::1"}"#), false),
            (r#"{"ip": [{"cidr": "0.0.0.0/0"}]}"#, B(r#"{"ip": "192.0.2.1"}"#), true),
        ]);
    }

    #[test]
    fn prefix_suffix_and_wildcard_matching() {
        let prefix = r#"{"customer_interests": [{"prefix": "bas"}]}"#;
        let suffix = r#"{"customer_interests": [{"suffix": "ball"}]}"#;
        let wildcard = r#"{"customer_interests": [{"wildcard": "*ball"}]}"#;
        check_all(&[
            (prefix, A(r#"{"customer_interests": {"Type": "String", "Value": "baseball"}}"#), true),
            (prefix, A(r#"{"customer_interests": {"Type": "String", "Value": "basketball"}}"#), true),
            (prefix, B(r#"{"customer_interests": "baseball"}"#), true),
            (prefix, B(r#"{"customer_interests": "basketball"}"#), true),
            (prefix, A(r#"{"customer_interests": {"Type": "String", "Value": "rugby"}}"#), false),
            (prefix, B(r#"{"customer_interests": "rugby"}"#), false),
            (suffix, A(r#"{"customer_interests": {"Type": "String", "Value": "baseball"}}"#), true),
            (suffix, A(r#"{"customer_interests": {"Type": "String", "Value": "basketball"}}"#), true),
            (suffix, B(r#"{"customer_interests": "baseball"}"#), true),
            (suffix, B(r#"{"customer_interests": "basketball"}"#), true),
            (suffix, A(r#"{"customer_interests": {"Type": "String", "Value": "rugby"}}"#), false),
            (suffix, B(r#"{"customer_interests": "rugby"}"#), false),
            (wildcard, B(r#"{"customer_interests": ["baseball", "basketball"]}"#), true),
            (wildcard, A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"baseball\"]"}}"#), true),
            (wildcard, B(r#"{"customer_interests": "rugby"}"#), false),
            // Prefixes are for strings only.
            (r#"{"price": [{"prefix": "1"}]}"#, B(r#"{"price": 100}"#), false),
        ]);
    }

    #[test]
    fn wildcard_patterns() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "acb", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            (r"a\*b", "a*b", true),
            (r"a\*b", "aXb", false),
            (r"a\\b", r"a\b", true),
            ("é*ü", "étüdü", true),
        ];
        for (pattern, text, expected) in cases {
            let wildcard = Wildcard::parse(pattern).expect("a valid pattern");
            assert_eq!(wildcard.matches(text), expected, "{pattern} on {text}");
        }
        assert_eq!(Wildcard::parse("a**b").err().as_deref(), Some("Consecutive wildcard characters at pos 1"));
        assert_eq!(Wildcard::parse(r"ab\c").err().as_deref(), Some("Invalid escape character at pos 2"));
        assert_eq!(Wildcard::parse(r"ab\").err().as_deref(), Some("Invalid escape character at pos 2"));
    }

    // The guide, "Numeric value matching".
    #[test]
    fn numeric_exact_matching() {
        let policy = r#"{"price_usd": [{"numeric": ["=", 301.5]}]}"#;
        check_all(&[
            (policy, A(r#"{"price_usd": {"Type": "Number", "Value": "301.5"}}"#), true),
            (policy, A(r#"{"price_usd": {"Type": "Number", "Value": "3.015e2"}}"#), true),
            (policy, A(r#"{"price_usd": {"Type": "Number", "Value": "301.50"}}"#), true),
            (policy, A(r#"{"price_usd": {"Type": "Number.float", "Value": "301.5"}}"#), true),
            (policy, B(r#"{"price_usd": 301.5}"#), true),
            (policy, B(r#"{"price_usd": 3.015e2}"#), true),
            (policy, B(r#"{"price_usd": 301.6}"#), false),
            // Numbers compare with numbers only.
            (policy, A(r#"{"price_usd": {"Type": "String", "Value": "301.5"}}"#), false),
            (policy, B(r#"{"price_usd": "301.5"}"#), false),
            (r#"{"price_usd": [301.5]}"#, A(r#"{"price_usd": {"Type": "Number", "Value": "301.50"}}"#), true),
            (r#"{"price_usd": [301.5]}"#, B(r#"{"price_usd": 3.015e2}"#), true),
            (r#"{"price_usd": ["301.5"]}"#, A(r#"{"price_usd": {"Type": "Number", "Value": "301.5"}}"#), false),
            (r#"{"price_usd": [301.5]}"#, A(r#"{"price_usd": {"Type": "String", "Value": "301.5"}}"#), false),
        ]);
    }

    #[test]
    fn numeric_anything_but_matching() {
        let policy = r#"{"price": [{"anything-but": [100, 500]}]}"#;
        check_all(&[
            (policy, A(r#"{"price": {"Type": "Number", "Value": "101"}}"#), true),
            (policy, A(r#"{"price": {"Type": "Number", "Value": "100.1"}}"#), true),
            (policy, B(r#"{"price": 101}"#), true),
            (policy, B(r#"{"price": 100.1}"#), true),
            (policy, A(r#"{"price": {"Type": "Number.Array", "Value": "[100, 50]"}}"#), true),
            (policy, B(r#"{"price": [100, 50]}"#), true),
            (policy, A(r#"{"price": {"Type": "Number", "Value": "100"}}"#), false),
            (policy, B(r#"{"price": 100}"#), false),
            (policy, B(r#"{"price": 100.0}"#), false),
            (policy, B(r#"{"price": [100, 500]}"#), false),
        ]);
    }

    #[test]
    fn numeric_range_matching() {
        let negative = r#"{"price_usd": [{"numeric": ["<", 0]}]}"#;
        let up_to_150 = r#"{"price_usd": [{"numeric": [">", 0, "<=", 150]}]}"#;
        check_all(&[
            (negative, B(r#"{"price_usd": -0.5}"#), true),
            (negative, A(r#"{"price_usd": {"Type": "Number", "Value": "-10"}}"#), true),
            (negative, B(r#"{"price_usd": 0}"#), false),
            (up_to_150, B(r#"{"price_usd": 150}"#), true),
            (up_to_150, B(r#"{"price_usd": 0.01}"#), true),
            (up_to_150, A(r#"{"price_usd": {"Type": "Number", "Value": "1.5e2"}}"#), true),
            (up_to_150, B(r#"{"price_usd": 0}"#), false),
            (up_to_150, B(r#"{"price_usd": 150.5}"#), false),
            (up_to_150, A(r#"{"price_usd": {"Type": "String", "Value": "100"}}"#), false),
            (up_to_150, A(r#"{"price_usd": {"Type": "Number", "Value": "lots"}}"#), false),
            (r#"{"n": [{"numeric": [">=", 10]}]}"#, B(r#"{"n": 10}"#), true),
            (r#"{"n": [{"numeric": [">=", 10, "<", 20]}]}"#, B(r#"{"n": 20}"#), false),
            (r#"{"n": [{"numeric": ["<=", 10]}]}"#, B(r#"{"n": 10}"#), true),
        ]);
    }

    // The guide, "Key matching".
    #[test]
    fn key_matching() {
        let exists = r#"{"store": [{"exists": true}]}"#;
        let absent = r#"{"store": [{"exists": false}]}"#;
        let with_store = A(r#"{"store": {"Type": "String", "Value": "fans"},
            "customer_interests": {"Type": "String.Array", "Value": "[\"baseball\", \"basketball\"]"}}"#);
        let without_store =
            A(r#"{"customer_interests": {"Type": "String.Array", "Value": "[\"baseball\", \"basketball\"]"}}"#);
        let body_with_store = B(r#"{"store": "fans", "customer_interests": ["baseball", "basketball"]}"#);
        let body_without_store = B(r#"{"customer_interests": ["baseball", "basketball"]}"#);
        check_all(&[
            (exists, with_store, true),
            (exists, body_with_store, true),
            (exists, without_store, false),
            (exists, body_without_store, false),
            (absent, with_store, false),
            (absent, body_with_store, false),
            (absent, without_store, true),
            (absent, body_without_store, true),
            // Any attribute type counts, and a key needs a value that is not null.
            (exists, A(r#"{"store": {"Type": "Number", "Value": "99"}}"#), true),
            (exists, B(r#"{"store": null}"#), false),
            (absent, B(r#"{"store": null, "other": 1}"#), true),
            (exists, B(r#"{"store": []}"#), false),
            // `exists` applies to leaves, not to objects.
            (exists, B(r#"{"store": {"name": "fans"}}"#), false),
            (r#"{"store": {"name": [{"exists": true}]}}"#, B(r#"{"store": {"name": "fans"}}"#), true),
        ]);
    }

    #[test]
    fn a_message_without_attributes_matches_no_policy() {
        let absent = r#"{"store": [{"exists": false}]}"#;
        check_all(&[
            (absent, A("{}"), false),
            (absent, B("{}"), false),
            // Binary attributes are ignored, so they do not count either.
            (absent, A(r#"{"blob": {"Type": "Binary", "Value": "bytes"}}"#), false),
            (absent, A(r#"{"other": {"Type": "String", "Value": "x"}}"#), true),
            ("{}", A("{}"), true),
            ("{}", B("not JSON"), true),
        ]);
    }

    // The guide, "AND/OR logic".
    #[test]
    fn and_or_logic() {
        let and = r#"{"customer_interests": ["rugby"], "price_usd": [{"numeric": [">", 100]}]}"#;
        let or = r#"{"customer_interests": ["rugby", "football", "baseball"]}"#;
        check_all(&[
            (and, B(r#"{"customer_interests": "rugby", "price_usd": 100.01}"#), true),
            (and, B(r#"{"customer_interests": "rugby", "price_usd": 100}"#), false),
            (and, B(r#"{"customer_interests": "tennis", "price_usd": 200}"#), false),
            (and, B(r#"{"customer_interests": "rugby"}"#), false),
            (
                and,
                A(r#"{"customer_interests": {"Type": "String", "Value": "rugby"},
                      "price_usd": {"Type": "Number", "Value": "150"}}"#),
                true,
            ),
            (or, B(r#"{"customer_interests": "rugby"}"#), true),
            (or, B(r#"{"customer_interests": "football"}"#), true),
            (or, B(r#"{"customer_interests": "baseball"}"#), true),
            (or, B(r#"{"customer_interests": "tennis"}"#), false),
        ]);
    }

    #[test]
    fn or_operator() {
        let policy = r#"{"source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}"#;
        check_all(&[
            (
                policy,
                A(r#"{"source": {"Type": "String", "Value": "aws.cloudwatch"},
                      "metricName": {"Type": "String", "Value": "CPUUtilization"}}"#),
                true,
            ),
            (
                policy,
                A(r#"{"source": {"Type": "String", "Value": "aws.cloudwatch"},
                      "namespace": {"Type": "String", "Value": "AWS/EC2"}}"#),
                true,
            ),
            (policy, B(r#"{"source": "aws.cloudwatch", "metricName": "CPUUtilization"}"#), true),
            (policy, B(r#"{"source": "aws.cloudwatch", "namespace": "AWS/EC2"}"#), true),
            (policy, B(r#"{"source": "aws.cloudwatch", "namespace": "AWS/ES"}"#), false),
            (policy, B(r#"{"source": "aws.ec2", "metricName": "CPUUtilization"}"#), false),
            (policy, B(r#"{"metricName": "CPUUtilization", "namespace": "AWS/EC2"}"#), false),
        ]);
    }

    #[test]
    fn nested_or_operators() {
        // "source" AND ("metricName" OR ("metricType" AND ("metricId" OR "spaceId"))).
        let flat = r#"{"source": ["aws.cloudwatch"], "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {"metricType": ["MetricType"], "$or": [{"metricId": [1234, 4321]}, {"spaceId": [1000, 2000, 3000]}]}]}"#;
        // ("metricName" OR "namespace") AND "detail.scope" AND ("detail.source" OR "detail.type").
        let nested = r#"{"$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
            "detail": {"scope": ["Service"],
                "$or": [{"source": ["aws.cloudwatch"]}, {"type": ["CloudWatch Alarm State Change"]}]}}"#;
        check_all(&[
            (flat, B(r#"{"source": "aws.cloudwatch", "metricName": "ReadLatency"}"#), true),
            (flat, B(r#"{"source": "aws.cloudwatch", "metricType": "MetricType", "spaceId": 2000}"#), true),
            (
                flat,
                A(r#"{"source": {"Type": "String", "Value": "aws.cloudwatch"},
                      "metricType": {"Type": "String", "Value": "MetricType"},
                      "metricId": {"Type": "Number", "Value": "4321"}}"#),
                true,
            ),
            (flat, B(r#"{"source": "aws.cloudwatch", "metricType": "MetricType"}"#), false),
            (flat, B(r#"{"source": "aws.cloudwatch", "metricType": "Other", "metricId": 1234}"#), false),
            (
                nested,
                B(r#"{"metricName": "CPUUtilization", "detail": {"scope": "Service", "source": "aws.cloudwatch"}}"#),
                true,
            ),
            (
                nested,
                B(
                    r#"{"namespace": "AWS/ES", "detail": {"scope": "Service", "type": "CloudWatch Alarm State Change"}}"#,
                ),
                true,
            ),
            (nested, B(r#"{"metricName": "CPUUtilization", "detail": {"scope": "Service"}}"#), false),
            (nested, B(r#"{"metricName": "CPUUtilization", "detail": {"source": "aws.cloudwatch"}}"#), false),
            (
                nested,
                B(r#"{"metricName": "AWS/EC2", "detail": {"scope": "Service", "source": "aws.cloudwatch"}}"#),
                false,
            ),
            (nested, B(r#"{"metricName": "CPUUtilization", "scope": "Service", "source": "aws.cloudwatch"}"#), false),
        ]);
    }

    #[test]
    fn or_key_that_is_not_an_or_operator() {
        // With one alternative, or a value that is not an array of objects, "$or" is a plain key.
        check_all(&[
            (r#"{"$or": ["x"]}"#, B(r#"{"$or": "x"}"#), true),
            (r#"{"$or": ["x"]}"#, A(r#"{"$or": {"Type": "String", "Value": "x"}}"#), true),
            (r#"{"$or": {"a": ["x"]}}"#, B(r#"{"$or": {"a": "x"}}"#), true),
            (r#"{"$or": {"a": ["x"]}}"#, B(r#"{"a": "x"}"#), false),
        ]);
        rejected(r#"{"$or": [{"a": ["x"]}]}"#, Scope::MessageBody, "Unrecognized match type a");
        // The guide: numeric and prefix are reserved, so this is no OR, and not a valid key either.
        rejected(
            r#"{"$or": [{"numeric": 123}, {"prefix": "abc"}]}"#,
            Scope::MessageBody,
            "Value of numeric must be an array.",
        );
    }

    // The guide, "Example filter policies": one message, as attributes and as a body.
    #[test]
    fn example_filter_policies() {
        let attributes = A(r#"{
            "customer_interests": {"Type": "String.Array", "Value": "[\"soccer\", \"rugby\", \"hockey\"]"},
            "store": {"Type": "String", "Value": "example_corp"},
            "event": {"Type": "String", "Value": "order_placed"},
            "price_usd": {"Type": "Number", "Value": "210.75"}}"#);
        let body = B(r#"{"customer_interests": ["soccer", "rugby", "hockey"],
            "store": "example_corp", "event": "order_placed", "price_usd": 210.75}"#);
        let accepts = r#"{"store": ["example_corp"], "event": [{"anything-but": "order_cancelled"}],
            "customer_interests": ["rugby", "football", "baseball"], "price_usd": [{"numeric": [">=", 100]}]}"#;
        let rejects = r#"{"store": ["example_corp"], "event": ["order_cancelled"], "encrypted": [false],
            "customer_interests": ["basketball", "baseball"]}"#;
        check_all(&[
            (accepts, attributes, true),
            (accepts, body, true),
            (rejects, attributes, false),
            (rejects, body, false),
        ]);
    }

    #[test]
    fn attribute_types() {
        check_all(&[
            (r#"{"encrypted": [false]}"#, A(r#"{"encrypted": {"Type": "String.Array", "Value": "[false]"}}"#), true),
            (r#"{"encrypted": [false]}"#, A(r#"{"encrypted": {"Type": "String", "Value": "false"}}"#), false),
            (r#"{"id": [null]}"#, A(r#"{"id": {"Type": "String.Array", "Value": "[null, 1]"}}"#), true),
            (r#"{"tag": ["x"]}"#, A(r#"{"tag": {"Type": "String.custom", "Value": "x"}}"#), true),
            (r#"{"tag": ["x"]}"#, A(r#"{"tag": {"Type": "String.Array", "Value": "not JSON"}}"#), false),
            (r#"{"blob": [{"exists": true}]}"#, A(r#"{"blob": {"Type": "Binary", "Value": "x"}}"#), false),
            (r#"{"blob": ["x"]}"#, A(r#"{"blob": {"Type": "Binary", "Value": "x"}}"#), false),
            // The guide's FIFO example: a body array matches when one element does.
            (r#"{"business": ["wholesale"]}"#, B(r#"{"business": ["wholesale", "retail"]}"#), true),
        ]);
    }

    // Payload-based filtering: policies mirror the body's objects; arrays match by any element.
    #[test]
    fn body_nesting() {
        let s3 = r#"{"Records": {"s3": {"object": {"key": [{"prefix": "auto-"}]}},
            "eventName": [{"prefix": "ObjectCreated:"}]}}"#;
        let route = r#"{"headers": {"route-to": ["queue1"]}}"#;
        check_all(&[
            (
                s3,
                B(r#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "auto-2314.xml"}}}]}"#),
                true,
            ),
            (
                s3,
                B(r#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": [[{"key": "auto-1.xml"}]]}}]}"#),
                true,
            ),
            (
                s3,
                B(r#"{"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "auto-1.xml"}}}]}"#),
                false,
            ),
            (
                s3,
                B(r#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "home-1.xml"}}}]}"#),
                false,
            ),
            (route, B(r#"{"headers": {"route-to": ["queue1", "queue2"]}}"#), true),
            (route, B(r#"{"headers": {"route-to": ["queue2"]}}"#), false),
            (route, B(r#"{"headers": "queue1"}"#), false),
            (route, B(r#"{"route-to": "queue1"}"#), false),
            // Dotted keys and nested keys are the same key, in the policy and in the body.
            (r#"{"object.nested": ["v"]}"#, B(r#"{"object": {"nested": "v"}}"#), true),
            (r#"{"object.nested": ["v"]}"#, B(r#"{"object.nested": "v"}"#), true),
            (r#"{"object": {"nested.test": ["v"]}}"#, B(r#"{"object.nested": {"test": "v"}}"#), true),
            (r#"{"object": {"nested": ["v"]}}"#, B(r#"{"object": {"nested": "w"}}"#), false),
        ]);
    }

    #[test]
    fn body_that_is_not_a_json_object_matches_nothing() {
        let policy = r#"{"key": [{"exists": false}]}"#;
        for body in ["Regular string message", r#""a JSON string""#, "[1, 2]", "42", "null", ""] {
            check(policy, B(body), false);
        }
    }

    #[test]
    fn body_exists_and_nesting() {
        let policy = r#"{"object": {"key": [{"prefix": "auto-"}, "hardcodedvalue"], "nested_key": [{"exists": false}]},
            "test": [{"exists": false}]}"#;
        check_all(&[
            (policy, B(r#"{"object": {"key": "auto-test"}}"#), true),
            (policy, B(r#"{"object": {"key": "hardcodedvalue"}}"#), true),
            (policy, B(r#"{"object": {"key": "test-auto"}}"#), false),
            (policy, B(r#"{"object": {"key": "auto-test"}, "test": "just-exists"}"#), false),
            (policy, B(r#"{"object": {"key": "auto-test", "nested_key": "just-exists"}}"#), false),
            (policy, B(r#"{"object": {"test": "auto-test"}}"#), false),
        ]);
    }

    // SNS's answers to invalid policies, as recorded against AWS.
    #[test]
    fn validation_errors() {
        let cases = [
            (r#"["key"]"#, "Filter is not an object"),
            (r#"{"key": [["value"]]}"#, "Match value must be String, number, true, false, or null"),
            (r#"{"key": []}"#, "Empty arrays are not allowed"),
            (r#"{"key": {}}"#, "Empty objects are not allowed"),
            (r#"{"key_a": "value_one"}"#, r#""key_a" must be an object or an array"#),
            (r#"{"key": {"suffix": "value"}}"#, r#""suffix" must be an object or an array"#),
            (r#"{"key": {"not-an-operator": "value"}}"#, r#""not-an-operator" must be an object or an array"#),
            (r#"{"key": [{}]}"#, "Match expression name not found"),
            (r#"{"key": [{"wrong-operator": true}]}"#, "Unrecognized match type wrong-operator"),
            (r#"{"key": [{"suffix": "value", "prefix": "value2"}]}"#, "Only one key allowed in match expression"),
            (r#"{"key": [{"suffix": 100}]}"#, "suffix match pattern must be a string"),
            (r#"{"key": [{"suffix": null}]}"#, "suffix match pattern must be a string"),
            (r#"{"key": [{"suffix": []}]}"#, "suffix match pattern must be a string"),
            (r#"{"key": [{"suffix": ["test", "test2"]}]}"#, "suffix match pattern must be a string"),
            (r#"{"key": [{"prefix": 1}]}"#, "prefix match pattern must be a string"),
            (r#"{"key": [{"equals-ignore-case": 1}]}"#, "equals-ignore-case match pattern must be a string"),
            (r#"{"key": [{"wildcard": 1}]}"#, "wildcard match pattern must be a string"),
            (r#"{"key": [{"wildcard": "a**"}]}"#, "Consecutive wildcard characters at pos 1"),
            (r#"{"key": [{"numeric": []}]}"#, "Invalid member in numeric match: ]"),
            (r#"{"key": [{"numeric": ["operator"]}]}"#, "Unrecognized numeric range operator: operator"),
            (r#"{"key": [{"numeric": [1, "<="]}]}"#, "Invalid member in numeric match: 1"),
            (r#"{"key": [{"numeric": ["=", "000"]}]}"#, "Value of equals must be numeric"),
            (r#"{"key": [{"numeric": [">="]}]}"#, "Value of >= must be numeric"),
            (r#"{"key": [{"numeric": ["<", 100, ">", 10]}]}"#, "Too many elements in numeric expression"),
            (r#"{"key": [{"numeric": [">=", 1, ">", 2]}]}"#, "Bad numeric range operator: >"),
            (r#"{"key": [{"numeric": [">", 3, "<", 1]}]}"#, "Bottom must be less than top"),
            (r#"{"key": [{"numeric": [">=", 3, "<=", 3]}]}"#, "Bottom must be less than top"),
            (r#"{"key": [{"numeric": [">", 20, "<="]}]}"#, "Value of <= must be numeric"),
            (r#"{"key": [{"numeric": [">", 20, 30]}]}"#, "Bad value in numeric range: 30"),
            (r#"{"key": [{"numeric": [">", 20, "test"]}]}"#, "Bad numeric range operator: test"),
            (r#"{"key": [{"numeric": [">", "20", "<", "30"]}]}"#, "Value of > must be numeric"),
            (r#"{"key": [{"numeric": [">", 20, "<", "30"]}]}"#, "Value of < must be numeric"),
            (r#"{"key": [{"numeric": [">", 20, "<", 30, "<", 50]}]}"#, "Too many terms in numeric range expression"),
            (r#"{"key": [{"numeric": 5}]}"#, "Value of numeric must be an array."),
            (r#"{"key": [{"exists": null}]}"#, "exists match pattern must be either true or false."),
            (r#"{"key": [{"exists": "no"}]}"#, "exists match pattern must be either true or false."),
            (
                r#"{"key": [{"anything-but": {"wrong-operator": null}}]}"#,
                "Unsupported anything-but pattern: wrong-operator",
            ),
            (r#"{"key": [{"anything-but": {"exists": false}}]}"#, "Unsupported anything-but pattern: exists"),
            (r#"{"key": [{"anything-but": {"prefix": false}}]}"#, "prefix match pattern must be a string"),
            (r#"{"key": [{"anything-but": {"suffix": ""}}]}"#, "Null prefix/suffix not allowed"),
            (r#"{"key": [{"anything-but": {}}]}"#, "Anything-But expression name not found"),
            (
                r#"{"key": [{"anything-but": true}]}"#,
                "Value of anything-but must be an array or single string/number value.",
            ),
            (
                r#"{"key": [{"anything-but": [null]}]}"#,
                "Inside anything but list, start|null|boolean is not supported.",
            ),
            (
                r#"{"key": [{"anything-but": ["a", 1]}]}"#,
                "Inside anything but list, either all values are number or string, mixed type is not supported",
            ),
            (r#"{"key": [{"cidr": 10}]}"#, "prefix match pattern must be a string"),
            (r#"{"key": [{"cidr": "10.0.0.0"}]}"#, "Malformed CIDR, one '/' required"),
            (r#"{"key": [{"cidr": "10.0.0.0/8/8"}]}"#, "Malformed CIDR, one '/' required"),
            (r#"{"key": [{"cidr": "10.0.0.0/x"}]}"#, "Malformed CIDR, mask bits must be an integer"),
            (r#"{"key": [{"cidr": "10.0.0.0/-1"}]}"#, "Malformed CIDR, mask bits must not be negative"),
            (r#"{"key": [{"cidr": "10.0.0.0/32"}]}"#, "IPv4 mask bits must be < 32"),
            (r#"{"key": [{"cidr": "::/128"}]}"#, "IPv6 mask bits must be < 128"),
            (r#"{"key": [{"cidr": "10.0.0.300/8"}]}"#, "Invalid IP address: 10.0.0.300"),
        ];
        for (policy, error) in cases {
            rejected(policy, Scope::MessageAttributes, error);
            rejected(policy, Scope::MessageBody, error);
        }
        assert!(FilterPolicy::parse("{not json", Scope::MessageAttributes).is_err());
    }

    // The guide, "Filter policy constraints".
    #[test]
    fn constraints() {
        let nested = r#"{"object": {"key": [{"prefix": "auto-"}]}}"#;
        rejected(
            nested,
            Scope::MessageAttributes,
            "Filter policy scope MessageAttributes does not support nested filter policy",
        );
        rejected(
            r#"{"a": ["x"], "$or": [{"b": ["y"]}, {"c": {"d": ["z"]}}]}"#,
            Scope::MessageAttributes,
            "Filter policy scope MessageAttributes does not support nested filter policy",
        );
        assert!(FilterPolicy::parse(nested, Scope::MessageBody).is_ok());

        let six_keys = r#"{"a": [1], "b": [1], "c": [1], "d": [1], "e": [1], "f": [1]}"#;
        rejected(six_keys, Scope::MessageAttributes, "Filter policy can not have more than 5 keys");
        rejected(six_keys, Scope::MessageBody, "Filter policy can not have more than 5 keys");
        // Only parent keys count in a nested policy, and only one `$or` branch at a time.
        assert!(
            FilterPolicy::parse(
                r#"{"a": {"b": [1], "c": [1], "d": [1], "e": [1], "f": [1], "g": [1]}}"#,
                Scope::MessageBody
            )
            .is_ok()
        );
        let branches = r#"{"a": [1], "b": [1], "c": [1], "$or": [{"d": [1], "e": [1]}, {"f": [1]}]}"#;
        assert!(FilterPolicy::parse(branches, Scope::MessageAttributes).is_ok());
        let too_wide = r#"{"a": [1], "b": [1], "c": [1], "$or": [{"d": [1], "e": [1], "f": [1]}, {"g": [1]}]}"#;
        rejected(too_wide, Scope::MessageAttributes, "Filter policy can not have more than 5 keys");

        let values = |count: usize| (0..count).map(|value| value.to_string()).collect::<Vec<_>>().join(", ");
        let at_limit = format!(r#"{{"a": [{}], "b": [{}], "c": [{}]}}"#, values(5), values(5), values(6));
        assert!(FilterPolicy::parse(&at_limit, Scope::MessageAttributes).is_ok());
        let over_limit = format!(r#"{{"a": [{}]}}"#, values(151));
        rejected(&over_limit, Scope::MessageAttributes, "Filter policy is too complex");
        let key_c_3_deep = r#"{"key_a": {"key_b": {"key_c": ["value_one", "value_two", "value_three", "value_four"]}},
            "key_d": {"key_e": ["value_one", "value_two", "value_three"]},
            "key_f": ["value_one", "value_two", "value_three"]}"#;
        rejected(key_c_3_deep, Scope::MessageBody, "Filter policy is too complex");
    }

    #[test]
    fn combination_counts_from_the_guide() {
        assert_eq!(
            combinations(
                r#"{"key_a": ["value_one", "value_two", "value_three"], "key_b": ["value_one"],
                    "key_c": ["value_one", "value_two"]}"#
            ),
            6
        );
        assert_eq!(
            combinations(
                r#"{"key_a": {"key_b": {"key_c": ["value_one", "value_two", "value_three", "value_four"]}},
                    "key_d": {"key_e": ["value_one", "value_two", "value_three"]}}"#
            ),
            72
        );
        assert_eq!(
            combinations(
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                    {"metricType": ["MetricType"], "$or": [{"metricId": [1234, 4321]}, {"spaceId": [1000, 2000, 3000]}]}]}"#
            ),
            7
        );
        assert_eq!(
            combinations(
                r#"{"$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
                    "detail": {"scope": ["Service"],
                        "$or": [{"source": ["aws.cloudwatch"]}, {"type": ["CloudWatch Alarm State Change"]}]}}"#
            ),
            32
        );
    }

    #[test]
    fn empty_policy_matches_everything() {
        let policy = FilterPolicy::parse("{}", Scope::MessageAttributes).expect("an empty policy is valid");
        assert!(policy.matches(&[], ""));
        assert!(policy.matches(&attributes(r#"{"a": {"Type": "String", "Value": "x"}}"#), ""));
        let policy = FilterPolicy::parse(" { } ", Scope::MessageBody).expect("an empty policy is valid");
        assert!(policy.matches(&[], "not JSON"));
    }
}
