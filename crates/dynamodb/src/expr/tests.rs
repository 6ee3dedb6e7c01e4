use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::number::Number;
use crate::value::Item;

fn n(s: &str) -> Value {
    Value::N(Number::parse(s).expect(s))
}

fn s(s: &str) -> Value {
    Value::S(s.to_owned())
}

fn ss(items: &[&str]) -> Value {
    Value::Ss(items.iter().map(|x| x.to_string()).collect())
}

/// Placeholder maps from `#name=attr` / `:value` pairs.
struct Env {
    names: HashMap<String, String>,
    values: HashMap<String, Value>,
}

fn env(names: &[(&str, &str)], values: &[(&str, Value)]) -> Env {
    Env {
        names: names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        values: values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    }
}

fn cond_in(env: &Env, text: &str) -> Result<Condition, String> {
    let mut p = Placeholders::new(&env.names, &env.values);
    parse_condition(text, "ConditionExpression", &mut p).map_err(|e| e.0)
}

fn cond(text: &str, values: &[(&str, Value)]) -> Condition {
    cond_in(&env(&[], values), text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn cond_err(text: &str, values: &[(&str, Value)]) -> String {
    cond_in(&env(&[], values), text).expect_err(text)
}

fn update_in(env: &Env, text: &str) -> Result<Update, String> {
    let mut p = Placeholders::new(&env.names, &env.values);
    parse_update(text, &mut p).map_err(|e| e.0)
}

fn update(text: &str, values: &[(&str, Value)]) -> Update {
    update_in(&env(&[], values), text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn update_err(text: &str, values: &[(&str, Value)]) -> String {
    update_in(&env(&[], values), text).expect_err(text)
}

fn item(pairs: &[(&str, Value)]) -> Item {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn applied(text: &str, values: &[(&str, Value)], start: &[(&str, Value)]) -> Result<Item, String> {
    let mut it = item(start);
    update(text, values).apply(&mut it).map_err(|e| e.0)?;
    Ok(it)
}

#[test]
fn comparisons() {
    let it = item(&[("a", n("5")), ("s", s("abc")), ("b", Value::Bool(true))]);
    let v = |x| vec![(":v", x)];
    for (text, value, expected) in [
        ("a = :v", n("5.0"), true),
        ("a <> :v", n("5"), false),
        ("a < :v", n("6"), true),
        ("a <= :v", n("5"), true),
        ("a > :v", n("5"), false),
        ("a >= :v", n("5"), true),
        ("s < :v", s("abd"), true),
        // Different types never compare.
        ("a = :v", s("5"), false),
        ("a < :v", s("9"), false),
        ("a <> :v", s("5"), true),
        // A missing attribute makes comparisons false, and <> true.
        ("gone = :v", n("1"), false),
        ("gone < :v", n("1"), false),
        ("gone <> :v", n("1"), true),
        ("b = :v", Value::Bool(true), true),
    ] {
        assert_eq!(cond(text, &v(value.clone())).eval(&it), expected, "{text} with {value:?}");
    }
}

#[test]
fn between_in_and_logic() {
    let it = item(&[("a", n("5")), ("s", s("m"))]);
    let vals = [(":lo", n("1")), (":hi", n("9")), (":x", n("5")), (":y", s("m"))];
    assert!(cond("a BETWEEN :lo AND :hi", &vals[..2]).eval(&it));
    assert!(!cond("s BETWEEN :lo AND :hi", &vals[..2]).eval(&it));
    assert!(cond("a IN (:lo, :x)", &[vals[0].clone(), vals[2].clone()]).eval(&it));
    assert!(cond("s in (:y)", &vals[3..]).eval(&it));
    // NOT binds tighter than AND, AND tighter than OR.
    let v = [(":t", n("5")), (":f", n("6"))];
    assert!(cond("a = :f AND a = :f OR a = :t", &v).eval(&it));
    assert!(!cond("a = :f AND (a = :f OR a = :t)", &v).eval(&it));
    assert!(cond("NOT a = :f AND a = :t", &v).eval(&it));
    assert!(!cond("NOT (a = :f OR a = :t)", &v).eval(&it));
    assert!(cond("a = :t OR a = :f AND a = :f", &v).eval(&it));
}

#[test]
fn functions() {
    let mut m = BTreeMap::new();
    m.insert("k".to_owned(), Value::L(vec![s("x"), n("1")]));
    let it = item(&[
        ("s", s("héllo𝄞")),
        ("b", Value::B(vec![1, 2, 3])),
        ("tags", ss(&["a", "b"])),
        ("ns", Value::Ns(vec![Number::from_i64(3)])),
        ("m", Value::M(m)),
        ("n", n("1")),
    ]);
    let check = |text: &str, values: &[(&str, Value)], expected: bool| {
        assert_eq!(cond(text, values).eval(&it), expected, "{text}");
    };
    check("attribute_exists(m.k[1])", &[], true);
    check("attribute_exists(m.k[2])", &[], false);
    check("attribute_not_exists(m.z)", &[], true);
    check("attribute_type(tags, :t)", &[(":t", s("SS"))], true);
    check("attribute_type(n, :t)", &[(":t", s("S"))], false);
    check("begins_with(s, :p)", &[(":p", s("hé"))], true);
    check("begins_with(b, :p)", &[(":p", Value::B(vec![1, 2]))], true);
    check("begins_with(n, :p)", &[(":p", s("1"))], false);
    check("contains(s, :p)", &[(":p", s("llo"))], true);
    check("contains(tags, :p)", &[(":p", s("b"))], true);
    check("contains(ns, :p)", &[(":p", n("3"))], true);
    check("contains(m.k, :p)", &[(":p", n("1"))], true);
    check("contains(tags, :p)", &[(":p", s("c"))], false);
    // size counts UTF-16 code units for strings, as DynamoDB does.
    check("size(s) = :n", &[(":n", n("7"))], true);
    check("size(b) = :n", &[(":n", n("3"))], true);
    check("size(m) = :n", &[(":n", n("1"))], true);
    check("size(m.k) > :n", &[(":n", n("1"))], true);
    check("size(n) = :n", &[(":n", n("1"))], false);
    check("size(gone) <> :n", &[(":n", n("1"))], true);
}

#[test]
fn names_placeholders_and_unused() {
    let e = env(&[("#a", "a.b"), ("#u", "x")], &[(":v", n("1")), (":w", n("2"))]);
    let mut p = Placeholders::new(&e.names, &e.values);
    let c = parse_condition("#a = :v", "FilterExpression", &mut p).expect("parse");
    // A name with a dot is one attribute.
    assert!(c.eval(&item(&[("a.b", n("1"))])));
    assert_eq!(
        p.finish().expect_err("unused").0,
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#u}"
    );
    let e = env(&[], &[(":v", n("1")), (":w", n("2")), (":x", n("3"))]);
    let mut p = Placeholders::new(&e.names, &e.values);
    parse_condition("a = :v", "ConditionExpression", &mut p).expect("parse");
    assert_eq!(
        p.finish().expect_err("unused").0,
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w, :x}"
    );
}

#[test]
fn condition_errors() {
    let v = |x| vec![(":v", x)];
    for (text, values, expected) in [
        ("", vec![], "Invalid ConditionExpression: The expression can not be empty;"),
        ("a-b", vec![], "Invalid ConditionExpression: Syntax error; token: \"-\", near: \"a-b\""),
        ("a = :v AND", v(n("1")), "Invalid ConditionExpression: Syntax error; token: \"<EOF>\", near: \"AND\""),
        ("a = :v b", v(n("1")), "Invalid ConditionExpression: Syntax error; token: \"b\", near: \":v b\""),
        (
            "size = :v",
            v(n("1")),
            "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: size",
        ),
        (
            "a.Name = :v",
            v(n("1")),
            "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: Name",
        ),
        (
            "size(a, b) = :v",
            v(n("1")),
            "Invalid ConditionExpression: Incorrect number of operands for operator or function; operator or function: size, number of operands: 2",
        ),
        ("foo(a)", vec![], "Invalid ConditionExpression: Invalid function name; function: foo"),
        ("Begins_With(a, :v)", v(s("x")), "Invalid ConditionExpression: Invalid function name; function: Begins_With"),
        (
            "attribute_type(a, :v)",
            v(s("X")),
            "Invalid ConditionExpression: Invalid attribute type name found; type: X, valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}",
        ),
        (
            "attribute_type(a, :v)",
            v(n("1")),
            "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: attribute_type, operand type: N",
        ),
        (
            "begins_with(a, :v)",
            v(n("1")),
            "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
        ),
        (
            "a < :v",
            v(Value::Bool(true)),
            "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: <, operand type: BOOL",
        ),
        (
            "size(:v) > a",
            v(n("1")),
            "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: size, operand type: N",
        ),
        (
            "attribute_exists(:v)",
            v(n("1")),
            "Invalid ConditionExpression: Operator or function requires a document path; operator or function: attribute_exists",
        ),
        (
            "attribute_exists(a) = :v",
            v(n("1")),
            "Invalid ConditionExpression: The function is not allowed to be used this way in an expression; function: attribute_exists",
        ),
        (
            "size(a)",
            vec![],
            "Invalid ConditionExpression: The function is not allowed to be used this way in an expression; function: size",
        ),
        (
            "list_append(a, :v)",
            v(n("1")),
            "Invalid ConditionExpression: The function is not allowed in a condition expression; function: list_append",
        ),
        ("((a = :v))", v(n("1")), "Invalid ConditionExpression: The expression has redundant parentheses;"),
        (
            "a = a",
            vec![],
            "Invalid ConditionExpression: The first operand must be distinct from the remaining operands for this operator or function; operator: =, first operand: [a]",
        ),
        (
            "contains(a.b[1], a.b[1])",
            vec![],
            "Invalid ConditionExpression: The first operand must be distinct from the remaining operands for this operator or function; operator: contains, first operand: [a, b, [1]]",
        ),
        (
            "a = :x",
            vec![],
            "Invalid ConditionExpression: An expression attribute value used in expression is not defined; attribute value: :x",
        ),
        (
            "#n = :v",
            v(n("1")),
            "Invalid ConditionExpression: An expression attribute name used in the document path is not defined; attribute name: #n",
        ),
        (
            "a[99999999999] = :v",
            v(n("1")),
            "Invalid ConditionExpression: List index is not within the allowable range; index: [99999999999]",
        ),
    ] {
        assert_eq!(cond_err(text, &values), expected, "{text}");
    }
    let bounds = [(":lo", n("5")), (":hi", n("1"))];
    assert_eq!(
        cond_err("a BETWEEN :lo AND :hi", &bounds),
        "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {N:5}, upper bound operand: AttributeValue: {N:1}"
    );
    let mixed = [(":lo", n("5")), (":hi", s("x"))];
    assert_eq!(
        cond_err("a BETWEEN :lo AND :hi", &mixed),
        "Invalid ConditionExpression: The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {N:5}, upper bound operand: AttributeValue: {S:x}"
    );
    let list = (0..101).map(|i| format!(":v{i}")).collect::<Vec<_>>();
    let values: Vec<(&str, Value)> = list.iter().map(|k| (k.as_str(), n("1"))).collect();
    assert_eq!(
        cond_err(&format!("a IN ({})", list.join(", ")), &values),
        "Invalid ConditionExpression: The IN operator is provided with too many operands; number of operands: 101"
    );
    let filter = env(&[], &[]);
    let mut p = Placeholders::new(&filter.names, &filter.values);
    assert_eq!(
        parse_condition("a = ", "FilterExpression", &mut p).expect_err("syntax").0,
        "Invalid FilterExpression: Syntax error; token: \"<EOF>\", near: \"= \""
    );
}

#[test]
fn parentheses_and_nesting() {
    let v = [(":v", n("1"))];
    let it = item(&[("a", n("1"))]);
    assert!(cond("(a = :v)", &v).eval(&it));
    assert!(cond("(a) = :v", &v).eval(&it));
    assert!(cond("(size(a)) <> :v", &v).eval(&it));
    assert!(cond("NOT NOT (a = :v)", &v).eval(&it));
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}a = :v{}", "(".repeat(500), ")".repeat(500));
    assert!(cond_err(&deep, &v).starts_with("Invalid ConditionExpression: Syntax error;"));
}

#[test]
fn update_semantics() {
    let list = |xs: &[&str]| Value::L(xs.iter().map(|x| s(x)).collect());
    // SET with arithmetic, if_not_exists, list_append in both orders.
    let out = applied(
        "SET a = a + :one, b = if_not_exists(b, :zero) - :one, c = list_append(c, :l), d = list_append(:l, c)",
        &[(":one", n("1")), (":zero", n("0")), (":l", list(&["z"]))],
        &[("a", n("1.5")), ("c", list(&["x", "y"]))],
    )
    .expect("apply");
    assert_eq!(out["a"], n("2.5"));
    assert_eq!(out["b"], n("-1"));
    assert_eq!(out["c"], list(&["x", "y", "z"]));
    assert_eq!(out["d"], list(&["z", "x", "y"]));
    // Right-hand sides read the item as it was.
    let out = applied("SET a = b, b = a", &[], &[("a", n("1")), ("b", n("2"))]).expect("swap");
    assert_eq!((out["a"].clone(), out["b"].clone()), (n("2"), n("1")));
    // An index past the end appends; nested map paths set.
    let mut m = BTreeMap::new();
    m.insert("l".to_owned(), list(&["a"]));
    let out = applied("SET m.l[10] = :v, m.x = :v", &[(":v", s("b"))], &[("m", Value::M(m))]).expect("nested");
    let Value::M(m) = &out["m"] else { panic!("map") };
    assert_eq!(m["l"], list(&["a", "b"]));
    assert_eq!(m["x"], s("b"));
    // REMOVE list elements by their original indexes.
    let out = applied("REMOVE l[1], l[3], gone", &[], &[("l", list(&["a", "b", "c", "d", "e"]))]).expect("remove");
    assert_eq!(out["l"], list(&["a", "c", "e"]));
    // ADD creates, adds numbers, unions sets; DELETE empties and removes.
    let out = applied(
        "ADD n :one, m :one, s :s DELETE d :d, e :e",
        &[(":one", n("1")), (":s", ss(&["b", "c"])), (":d", ss(&["x"])), (":e", ss(&["x"]))],
        &[("m", n("41")), ("s", ss(&["a", "b"])), ("d", ss(&["x", "y"])), ("e", ss(&["x"]))],
    )
    .expect("add/delete");
    assert_eq!(out["n"], n("1"));
    assert_eq!(out["m"], n("42"));
    assert!(out["s"].equals(&ss(&["a", "b", "c"])));
    assert!(out["d"].equals(&ss(&["y"])));
    assert!(!out.contains_key("e"));
    assert_eq!(update("SET a = :v REMOVE b", &[(":v", n("1"))]).paths(), vec![Path::attr("a"), Path::attr("b")]);
}

#[test]
fn update_apply_errors() {
    let one = [(":one", n("1"))];
    let err =
        |text: &str, values: &[(&str, Value)], start: &[(&str, Value)]| applied(text, values, start).expect_err(text);
    assert_eq!(
        err("SET a = b + :one", &one, &[]),
        "The provided expression refers to an attribute that does not exist in the item"
    );
    assert_eq!(
        err("SET a = b + :one", &one, &[("b", s("x"))]),
        "An operand in the update expression has an incorrect data type"
    );
    assert_eq!(
        err("ADD a :one", &one, &[("a", s("x"))]),
        "An operand in the update expression has an incorrect data type"
    );
    assert_eq!(
        err("SET a.b = :one", &one, &[]),
        "The document path provided in the update expression is invalid for update"
    );
    assert_eq!(
        err("SET a[0] = :one", &one, &[("a", n("1"))]),
        "The document path provided in the update expression is invalid for update"
    );
    let big = [(":big", n("9E+125"))];
    assert_eq!(
        err("SET a = a + :big", &big, &[("a", n("9E+125"))]),
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    );
    assert_eq!(
        err("ADD a :one", &one, &[("a", n("1E+38"))]),
        "Attempting to store more than 38 significant digits in a Number"
    );
}

#[test]
fn update_errors() {
    let v = |x| vec![(":v", x)];
    for (text, values, expected) in [
        (
            "SET a = :v SET b = :v",
            v(n("1")),
            "Invalid UpdateExpression: The \"SET\" section can only be used once in an update expression;",
        ),
        (
            "SET a = :v, a.b = :v",
            v(n("1")),
            "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a, b]",
        ),
        (
            "SET a.b = :v, a = :v",
            v(n("1")),
            "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a]",
        ),
        (
            "SET a.b = :v REMOVE a[0]",
            v(n("1")),
            "Invalid UpdateExpression: Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a, [0]]",
        ),
        (
            "ADD a :v",
            v(s("x")),
            "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: STRING, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "DELETE a :v",
            v(n("1")),
            "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND",
        ),
        ("ADD a b", vec![], "Invalid UpdateExpression: Syntax error; token: \"b\", near: \"a b\""),
        ("SET a = :v,", v(n("1")), "Invalid UpdateExpression: Syntax error; token: \"<EOF>\", near: \",\""),
        (
            "INVALID SYNTAX HERE",
            vec![],
            "Invalid UpdateExpression: Syntax error; token: \"INVALID\", near: \"INVALID SYNTAX\"",
        ),
        ("ADD hits : incr", vec![], "Invalid UpdateExpression: Syntax error; token: \":\", near: \"hits : incr\""),
        (
            "SET a = :v + b",
            v(s("x")),
            "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: +, operand type: S",
        ),
        (
            "SET a = list_append(a, :v)",
            v(n("1")),
            "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: N",
        ),
        (
            "SET a = if_not_exists(:v, a)",
            v(n("1")),
            "Invalid UpdateExpression: Operator or function requires a document path; operator or function: if_not_exists",
        ),
        (
            "SET a = size(b)",
            vec![],
            "Invalid UpdateExpression: The function is not allowed in an update expression; function: size",
        ),
        (
            "SET a = list_append(list_append(a, :v), :v)",
            v(Value::L(vec![])),
            "Invalid UpdateExpression: The function is not allowed to be used this way in an expression; function: list_append",
        ),
        (
            "SET a = if_not_exists(a)",
            vec![],
            "Invalid UpdateExpression: Incorrect number of operands for operator or function; operator or function: if_not_exists, number of operands: 1",
        ),
        (
            "REMOVE name",
            vec![],
            "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: name",
        ),
        (
            "SET a = :game",
            vec![],
            "Invalid UpdateExpression: An expression attribute value used in expression is not defined; attribute value: :game",
        ),
    ] {
        assert_eq!(update_err(text, &values), expected, "{text}");
    }
    // Nested if_not_exists is allowed.
    update("SET a = list_append(if_not_exists(a, :e), :e)", &[(":e", Value::L(vec![]))]);
}

#[test]
fn projection() {
    let e = env(&[("#n", "name")], &[]);
    let mut p = Placeholders::new(&e.names, &e.values);
    let paths = parse_projection("a.b[2].c, #n, a.b[0], x", &mut p).expect("parse");
    p.finish().expect("all used");
    let elem = |c: &str| {
        let mut m = BTreeMap::new();
        m.insert("c".to_owned(), s(c));
        m.insert("d".to_owned(), s("drop"));
        Value::M(m)
    };
    let mut a = BTreeMap::new();
    a.insert("b".to_owned(), Value::L(vec![elem("0"), elem("1"), elem("2")]));
    a.insert("other".to_owned(), n("1"));
    let it = item(&[("a", Value::M(a)), ("name", s("n")), ("y", n("1"))]);
    let out = project(&it, &paths);
    let Value::M(a) = &out["a"] else { panic!("map") };
    let Value::L(b) = &a["b"] else { panic!("list") };
    assert_eq!(b.len(), 2);
    assert_eq!(b[0], elem("0"));
    let Value::M(second) = &b[1] else { panic!("map") };
    assert_eq!(second.len(), 1);
    assert_eq!(second["c"], s("2"));
    assert_eq!(out["name"], s("n"));
    assert!(!out.contains_key("y") && !out.contains_key("x") && !a.contains_key("other"));

    let mut p = Placeholders::new(&e.names, &e.values);
    assert_eq!(
        parse_projection("a, a.b", &mut p).expect_err("overlap").0,
        "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a, b]"
    );
    assert_eq!(
        parse_projection("!!", &mut p).expect_err("syntax").0,
        "Invalid ProjectionExpression: Syntax error; token: \"!\", near: \"!!\""
    );
    assert_eq!(
        parse_projection("a, name", &mut p).expect_err("reserved").0,
        "Invalid ProjectionExpression: Attribute name is a reserved keyword; reserved keyword: name"
    );
}

fn key(text: &str, values: &[(&str, Value)], range: Option<&str>) -> Result<KeyCondition, String> {
    let e = env(&[("#s", "sk")], values);
    let mut p = Placeholders::new(&e.names, &e.values);
    parse_key_condition(text, &mut p, "pk", range).map_err(|e| e.0)
}

#[test]
fn key_conditions() {
    let vals = [(":p", s("x")), (":a", n("1")), (":b", n("5"))];
    let k = key("pk = :p AND #s BETWEEN :a AND :b", &vals, Some("sk")).expect("between");
    assert_eq!(k, KeyCondition { hash: s("x"), range: Some(RangeCondition::Between(n("1"), n("5"))) });
    let k = key(":a < #s AND :p = pk", &vals[..2], Some("sk")).expect("swapped");
    assert_eq!(k.range, Some(RangeCondition::Gt(n("1"))));
    let k = key("begins_with(#s, :p) and pk = :p", &vals[..1], Some("sk")).expect("prefix");
    assert_eq!(k.range, Some(RangeCondition::BeginsWith(s("x"))));
    assert_eq!(key("pk = :p", &vals[..1], None).expect("hash").range, None);

    for (text, range, expected) in [
        ("#s = :a", Some("sk"), "Query condition missed key schema element: pk"),
        ("pk = :p AND oth = :a", Some("sk"), "Query condition missed key schema element: sk"),
        ("pk < :p", None, "Query key condition not supported"),
        ("pk = :p AND #s = :a", None, "Query key condition not supported"),
        ("pk = :p OR #s = :a", Some("sk"), "Invalid operator used in KeyConditionExpression: OR"),
        ("pk = :p AND #s <> :a", Some("sk"), "Invalid operator used in KeyConditionExpression: <>"),
        (
            "pk = :p AND attribute_exists(#s)",
            Some("sk"),
            "Invalid operator used in KeyConditionExpression: attribute_exists",
        ),
        (
            "pk = #s",
            Some("sk"),
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        ),
        ("pk.x = :p", Some("sk"), "KeyConditionExpressions cannot have conditions on nested attributes"),
        ("size(pk) = :a", Some("sk"), "KeyConditionExpressions cannot contain nested operations"),
        ("pk = :p AND pk = :p", Some("sk"), "KeyConditionExpressions must only contain one condition per key"),
        (
            "pk = :p AND #s BETWEEN :b AND :a",
            Some("sk"),
            "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {N:5}, upper bound operand: AttributeValue: {N:1}",
        ),
        ("()", None, "Invalid KeyConditionExpression: Syntax error; token: \")\", near: \"()\""),
    ] {
        let used: Vec<(&str, Value)> = vals.iter().filter(|(k, _)| text.contains(k)).cloned().collect();
        assert_eq!(key(text, &used, range).expect_err(text), expected, "{text}");
    }
}

/// Tokens of the language, glued at random: the parsers must return, never panic.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "a",
        "b.c",
        "#n",
        "#m",
        ":v",
        ":w",
        "[0]",
        "[",
        "]",
        "(",
        ")",
        ",",
        ".",
        "=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "+",
        "-",
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "SET",
        "REMOVE",
        "ADD",
        "DELETE",
        "size",
        "size(a)",
        "attribute_exists(",
        "attribute_type(",
        "begins_with(",
        "contains(",
        "if_not_exists(",
        "list_append(",
        "x[1]",
        "é",
        "!",
        "#",
        ":",
        "1",
        " ",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

fn exercise(text: &str) {
    let e = env(&[("#n", "n"), ("#m", "m.x")], &[(":v", n("1")), (":w", ss(&["a"]))]);
    let it = item(&[("a", n("1")), ("n", Value::L(vec![n("1")]))]);
    let mut p = Placeholders::new(&e.names, &e.values);
    if let Ok(c) = parse_condition(text, "ConditionExpression", &mut p) {
        c.eval(&it);
    }
    let _ = parse_projection(text, &mut p).map(|paths| project(&it, &paths));
    if let Ok(u) = parse_update(text, &mut p) {
        let mut copy = it.clone();
        let _ = u.apply(&mut copy);
    }
    let _ = parse_key_condition(text, &mut p, "a", Some("n"));
    let _ = p.finish();
}

proptest! {
    #[test]
    fn parsers_never_panic_on_random_text(text in "\\PC{0,60}") {
        exercise(&text);
    }

    #[test]
    fn parsers_never_panic_on_token_soup(text in token_soup()) {
        exercise(&text);
    }
}

#[test]
fn regressions() {
    for text in ["((", "a[", "#", ":", "NOT", "a IN ()", "SET a = (b", "size((a)) = :v", ")", "a.", "é = :v", "  "] {
        exercise(text);
    }
}
