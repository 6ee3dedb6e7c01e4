//! The grammar: text to a raw tree that still holds placeholders and unchecked names. Only
//! syntax is checked here; `check` applies the rules DynamoDB checks after parsing.
//!
//! A parenthesis may open a condition or an operand; rather than backtrack (exponential on
//! nested parentheses) the parser returns either, and the caller decides what it needed.

use super::condition::Comparator;
use super::lexer::{Kind, Token, syntax_error, tokenize};

/// DynamoDB rejects longer expressions.
const MAX_EXPRESSION_SIZE: usize = 4096;
/// Nesting beyond this is refused as a syntax error, to bound recursion.
const MAX_NESTING: usize = 100;

#[derive(Debug, Clone)]
pub enum RawElem {
    Id(String),
    Name(String),
    /// The index's digits.
    Index(String),
}

#[derive(Debug, Clone)]
pub struct RawPath(pub Vec<RawElem>);

#[derive(Debug, Clone)]
pub enum RawOperand {
    Path(RawPath),
    Value(String),
    Func(String, Vec<RawOperand>),
    /// `+` (true) or `-`, in update expressions only.
    Arith(bool, Box<RawOperand>, Box<RawOperand>),
}

#[derive(Debug, Clone)]
pub enum RawCond {
    Compare(Comparator, RawOperand, RawOperand),
    Between(RawOperand, RawOperand, RawOperand),
    In(RawOperand, Vec<RawOperand>),
    /// A function call standing as a condition.
    Func(RawOperand),
    And(Box<RawCond>, Box<RawCond>),
    Or(Box<RawCond>, Box<RawCond>),
    Not(Box<RawCond>),
    Paren(Box<RawCond>),
}

#[derive(Debug, Clone)]
pub enum RawSection {
    Set(Vec<(RawPath, RawOperand)>),
    Remove(Vec<RawPath>),
    Add(Vec<(RawPath, String)>),
    Delete(Vec<(RawPath, String)>),
}

/// What a parenthesized group turned out to hold.
enum Either {
    Cond(RawCond),
    /// The operand, and whether it was itself in parentheses.
    Operand(RawOperand, bool),
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    pos: usize,
    /// The furthest token a failed rule reached: where the syntax error is reported.
    furthest: usize,
    depth: usize,
    redundant_parens: bool,
}

/// A failed rule; the position is in `Parser::furthest`.
struct Fail;

type PResult<T> = Result<T, Fail>;

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("The expression can not be empty;".to_owned());
        }
        Ok(Parser { text, tokens: tokenize(text), pos: 0, furthest: 0, depth: 0, redundant_parens: false })
    }

    fn peek(&self) -> Kind {
        self.tokens.get(self.pos).map_or(Kind::Eof, |t| t.kind)
    }

    fn peek_at(&self, ahead: usize) -> Kind {
        self.tokens.get(self.pos + ahead).map_or(Kind::Eof, |t| t.kind)
    }

    fn text_of(&self, at: usize) -> String {
        self.tokens.get(at).map_or(String::new(), |t| self.text[t.start..t.end].to_owned())
    }

    fn fail<T>(&mut self) -> PResult<T> {
        self.furthest = self.furthest.max(self.pos);
        Err(Fail)
    }

    fn bump(&mut self) -> String {
        let text = self.text_of(self.pos);
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        text
    }

    fn expect(&mut self, kind: Kind) -> PResult<String> {
        if self.peek() == kind { Ok(self.bump()) } else { self.fail() }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING { self.fail() } else { Ok(()) }
    }

    /// Finishes a parse: the whole input consumed, then the parenthesis rule.
    fn finish<T>(mut self, result: PResult<T>) -> Result<T, String> {
        let value = match result {
            Ok(value) if self.peek() == Kind::Eof => value,
            Ok(_) => {
                let _: PResult<()> = self.fail();
                return Err(syntax_error(self.text, &self.tokens, self.furthest));
            }
            Err(Fail) => return Err(syntax_error(self.text, &self.tokens, self.furthest)),
        };
        if self.redundant_parens {
            return Err("The expression has redundant parentheses;".to_owned());
        }
        Ok(value)
    }

    fn path(&mut self) -> PResult<RawPath> {
        let mut elems = vec![self.path_name()?];
        loop {
            match self.peek() {
                Kind::Dot => {
                    self.bump();
                    elems.push(self.path_name()?);
                }
                Kind::LBracket => {
                    self.bump();
                    let digits = self.expect(Kind::Index)?;
                    self.expect(Kind::RBracket)?;
                    elems.push(RawElem::Index(digits));
                }
                _ => return Ok(RawPath(elems)),
            }
        }
    }

    fn path_name(&mut self) -> PResult<RawElem> {
        match self.peek() {
            Kind::Id => Ok(RawElem::Id(self.bump())),
            Kind::NameSub => Ok(RawElem::Name(self.bump())),
            _ => self.fail(),
        }
    }

    /// A path, a value placeholder, or a function call (not a parenthesized operand).
    fn simple_operand(&mut self) -> PResult<RawOperand> {
        match self.peek() {
            Kind::ValueSub => Ok(RawOperand::Value(self.bump())),
            Kind::Id if self.peek_at(1) == Kind::LParen => {
                let name = self.bump();
                self.bump();
                let mut args = vec![self.operand()?];
                while self.peek() == Kind::Comma {
                    self.bump();
                    args.push(self.operand()?);
                }
                self.expect(Kind::RParen)?;
                Ok(RawOperand::Func(name, args))
            }
            Kind::Id | Kind::NameSub => Ok(RawOperand::Path(self.path()?)),
            _ => self.fail(),
        }
    }

    /// An operand, possibly in parentheses.
    fn operand(&mut self) -> PResult<RawOperand> {
        if self.peek() != Kind::LParen {
            return self.simple_operand();
        }
        self.enter()?;
        self.bump();
        let nested = self.peek() == Kind::LParen;
        let inner = self.operand()?;
        self.expect(Kind::RParen)?;
        self.redundant_parens |= nested;
        self.depth -= 1;
        Ok(inner)
    }

    fn condition(&mut self) -> PResult<RawCond> {
        let either = self.or()?;
        self.condition_from(either)
    }

    /// A bare function call is a condition; any other operand alone is not.
    fn condition_from(&mut self, either: Either) -> PResult<RawCond> {
        match either {
            Either::Cond(cond) => Ok(cond),
            Either::Operand(op @ RawOperand::Func(..), _) => Ok(RawCond::Func(op)),
            Either::Operand(..) => self.fail(),
        }
    }

    fn or(&mut self) -> PResult<Either> {
        let first = self.and()?;
        if self.peek() != Kind::Or {
            return Ok(first);
        }
        let mut left = self.condition_from(first)?;
        while self.peek() == Kind::Or {
            self.bump();
            let right = self.and()?;
            let right = self.condition_from(right)?;
            left = RawCond::Or(Box::new(left), Box::new(right));
        }
        Ok(Either::Cond(left))
    }

    fn and(&mut self) -> PResult<Either> {
        let first = self.not()?;
        if self.peek() != Kind::And {
            return Ok(first);
        }
        let mut left = self.condition_from(first)?;
        while self.peek() == Kind::And {
            self.bump();
            let right = self.not()?;
            let right = self.condition_from(right)?;
            left = RawCond::And(Box::new(left), Box::new(right));
        }
        Ok(Either::Cond(left))
    }

    fn not(&mut self) -> PResult<Either> {
        if self.peek() != Kind::Not {
            return self.primary();
        }
        self.enter()?;
        self.bump();
        let inner = self.not()?;
        let inner = self.condition_from(inner)?;
        self.depth -= 1;
        Ok(Either::Cond(RawCond::Not(Box::new(inner))))
    }

    fn primary(&mut self) -> PResult<Either> {
        let (left, parenthesized) = if self.peek() == Kind::LParen {
            self.enter()?;
            self.bump();
            let nested = self.peek() == Kind::LParen;
            let inner = self.or()?;
            self.expect(Kind::RParen)?;
            self.depth -= 1;
            match inner {
                Either::Cond(cond) => {
                    self.redundant_parens |= matches!(cond, RawCond::Paren(_));
                    return Ok(Either::Cond(RawCond::Paren(Box::new(cond))));
                }
                Either::Operand(op, inner_parens) => {
                    self.redundant_parens |= inner_parens && nested;
                    (op, true)
                }
            }
        } else {
            (self.simple_operand()?, false)
        };
        let comparator = match self.peek() {
            Kind::Eq => Some(Comparator::Eq),
            Kind::Ne => Some(Comparator::Ne),
            Kind::Lt => Some(Comparator::Lt),
            Kind::Le => Some(Comparator::Le),
            Kind::Gt => Some(Comparator::Gt),
            Kind::Ge => Some(Comparator::Ge),
            _ => None,
        };
        if let Some(comparator) = comparator {
            self.bump();
            let right = self.operand()?;
            return Ok(Either::Cond(RawCond::Compare(comparator, left, right)));
        }
        match self.peek() {
            Kind::Between => {
                self.bump();
                let low = self.operand()?;
                self.expect(Kind::And)?;
                let high = self.operand()?;
                Ok(Either::Cond(RawCond::Between(left, low, high)))
            }
            Kind::In => {
                self.bump();
                self.expect(Kind::LParen)?;
                let mut list = vec![self.operand()?];
                while self.peek() == Kind::Comma {
                    self.bump();
                    list.push(self.operand()?);
                }
                self.expect(Kind::RParen)?;
                Ok(Either::Cond(RawCond::In(left, list)))
            }
            _ => Ok(Either::Operand(left, parenthesized)),
        }
    }

    fn section(&mut self) -> PResult<RawSection> {
        let keyword = self.peek();
        if !matches!(keyword, Kind::Set | Kind::Remove | Kind::Add | Kind::Delete) {
            return self.fail();
        }
        self.bump();
        let mut section = match keyword {
            Kind::Set => RawSection::Set(Vec::new()),
            Kind::Remove => RawSection::Remove(Vec::new()),
            Kind::Add => RawSection::Add(Vec::new()),
            _ => RawSection::Delete(Vec::new()),
        };
        loop {
            let path = self.path()?;
            match &mut section {
                RawSection::Set(actions) => {
                    self.expect(Kind::Eq)?;
                    let value = self.set_value()?;
                    actions.push((path, value));
                }
                RawSection::Remove(paths) => paths.push(path),
                RawSection::Add(actions) | RawSection::Delete(actions) => {
                    let value = self.expect(Kind::ValueSub)?;
                    actions.push((path, value));
                }
            }
            if self.peek() != Kind::Comma {
                return Ok(section);
            }
            self.bump();
        }
    }

    fn set_value(&mut self) -> PResult<RawOperand> {
        let left = self.set_term()?;
        let plus = match self.peek() {
            Kind::Plus => true,
            Kind::Minus => false,
            _ => return Ok(left),
        };
        self.bump();
        let right = self.set_term()?;
        Ok(RawOperand::Arith(plus, Box::new(left), Box::new(right)))
    }

    fn set_term(&mut self) -> PResult<RawOperand> {
        if self.peek() != Kind::LParen {
            return self.simple_operand();
        }
        self.enter()?;
        self.bump();
        let nested = self.peek() == Kind::LParen;
        let inner = self.set_value()?;
        self.expect(Kind::RParen)?;
        self.redundant_parens |= nested;
        self.depth -= 1;
        Ok(inner)
    }
}

fn check_size(text: &str, with_size: bool) -> Result<(), String> {
    if text.len() <= MAX_EXPRESSION_SIZE {
        return Ok(());
    }
    let detail = if with_size { format!(" expression size: {}", text.len()) } else { String::new() };
    Err(format!("Expression size has exceeded the maximum allowed size;{detail}"))
}

pub fn parse_condition(text: &str) -> Result<RawCond, String> {
    let mut parser = Parser::new(text)?;
    check_size(text, true)?;
    let result = parser.condition();
    parser.finish(result)
}

pub fn parse_projection(text: &str) -> Result<Vec<RawPath>, String> {
    let mut parser = Parser::new(text)?;
    check_size(text, false)?;
    let mut result = parser.path().map(|p| vec![p]);
    while let Ok(paths) = &mut result {
        if parser.peek() != Kind::Comma {
            break;
        }
        parser.bump();
        match parser.path() {
            Ok(path) => paths.push(path),
            Err(fail) => result = Err(fail),
        }
    }
    parser.finish(result)
}

pub fn parse_update(text: &str) -> Result<Vec<RawSection>, String> {
    let mut parser = Parser::new(text)?;
    check_size(text, false)?;
    let mut result = parser.section().map(|s| vec![s]);
    while let Ok(sections) = &mut result {
        if parser.peek() == Kind::Eof {
            break;
        }
        match parser.section() {
            Ok(section) => sections.push(section),
            Err(fail) => result = Err(fail),
        }
    }
    parser.finish(result)
}
