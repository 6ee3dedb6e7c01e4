//! PartiQL, as DynamoDB's ExecuteStatement, BatchExecuteStatement and ExecuteTransaction accept
//! it: single-table SELECT, INSERT, UPDATE and DELETE, turned into the expression language's
//! conditions and updates so that one evaluator serves both.

use std::collections::BTreeMap;

use crate::expr::{Comparator, Condition, ExprError, Operand, Path, PathElem, SetValue, Update, UpdateAction};
use crate::number::Number;
use crate::value::{Item, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select { table: String, index: Option<String>, projection: Option<Vec<Path>>, condition: Option<Condition> },
    Insert { table: String, item: Item },
    Update { table: String, update: Update, condition: Condition },
    Delete { table: String, condition: Condition },
}

fn malformed(detail: impl std::fmt::Display) -> ExprError {
    ExprError(format!("Statement wasn't well formed, can't be processed: {detail}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare identifier or keyword.
    Word(String),
    /// A double-quoted identifier.
    Quoted(String),
    Str(String),
    Num(String),
    Param,
    Punct(&'static str),
    Eof,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Word(w) => f.write_str(w),
            Tok::Quoted(q) => write!(f, "\"{q}\""),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Num(n) => f.write_str(n),
            Tok::Param => f.write_str("?"),
            Tok::Punct(p) => f.write_str(p),
            Tok::Eof => f.write_str("<EOF>"),
        }
    }
}

const PUNCTS: [&str; 20] =
    ["<<", ">>", "<>", "!=", "<=", ">=", ",", "(", ")", "[", "]", "{", "}", ".", ":", "*", "=", "<", ">", "+"];

fn tokenize(text: &str) -> Result<Vec<Tok>, ExprError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with("--") {
            // A comment runs to the end of the line.
            while chars.next_if(|&(_, c)| c != '\n').is_some() {}
            continue;
        }
        if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some((_, q)) if q == c => {
                        // A doubled quote is the quote itself.
                        if chars.next_if(|&(_, n)| n == c).is_some() {
                            s.push(c);
                        } else {
                            break;
                        }
                    }
                    Some((_, other)) => s.push(other),
                    None => return Err(malformed("Unterminated quoted text")),
                }
            }
            tokens.push(if c == '\'' { Tok::Str(s) } else { Tok::Quoted(s) });
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
            let mut end = i;
            let mut prev = ' ';
            while let Some(&(j, d)) = chars.peek() {
                let sign_of_exponent = (d == '-' || d == '+') && matches!(prev, 'e' | 'E');
                if !(d.is_ascii_alphanumeric() || d == '.' || sign_of_exponent) {
                    break;
                }
                prev = d;
                end = j + d.len_utf8();
                chars.next();
            }
            tokens.push(Tok::Num(text[i..end].to_owned()));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            tokens.push(Tok::Word(text[i..end].to_owned()));
            continue;
        }
        if c == '?' {
            chars.next();
            tokens.push(Tok::Param);
            continue;
        }
        if c == '-' {
            chars.next();
            tokens.push(Tok::Punct("-"));
            continue;
        }
        match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                for _ in 0..p.len() {
                    chars.next();
                }
                tokens.push(Tok::Punct(p));
            }
            None => return Err(malformed(format!("Unexpected character: {c}"))),
        }
    }
    tokens.push(Tok::Eof);
    Ok(tokens)
}

/// Nesting deeper than this is refused, to bound recursion.
const MAX_NESTING: usize = 100;

struct Parser<'p> {
    tokens: Vec<Tok>,
    pos: usize,
    params: &'p [Value],
    next_param: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).unwrap_or(&Tok::Eof)
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn unexpected<T>(&self) -> Result<T, ExprError> {
        match self.peek() {
            Tok::Eof => Err(malformed("Unexpected end of statement")),
            tok => Err(malformed(format!("Unexpected token: {tok}"))),
        }
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let found = self.is_keyword(word);
        if found {
            self.bump();
        }
        found
    }

    fn keyword(&mut self, word: &str) -> Result<(), ExprError> {
        if self.eat_keyword(word) { Ok(()) } else { self.unexpected() }
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let found = matches!(self.peek(), Tok::Punct(q) if *q == p);
        if found {
            self.bump();
        }
        found
    }

    fn punct(&mut self, p: &str) -> Result<(), ExprError> {
        if self.eat_punct(p) { Ok(()) } else { self.unexpected() }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING { Err(malformed("Statement is nested too deeply")) } else { Ok(()) }
    }

    fn identifier(&mut self) -> Result<String, ExprError> {
        match self.peek() {
            Tok::Word(w) if !is_reserved_word(w) => {
                let w = w.clone();
                self.bump();
                Ok(w)
            }
            Tok::Quoted(q) => {
                let q = q.clone();
                self.bump();
                Ok(q)
            }
            _ => self.unexpected(),
        }
    }

    fn path(&mut self) -> Result<Path, ExprError> {
        let mut elems = vec![PathElem::Attr(self.identifier()?)];
        loop {
            if self.eat_punct(".") {
                elems.push(PathElem::Attr(self.identifier()?));
            } else if self.eat_punct("[") {
                match self.bump() {
                    Tok::Num(n) => {
                        let index = n.parse::<u32>().map_err(|_| {
                            ExprError(format!("List index is not within the allowable range; index: [{n}]"))
                        })?;
                        elems.push(PathElem::Index(index as usize));
                    }
                    Tok::Str(s) => elems.push(PathElem::Attr(s)),
                    _ => {
                        self.pos -= 1;
                        return self.unexpected();
                    }
                }
                self.punct("]")?;
            } else {
                return Ok(Path(elems));
            }
        }
    }

    fn param(&mut self) -> Result<Value, ExprError> {
        let value = self.params.get(self.next_param).cloned();
        self.next_param += 1;
        value.ok_or_else(|| ExprError("Number of parameters in request and statement don't match.".to_owned()))
    }

    /// A literal or a `?` parameter.
    fn value(&mut self) -> Result<Value, ExprError> {
        self.enter()?;
        let value = match self.bump() {
            Tok::Param => self.param()?,
            Tok::Str(s) => Value::S(s),
            Tok::Num(n) => number(&n)?,
            Tok::Punct("-") => match self.bump() {
                Tok::Num(n) => number(&format!("-{n}"))?,
                _ => {
                    self.pos -= 1;
                    return self.unexpected();
                }
            },
            Tok::Word(w) if w.eq_ignore_ascii_case("TRUE") => Value::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("FALSE") => Value::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("NULL") => Value::Null,
            Tok::Punct("[") => {
                let mut list = Vec::new();
                if !self.eat_punct("]") {
                    loop {
                        list.push(self.value()?);
                        if self.eat_punct("]") {
                            break;
                        }
                        self.punct(",")?;
                    }
                }
                Value::L(list)
            }
            Tok::Punct("{") => {
                let mut map = BTreeMap::new();
                if !self.eat_punct("}") {
                    loop {
                        let key = match self.bump() {
                            Tok::Str(s) => s,
                            Tok::Param => match self.param()? {
                                Value::S(s) => s,
                                other => {
                                    return Err(ExprError(format!(
                                        "Tuple keys must be of type String. Actual type: {} under {}",
                                        other.type_name(),
                                        "tuple"
                                    )));
                                }
                            },
                            _ => {
                                self.pos -= 1;
                                return self.unexpected();
                            }
                        };
                        self.punct(":")?;
                        let value = self.value()?;
                        if map.insert(key.clone(), value).is_some() {
                            return Err(ExprError(format!("Duplicate keys in tuple. Key: {key} under tuple")));
                        }
                        if self.eat_punct("}") {
                            break;
                        }
                        self.punct(",")?;
                    }
                }
                Value::M(map)
            }
            Tok::Punct("<<") => {
                let mut members = Vec::new();
                if !self.eat_punct(">>") {
                    loop {
                        members.push(self.value()?);
                        if self.eat_punct(">>") {
                            break;
                        }
                        self.punct(",")?;
                    }
                }
                bag(members)?
            }
            _ => {
                self.pos -= 1;
                return self.unexpected();
            }
        };
        self.depth -= 1;
        Ok(value)
    }

    /// An operand in a condition: a literal, a parameter, a path or `size(path)`.
    fn operand(&mut self) -> Result<Operand, ExprError> {
        if self.is_keyword("SIZE") && matches!(self.tokens.get(self.pos + 1), Some(Tok::Punct("("))) {
            self.bump();
            self.bump();
            let path = self.path()?;
            self.punct(")")?;
            return Ok(Operand::Size(Box::new(Operand::Path(path))));
        }
        if self.is_keyword("MISSING") {
            return Err(ExprError("MISSING must be compared using IS operator".to_owned()));
        }
        match self.peek() {
            Tok::Quoted(_) => Ok(Operand::Path(self.path()?)),
            Tok::Word(w) if !is_reserved_word(w) => Ok(Operand::Path(self.path()?)),
            _ => Ok(Operand::Value(self.value()?)),
        }
    }

    fn condition(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ExprError> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Condition, ExprError> {
        if self.eat_punct("(") {
            self.enter()?;
            let inner = self.condition()?;
            self.punct(")")?;
            self.depth -= 1;
            return Ok(inner);
        }
        for (name, arity) in [("BEGINS_WITH", 2), ("CONTAINS", 2), ("ATTRIBUTE_TYPE", 2), ("EXISTS", 1)] {
            if self.is_keyword(name) && matches!(self.tokens.get(self.pos + 1), Some(Tok::Punct("("))) {
                if name == "EXISTS" {
                    return Err(ExprError("EXISTS can only be used in ExecuteTransaction write requests.".to_owned()));
                }
                self.bump();
                self.bump();
                let mut args = vec![self.operand()?];
                while args.len() < arity {
                    self.punct(",")?;
                    args.push(self.operand()?);
                }
                self.punct(")")?;
                let mut args = args.into_iter();
                let (Some(a), Some(b)) = (args.next(), args.next()) else { return self.unexpected() };
                return Ok(match (name, b) {
                    ("BEGINS_WITH", b) => Condition::BeginsWith(a, b),
                    ("CONTAINS", b) => Condition::Contains(a, b),
                    (_, Operand::Value(Value::S(t))) => Condition::AttributeType(a, t),
                    _ => return Err(malformed("ATTRIBUTE_TYPE expects a type name")),
                });
            }
        }
        let left = self.operand()?;
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            let type_name = match self.bump() {
                Tok::Word(w) if w.eq_ignore_ascii_case("MISSING") => None,
                Tok::Word(w) => Some(is_type(&w).ok_or_else(|| {
                    ExprError(format!(
                        "Unsupported data type for IS operator: {}. Supported data types are [MISSING, NULL, BOOLEAN, BLOB, STRING, NUMERIC, STRUCT, TUPLE, LIST]",
                        w.to_ascii_uppercase()
                    ))
                })?),
                _ => {
                    self.pos -= 1;
                    return self.unexpected();
                }
            };
            let Operand::Path(path) = left else {
                return Err(ExprError(
                    "The left hand side argument to IS must be a Variable Reference, Literal, or Path".to_owned(),
                ));
            };
            let cond = match type_name {
                None if negated => return Ok(Condition::AttributeExists(path)),
                None => return Ok(Condition::AttributeNotExists(path)),
                Some(t) => Condition::AttributeType(Operand::Path(path), t.to_owned()),
            };
            return Ok(if negated { Condition::Not(Box::new(cond)) } else { cond });
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.operand()?;
            self.keyword("AND")?;
            let high = self.operand()?;
            return Ok(Condition::Between(left, low, high));
        }
        if self.eat_keyword("IN") {
            let close = if self.eat_punct("[") {
                "]"
            } else if self.eat_punct("(") {
                ")"
            } else {
                return self.unexpected();
            };
            let mut list = vec![self.operand()?];
            while self.eat_punct(",") {
                list.push(self.operand()?);
            }
            self.punct(close)?;
            return Ok(Condition::In(left, list));
        }
        let comparator = match self.peek() {
            Tok::Punct("=") => Comparator::Eq,
            Tok::Punct("<>") | Tok::Punct("!=") => Comparator::Ne,
            Tok::Punct("<") => Comparator::Lt,
            Tok::Punct("<=") => Comparator::Le,
            Tok::Punct(">") => Comparator::Gt,
            Tok::Punct(">=") => Comparator::Ge,
            _ => return self.unexpected(),
        };
        self.bump();
        let right = self.operand()?;
        Ok(Condition::Compare(comparator, left, right))
    }

    fn where_clause(&mut self) -> Result<Condition, ExprError> {
        self.keyword("WHERE")?;
        self.condition()
    }

    fn table(&mut self) -> Result<String, ExprError> {
        self.identifier()
    }

    fn select(&mut self) -> Result<Statement, ExprError> {
        let projection = if self.eat_punct("*") {
            None
        } else {
            let mut paths = vec![self.path()?];
            while self.eat_punct(",") {
                paths.push(self.path()?);
            }
            Some(paths)
        };
        self.keyword("FROM")?;
        let table = self.table()?;
        let index = if self.eat_punct(".") { Some(self.identifier()?) } else { None };
        let condition = if self.is_keyword("WHERE") { Some(self.where_clause()?) } else { None };
        Ok(Statement::Select { table, index, projection, condition })
    }

    fn insert(&mut self) -> Result<Statement, ExprError> {
        self.keyword("INTO")?;
        let table = self.table()?;
        self.keyword("VALUE")?;
        match self.value()? {
            Value::M(item) => Ok(Statement::Insert { table, item }),
            _ => Err(ExprError(
                "Unsupported format in item expression. Please use struct format {...} to express item values for insert statement."
                    .to_owned(),
            )),
        }
    }

    fn update(&mut self) -> Result<Statement, ExprError> {
        let table = self.table()?;
        let mut actions = Vec::new();
        loop {
            if self.eat_keyword("SET") {
                loop {
                    let path = self.path()?;
                    self.punct("=")?;
                    actions.push(self.set_action(path)?);
                    if !self.eat_punct(",") {
                        break;
                    }
                }
            } else if self.eat_keyword("REMOVE") {
                loop {
                    actions.push(UpdateAction::Remove(self.path()?));
                    if !self.eat_punct(",") {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        if actions.is_empty() {
            return self.unexpected();
        }
        let condition = self.where_clause()?;
        Ok(Statement::Update { table, update: Update { actions }, condition })
    }

    /// The right-hand side of `SET path = ...`.
    fn set_action(&mut self, path: Path) -> Result<UpdateAction, ExprError> {
        for name in ["SET_ADD", "SET_DELETE"] {
            if self.is_keyword(name) && matches!(self.tokens.get(self.pos + 1), Some(Tok::Punct("("))) {
                self.bump();
                self.bump();
                let target = self.path()?;
                if target != path {
                    return Err(ExprError(format!("The first argument to {name} must equal the assignment value")));
                }
                self.punct(",")?;
                let value = self.value()?;
                self.punct(")")?;
                if !matches!(value, Value::Ss(_) | Value::Ns(_) | Value::Bs(_)) {
                    return Err(ExprError(format!("The second argument to {name} must be a value with type SET")));
                }
                return Ok(if name == "SET_ADD" {
                    UpdateAction::Add(path, value)
                } else {
                    UpdateAction::Delete(path, value)
                });
            }
        }
        let left = self.set_term()?;
        let value = if self.eat_punct("+") {
            SetValue::Plus(Box::new(left), Box::new(self.set_term()?))
        } else if self.eat_punct("-") {
            SetValue::Minus(Box::new(left), Box::new(self.set_term()?))
        } else {
            left
        };
        Ok(UpdateAction::Set(path, value))
    }

    fn set_term(&mut self) -> Result<SetValue, ExprError> {
        if self.is_keyword("LIST_APPEND") && matches!(self.tokens.get(self.pos + 1), Some(Tok::Punct("("))) {
            self.bump();
            self.bump();
            self.enter()?;
            let a = self.set_term()?;
            self.punct(",")?;
            let b = self.set_term()?;
            self.punct(")")?;
            self.depth -= 1;
            return Ok(SetValue::ListAppend(Box::new(a), Box::new(b)));
        }
        match self.peek() {
            Tok::Quoted(_) => Ok(SetValue::Path(self.path()?)),
            Tok::Word(w) if !is_reserved_word(w) => Ok(SetValue::Path(self.path()?)),
            _ => Ok(SetValue::Value(self.value()?)),
        }
    }

    fn statement(&mut self) -> Result<Statement, ExprError> {
        let statement = if self.eat_keyword("SELECT") {
            self.select()?
        } else if self.eat_keyword("INSERT") {
            self.insert()?
        } else if self.eat_keyword("UPDATE") {
            self.update()?
        } else if self.eat_keyword("DELETE") {
            self.keyword("FROM")?;
            let table = self.table()?;
            let condition = self.where_clause()?;
            Statement::Delete { table, condition }
        } else {
            return self.unexpected();
        };
        if self.is_keyword("RETURNING") || self.is_keyword("ORDER") {
            let clause = self.bump();
            return Err(ExprError(format!("Unsupported clause: {}", clause.to_string().to_ascii_uppercase())));
        }
        self.eat_punct(";");
        if *self.peek() != Tok::Eof {
            return self.unexpected();
        }
        if self.next_param != self.params.len() {
            return Err(ExprError("Number of parameters in request and statement don't match.".to_owned()));
        }
        Ok(statement)
    }
}

/// Words that cannot be bare attribute names in these statements.
fn is_reserved_word(word: &str) -> bool {
    const WORDS: [&str; 21] = [
        "SELECT",
        "FROM",
        "WHERE",
        "INSERT",
        "INTO",
        "VALUE",
        "UPDATE",
        "SET",
        "REMOVE",
        "DELETE",
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "IS",
        "TRUE",
        "FALSE",
        "NULL",
        "MISSING",
        "RETURNING",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// The DynamoDB type an `IS <type>` test checks.
fn is_type(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_uppercase().as_str() {
        "NULL" => "NULL",
        "BOOLEAN" | "BOOL" => "BOOL",
        "STRING" => "S",
        "NUMERIC" | "NUMBER" => "N",
        "BLOB" => "B",
        "STRUCT" | "TUPLE" => "M",
        "LIST" => "L",
        _ => return None,
    })
}

fn number(text: &str) -> Result<Value, ExprError> {
    Number::parse(text).map(Value::N).map_err(|e| ExprError(e.to_string()))
}

/// `<<...>>`: a string or number set.
fn bag(members: Vec<Value>) -> Result<Value, ExprError> {
    if members.is_empty() {
        return Err(ExprError("Empty bags are not supported".to_owned()));
    }
    let unsupported = || {
        ExprError("Unsupported data type in Bag. DynamoDB only supports either numbers or strings in bags".to_owned())
    };
    let mut strings = Vec::new();
    let mut numbers = Vec::new();
    let mut binaries = Vec::new();
    for member in members {
        match member {
            Value::S(s) if numbers.is_empty() && binaries.is_empty() => {
                if !strings.contains(&s) {
                    strings.push(s);
                }
            }
            Value::N(n) if strings.is_empty() && binaries.is_empty() => {
                if !numbers.contains(&n) {
                    numbers.push(n);
                }
            }
            Value::B(b) if strings.is_empty() && numbers.is_empty() => {
                if !binaries.contains(&b) {
                    binaries.push(b);
                }
            }
            _ => return Err(unsupported()),
        }
    }
    Ok(if !strings.is_empty() {
        Value::Ss(strings)
    } else if !numbers.is_empty() {
        Value::Ns(numbers)
    } else {
        Value::Bs(binaries)
    })
}

/// Parses one statement, binding `?` parameters in order.
pub fn parse(text: &str, params: &[Value]) -> Result<Statement, ExprError> {
    let tokens = tokenize(text)?;
    Parser { tokens, pos: 0, params, next_param: 0, depth: 0 }.statement()
}

/// The top-level AND-ed `attribute = value` terms of a condition, in order: what a SELECT
/// needs to become a GetItem or a Query instead of a Scan.
pub fn key_equalities(cond: &Condition) -> Vec<(String, Value)> {
    fn collect(cond: &Condition, out: &mut Vec<(String, Value)>) {
        match cond {
            Condition::And(a, b) => {
                collect(a, out);
                collect(b, out);
            }
            Condition::Compare(Comparator::Eq, Operand::Path(p), Operand::Value(v))
            | Condition::Compare(Comparator::Eq, Operand::Value(v), Operand::Path(p))
                if p.0.len() == 1 =>
            {
                out.push((p.head().to_owned(), v.clone()));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(cond, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn s(x: &str) -> Value {
        Value::S(x.to_owned())
    }

    fn n(x: &str) -> Value {
        Value::N(Number::parse(x).expect(x))
    }

    fn item(pairs: &[(&str, Value)]) -> Item {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn err(text: &str, params: &[Value]) -> String {
        parse(text, params).expect_err(text).0
    }

    #[test]
    fn select() {
        let st =
            parse("SELECT * FROM \"Music\" WHERE Artist = 'Acme' AND \"Song\".x[1] > ?", &[n("3")]).expect("select");
        let Statement::Select { table, index, projection, condition: Some(condition) } = st else { panic!("{st:?}") };
        assert_eq!((table.as_str(), index, projection), ("Music", None, None));
        assert_eq!(key_equalities(&condition), vec![("Artist".to_owned(), s("Acme"))]);
        let mut song = BTreeMap::new();
        song.insert("x".to_owned(), Value::L(vec![n("1"), n("5")]));
        assert!(condition.eval(&item(&[("Artist", s("Acme")), ("Song", Value::M(song))])));

        let st = parse("select a, b.c from \"T\".\"Idx\"", &[]).expect("index");
        let Statement::Select { table, index, projection, condition } = st else { panic!() };
        assert_eq!((table.as_str(), index.as_deref(), condition), ("T", Some("Idx"), None));
        assert_eq!(
            projection,
            Some(vec![Path::attr("a"), Path(vec![PathElem::Attr("b".into()), PathElem::Attr("c".into())])])
        );
    }

    #[test]
    fn conditions() {
        let it = item(&[("pk", s("x")), ("n", n("5")), ("tags", Value::Ss(vec!["a".into()])), ("z", Value::Null)]);
        for (text, expected) in [
            ("pk = 'x' AND n BETWEEN 1 AND 9", true),
            ("n IN [1, 5]", true),
            ("n IN (1, 2)", false),
            ("other IS MISSING", true),
            ("pk IS NOT MISSING", true),
            ("z IS NULL", true),
            ("n IS NOT NULL", true),
            ("BEGINS_WITH(pk, 'x')", true),
            ("contains(tags, 'a')", true),
            ("attribute_type(n, 'N')", true),
            ("size(pk) = 1", true),
            ("NOT (n > 4) OR n <> 5", false),
            ("n != -5", true),
            ("pk = TRUE", false),
        ] {
            let st = parse(&format!("SELECT * FROM t WHERE {text}"), &[]).expect(text);
            let Statement::Select { condition: Some(c), .. } = st else { panic!() };
            assert_eq!(c.eval(&it), expected, "{text}");
        }
    }

    #[test]
    fn insert_literals() {
        let st = parse(
            "INSERT INTO \"T\" VALUE {'pk': 'x', 'n': 1.5, 'l': [1, 'two', true, null], 'm': {'k': ?}, 'ss': <<'a','b'>>, 'ns': <<1, 2>>, 'q': 'it''s'}",
            &[Value::B(vec![1])],
        )
        .expect("insert");
        let Statement::Insert { table, item } = st else { panic!() };
        assert_eq!(table, "T");
        assert_eq!(item["n"], n("1.5"));
        assert_eq!(item["l"], Value::L(vec![n("1"), s("two"), Value::Bool(true), Value::Null]));
        let Value::M(m) = &item["m"] else { panic!() };
        assert_eq!(m["k"], Value::B(vec![1]));
        assert_eq!(item["ss"], Value::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(item["ns"], Value::Ns(vec![Number::from_i64(1), Number::from_i64(2)]));
        assert_eq!(item["q"], s("it's"));
    }

    #[test]
    fn update_and_delete() {
        let st = parse(
            "UPDATE \"T\" SET a = 1, b = b + ?, c = list_append(c, ?) SET s = set_add(s, <<'z'>>) REMOVE d WHERE pk = 'x' AND sk = 1",
            &[n("2"), Value::L(vec![n("9")])],
        )
        .expect("update");
        let Statement::Update { table, update, condition } = st else { panic!() };
        assert_eq!(table, "T");
        assert_eq!(key_equalities(&condition), vec![("pk".to_owned(), s("x")), ("sk".to_owned(), n("1"))]);
        let mut it = item(&[("b", n("1")), ("c", Value::L(vec![])), ("d", n("0")), ("s", Value::Ss(vec!["y".into()]))]);
        update.apply(&mut it).expect("apply");
        assert_eq!(it["a"], n("1"));
        assert_eq!(it["b"], n("3"));
        assert_eq!(it["c"], Value::L(vec![n("9")]));
        assert!(it["s"].equals(&Value::Ss(vec!["y".into(), "z".into()])));
        assert!(!it.contains_key("d"));

        let st = parse("DELETE FROM \"T\" WHERE pk = ? AND sk = ?", &[s("x"), n("1")]).expect("delete");
        let Statement::Delete { condition, .. } = st else { panic!() };
        assert_eq!(key_equalities(&condition).len(), 2);
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("SELECT * FROM t WHERE a = ?", &[]),
            "Number of parameters in request and statement don't match."
        );
        assert_eq!(err("SELECT * FROM t", &[n("1")]), "Number of parameters in request and statement don't match.");
        assert_eq!(
            err("SELEC * FROM t", &[]),
            "Statement wasn't well formed, can't be processed: Unexpected token: SELEC"
        );
        assert_eq!(
            err("SELECT * FROM", &[]),
            "Statement wasn't well formed, can't be processed: Unexpected end of statement"
        );
        assert_eq!(
            err("DELETE FROM t", &[]),
            "Statement wasn't well formed, can't be processed: Unexpected end of statement"
        );
        assert_eq!(err("SELECT * FROM t WHERE a = MISSING", &[]), "MISSING must be compared using IS operator");
        assert_eq!(err("INSERT INTO t VALUE {'a': <<>>}", &[]), "Empty bags are not supported");
        assert_eq!(
            err("INSERT INTO t VALUE {'a': <<1, 'x'>>}", &[]),
            "Unsupported data type in Bag. DynamoDB only supports either numbers or strings in bags"
        );
        assert_eq!(
            err("INSERT INTO t VALUE [1]", &[]),
            "Unsupported format in item expression. Please use struct format {...} to express item values for insert statement."
        );
        assert_eq!(
            err("SELECT * FROM t WHERE a = 'x", &[]),
            "Statement wasn't well formed, can't be processed: Unterminated quoted text"
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text, &[Value::Null]);
        }

        #[test]
        fn never_panics_on_token_soup(tokens in prop::collection::vec(prop::sample::select(vec![
            "SELECT", "*", "FROM", "\"T\"", ".", "WHERE", "a", "=", "?", "'x'", "1", "AND", "OR", "NOT", "(", ")",
            "[", "]", "{", "}", "<<", ">>", ",", ":", "IS", "MISSING", "INSERT", "INTO", "VALUE", "UPDATE", "SET",
            "REMOVE", "DELETE", "BETWEEN", "IN", "size(", "list_append(", "set_add(", "-", "+", "--",
        ]), 0..30)) {
            let _ = parse(&tokens.join(" "), &[Value::Null, Value::Null]);
        }
    }
}
