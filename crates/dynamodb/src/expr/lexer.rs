//! Tokens of the expression language, with their byte spans so that a syntax error can quote
//! the text around the offending token as DynamoDB does.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Comma,
    LParen,
    RParen,
    Dot,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    In,
    Between,
    Not,
    And,
    Or,
    Set,
    Add,
    Delete,
    Remove,
    /// Digits, inside `[...]`.
    Index,
    Id,
    /// `#name`
    NameSub,
    /// `:value`
    ValueSub,
    /// Any other character.
    Unknown,
    Eof,
}

#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

fn is_id_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn keyword(word: &str) -> Option<Kind> {
    const KEYWORDS: [(&str, Kind); 9] = [
        ("IN", Kind::In),
        ("BETWEEN", Kind::Between),
        ("NOT", Kind::Not),
        ("AND", Kind::And),
        ("OR", Kind::Or),
        ("SET", Kind::Set),
        ("ADD", Kind::Add),
        ("DELETE", Kind::Delete),
        ("REMOVE", Kind::Remove),
    ];
    KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(word)).map(|(_, kind)| *kind)
}

/// Splits `text` into tokens, whitespace dropped; always ends with `Eof`.
pub fn tokenize(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let run = |from: usize, pred: fn(u8) -> bool| {
        let mut j = from;
        while j < bytes.len() && pred(bytes[j]) {
            j += 1;
        }
        j
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let (kind, end) = match c {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => {
                i += 1;
                continue;
            }
            b',' => (Kind::Comma, i + 1),
            b'(' => (Kind::LParen, i + 1),
            b')' => (Kind::RParen, i + 1),
            b'.' => (Kind::Dot, i + 1),
            b'[' => (Kind::LBracket, i + 1),
            b']' => (Kind::RBracket, i + 1),
            b'=' => (Kind::Eq, i + 1),
            b'+' => (Kind::Plus, i + 1),
            b'-' => (Kind::Minus, i + 1),
            b'<' => match bytes.get(i + 1) {
                Some(b'>') => (Kind::Ne, i + 2),
                Some(b'=') => (Kind::Le, i + 2),
                _ => (Kind::Lt, i + 1),
            },
            b'>' => match bytes.get(i + 1) {
                Some(b'=') => (Kind::Ge, i + 2),
                _ => (Kind::Gt, i + 1),
            },
            b'#' | b':' if bytes.get(i + 1).is_some_and(|b| is_id_char(*b)) => {
                (if c == b'#' { Kind::NameSub } else { Kind::ValueSub }, run(i + 1, is_id_char))
            }
            c if c.is_ascii_digit() => (Kind::Index, run(i, |b| b.is_ascii_digit())),
            c if is_id_start(c) => {
                let end = run(i, is_id_char);
                (keyword(&text[i..end]).unwrap_or(Kind::Id), end)
            }
            // One character, however many bytes it takes.
            _ => (Kind::Unknown, i + text[i..].chars().next().map_or(1, char::len_utf8)),
        };
        tokens.push(Token { kind, start, end });
        i = end;
    }
    tokens.push(Token { kind: Kind::Eof, start: text.len(), end: text.len() });
    tokens
}

/// DynamoDB's syntax error: the offending token, and the text from the token before it to the
/// token after it.
pub fn syntax_error(text: &str, tokens: &[Token], at: usize) -> String {
    let Some(token) = tokens.get(at) else {
        return "Syntax error; token: \"<EOF>\", near: \"\"".to_owned();
    };
    let shown = if token.kind == Kind::Eof { "<EOF>" } else { &text[token.start..token.end] };
    let from = if at == 0 { 0 } else { tokens[at - 1].start };
    let to = match tokens.get(at + 1) {
        Some(next) if next.kind != Kind::Eof => next.end,
        _ => text.len(),
    };
    format!("Syntax error; token: \"{shown}\", near: \"{}\"", &text[from..to])
}
