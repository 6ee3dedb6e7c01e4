//! The Dockerfile language: parser directives (`# escape=`), comments, line continuations, one
//! instruction per logical line in shell or JSON (exec) form, and the word expansion Docker
//! applies at build time (quotes, `$VAR`, `${VAR:-default}`, `${VAR:+alternative}`).
//!
//! Hand-written rather than a crate's: the grammar is small and line-oriented, its error messages
//! must be Docker's (naming the line), and the domain crate may not use a JSON library for the
//! exec form (see ARCHITECTURE.md's invariants).

use std::collections::BTreeMap;
use std::fmt;

use crate::health::HealthConfig;

/// A parse error, with the line it is on (1-based) when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dockerfile parse error on line {}: {}", self.line, self.message)
    }
}

/// How a RUN, CMD or ENTRYPOINT gives its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// Run by the stage's shell (`/bin/sh -c`).
    Shell(String),
    /// `["executable", "arg"]`, run as it is.
    Exec(Vec<String>),
}

impl CommandLine {
    /// The argv it runs, given the stage's shell.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            CommandLine::Shell(text) => shell.iter().cloned().chain([text.clone()]).collect(),
            CommandLine::Exec(words) => words.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// ADD rather than COPY (local tar archives are extracted).
    pub add: bool,
    /// Unexpanded words; the last is the destination.
    pub sources: Vec<String>,
    pub destination: String,
    pub from: Option<String>,
    pub chown: Option<String>,
}

/// One instruction. Words are kept unexpanded: variables are substituted when the build reaches
/// the instruction, with the values of that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    From {
        image: String,
        name: Option<String>,
    },
    Run(CommandLine),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Copy(Copy),
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    /// `HEALTHCHECK NONE` is a check whose test is `["NONE"]`.
    Healthcheck(HealthConfig),
    Shell(Vec<String>),
    StopSignal(String),
    Onbuild(String),
    Maintainer(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Where it starts (1-based).
    pub line: usize,
    /// As Docker prints it in `Step n/m : ...`: the logical line with continuations joined.
    pub original: String,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let escape = escape_directive(text)?;
        let mut instructions = Vec::new();
        for (line, logical) in logical_lines(text, escape) {
            let instruction = parse_instruction(line, &logical, escape)?;
            if instructions.is_empty() && !matches!(instruction.command, Command::From { .. } | Command::Arg(_)) {
                return Err(ParseError { line, message: "no build stage in current context".into() });
            }
            instructions.push(instruction);
        }
        if !instructions.iter().any(|i| matches!(i.command, Command::From { .. })) {
            return Err(ParseError { line: 1, message: "the Dockerfile has no FROM instruction".into() });
        }
        Ok(Dockerfile { instructions })
    }
}

/// Instructions outside a Dockerfile (`docker commit --change`, `docker import --change`): each
/// text is one or more lines, parsed as a Dockerfile's would be but with no FROM required.
pub fn parse_instructions(texts: &[&str]) -> Result<Vec<Instruction>, ParseError> {
    texts
        .iter()
        .flat_map(|text| logical_lines(text, '\\'))
        .map(|(line, logical)| parse_instruction(line, &logical, '\\'))
        .collect()
}

/// Parser directives are `# key=value` comments at the very top; only `escape` changes parsing.
fn escape_directive(text: &str) -> Result<char, ParseError> {
    let mut escape = '\\';
    for (index, line) in text.lines().enumerate() {
        let Some(comment) = line.trim().strip_prefix('#') else { break };
        let Some((key, value)) = comment.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError {
                        line: index + 1,
                        message: format!("invalid escape token '{other}' does not match ` or \\"),
                    });
                }
            };
        }
    }
    Ok(escape)
}

/// Joins continuation lines and drops comments and blank lines; yields each logical line with
/// the number of its first physical line.
fn logical_lines(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || (current.is_none() && trimmed.trim_end().is_empty()) {
            continue;
        }
        let body = raw.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        let (_, logical) = current.get_or_insert_with(|| (index + 1, String::new()));
        logical.push_str(if logical.is_empty() { body.trim_start() } else { body });
        if !continues {
            lines.extend(current.take());
        }
    }
    lines.extend(current.filter(|(_, logical)| !logical.trim().is_empty()));
    lines
}

fn parse_instruction(line: usize, logical: &str, escape: char) -> Result<Instruction, ParseError> {
    let error = |message: String| ParseError { line, message };
    let logical = logical.trim();
    let (keyword, rest) = logical.split_once(char::is_whitespace).unwrap_or((logical, ""));
    let rest = rest.trim();
    let upper = keyword.to_ascii_uppercase();
    let (flags, rest) = take_flags(rest);
    let allowed: &[&str] = match upper.as_str() {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" => &["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"],
        "RUN" => &["mount", "network", "security"],
        "HEALTHCHECK" => &["interval", "timeout", "start-period", "start-interval", "retries"],
        _ => &[],
    };
    if let Some((name, _)) = flags.iter().find(|(name, _)| !allowed.contains(&name.as_str())) {
        return Err(error(format!("unknown flag: {name}")));
    }
    let flag = |name: &str| flags.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let need = |what: &str| {
        if rest.is_empty() { Err(error(format!("{upper} requires at least one argument{what}"))) } else { Ok(()) }
    };
    let command = match upper.as_str() {
        "FROM" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [image] => Command::From { image: image.to_string(), name: None },
                [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    if !valid_stage_name(name) {
                        return Err(error(format!(
                            "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                        )));
                    }
                    Command::From { image: image.to_string(), name: Some(name.to_ascii_lowercase()) }
                }
                _ => return Err(error("FROM requires either one or three arguments".into())),
            }
        }
        "RUN" | "CMD" | "ENTRYPOINT" => {
            if upper == "RUN" {
                need("")?;
                if flag("mount").is_some() {
                    return Err(error("RUN --mount needs BuildKit, which Stratus does not offer".into()));
                }
            }
            let command_line = command_line(rest);
            match upper.as_str() {
                "RUN" => Command::Run(command_line),
                "CMD" => Command::Cmd(command_line),
                _ => Command::Entrypoint(command_line),
            }
        }
        "COPY" | "ADD" => {
            let words = match json_array(rest) {
                Some(words) => words,
                None => split_words(rest, escape),
            };
            let Some((destination, sources)) = words.split_last().filter(|(_, sources)| !sources.is_empty()) else {
                return Err(error(format!(
                    "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
                )));
            };
            Command::Copy(Copy {
                add: upper == "ADD",
                sources: sources.to_vec(),
                destination: destination.clone(),
                from: flag("from"),
                chown: flag("chown"),
            })
        }
        "ENV" | "LABEL" => {
            need("")?;
            let pairs = name_values(rest, escape, upper == "ENV").map_err(error)?;
            if upper == "ENV" { Command::Env(pairs) } else { Command::Label(pairs) }
        }
        "ARG" => {
            need("")?;
            let args = split_words(rest, escape)
                .into_iter()
                .map(|word| match word.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (word, None),
                })
                .collect();
            Command::Arg(args)
        }
        "WORKDIR" => {
            need("")?;
            Command::Workdir(rest.to_string())
        }
        "USER" => {
            need("")?;
            Command::User(rest.to_string())
        }
        "STOPSIGNAL" => {
            need("")?;
            Command::StopSignal(rest.to_string())
        }
        "MAINTAINER" => {
            need("")?;
            Command::Maintainer(rest.to_string())
        }
        "ONBUILD" => {
            need("")?;
            let inner = rest.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
            if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(error(format!("{inner} isn't allowed as an ONBUILD trigger")));
            }
            parse_instruction(line, rest, escape)?;
            Command::Onbuild(rest.to_string())
        }
        "EXPOSE" | "VOLUME" => {
            need("")?;
            let words = json_array(rest).unwrap_or_else(|| split_words(rest, escape));
            if upper == "EXPOSE" { Command::Expose(words) } else { Command::Volume(words) }
        }
        "SHELL" => match json_array(rest) {
            Some(words) if !words.is_empty() => Command::Shell(words),
            _ => return Err(error("SHELL requires the arguments to be in JSON form".into())),
        },
        "HEALTHCHECK" => {
            let (kind, test) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match kind.to_ascii_uppercase().as_str() {
                "NONE" if test.trim().is_empty() => Command::Healthcheck(HealthConfig::none()),
                "NONE" => return Err(error("HEALTHCHECK NONE takes no arguments".into())),
                "CMD" if !test.trim().is_empty() => {
                    let test = match command_line(test.trim()) {
                        CommandLine::Exec(argv) => ["CMD".to_string()].into_iter().chain(argv).collect(),
                        CommandLine::Shell(text) => vec!["CMD-SHELL".to_string(), text],
                    };
                    Command::Healthcheck(HealthConfig::from_dockerfile(test, &flags).map_err(error)?)
                }
                _ => return Err(error("HEALTHCHECK requires CMD followed by a command, or NONE".into())),
            }
        }
        _ => return Err(error(format!("unknown instruction: {keyword}"))),
    };
    Ok(Instruction { line, original: logical.to_string(), command })
}

fn valid_stage_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Leading `--name=value` flags (a bare `--name` is `true`).
fn take_flags(mut rest: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let (name, value) = word.split_once('=').unwrap_or((word, "true"));
        flags.push((name.to_ascii_lowercase(), value.to_string()));
        rest = after.trim_start();
    }
    (flags, rest)
}

fn command_line(rest: &str) -> CommandLine {
    match json_array(rest) {
        Some(words) => CommandLine::Exec(words),
        None => CommandLine::Shell(rest.to_string()),
    }
}

/// `KEY=value KEY2="two words"`, or the old `KEY value` form (ENV only). Values keep their
/// quotes: they come off when the value is expanded.
fn name_values(rest: &str, escape: char, allow_old_form: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let first_has_equals = words.first().is_some_and(|w| w.contains('='));
    if !first_has_equals {
        let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !allow_old_form || value.trim().is_empty() {
            let instruction = if allow_old_form { "ENV" } else { "LABEL" };
            return Err(format!("{instruction} must have two arguments"));
        }
        return Ok(vec![(name.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(format!("invalid name-value pair: {word}")),
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(format!("Syntax error - can't find = in \"{word}\". Must be of the form: name=value")),
        })
        .collect()
}

/// Splits on whitespace outside quotes, keeping quotes and escapes in the words.
fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, c) if c == escape => {
                word.push(c);
                word.extend(chars.next());
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A JSON array of strings, or `None` when `text` is not one (then it is the shell form, as in
/// Docker).
fn json_array(text: &str) -> Option<Vec<String>> {
    let mut chars = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim().chars().peekable();
    let mut words = Vec::new();
    if chars.peek().is_none() {
        return Some(words);
    }
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next()? != '"' {
            return None;
        }
        let mut word = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => word.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    c @ ('"' | '\\' | '/') => c,
                    _ => return None,
                }),
                c => word.push(c),
            }
        }
        words.push(word);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Some(words),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

/// Expands one word as Docker does at build time: quotes are removed (nothing is expanded inside
/// single quotes), the escape character makes the next one literal, and `$NAME`, `${NAME}`,
/// `${NAME:-default}`, `${NAME-default}`, `${NAME:+alt}`, `${NAME+alt}` are substituted from
/// `variables` (unset names become empty).
pub fn expand(word: &str, variables: &BTreeMap<String, String>, escape: char) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), c) => out.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (_, c) if c == escape => match chars.next() {
                // Inside double quotes only `\"`, `\$` and the escape itself are escapes.
                Some(next) if quote.is_none() || matches!(next, '"' | '$') || next == escape => out.push(next),
                Some(next) => {
                    out.push(c);
                    out.push(next);
                }
                None => out.push(c),
            },
            (_, '$') => out.push_str(&substitute(&mut chars, variables, escape)?),
            (_, c) => out.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unexpected end of statement while looking for matching {}", quote.unwrap_or('"')));
    }
    Ok(out)
}

fn substitute(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    variables: &BTreeMap<String, String>,
    escape: char,
) -> Result<String, String> {
    let name_char = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    if chars.next_if_eq(&'{').is_none() {
        let name: String = std::iter::from_fn(|| chars.next_if(name_char)).collect();
        if name.is_empty() {
            return Ok("$".into());
        }
        return Ok(variables.get(&name).cloned().unwrap_or_default());
    }
    let name: String = std::iter::from_fn(|| chars.next_if(name_char)).collect();
    if name.is_empty() {
        return Err("missing variable name in ${}".into());
    }
    let colon = chars.next_if_eq(&':').is_some();
    let operator = match chars.next() {
        Some('}') if !colon => return Ok(variables.get(&name).cloned().unwrap_or_default()),
        Some(op @ ('-' | '+')) => op,
        Some(other) => return Err(format!("unsupported modifier ({other}) in substitution")),
        None => return Err("missing '}' in substitution".into()),
    };
    let mut depth = 0;
    let mut word = String::new();
    loop {
        match chars.next() {
            None => return Err("missing '}' in substitution".into()),
            Some('}') if depth == 0 => break,
            Some(c) => {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                word.push(c);
            }
        }
    }
    let value = variables.get(&name);
    let set = match colon {
        true => value.is_some_and(|v| !v.is_empty()),
        false => value.is_some(),
    };
    match (operator, set) {
        ('-', true) => Ok(value.cloned().unwrap_or_default()),
        ('-', false) | ('+', true) => expand(&word, variables, escape),
        _ => Ok(String::new()),
    }
}

/// Expands a whitespace-separated list (EXPOSE, VOLUME, COPY's words) into its words.
pub fn expand_words(
    words: &[String],
    variables: &BTreeMap<String, String>,
    escape: char,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for word in words {
        out.push(expand(word, variables, escape)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    proptest::proptest! {
        /// Any text, made of instruction words, quotes, continuations, flags, JSON and variables:
        /// parsed or refused with an error naming one of its lines, never a panic; and each word
        /// expands or is refused.
        #[test]
        fn any_dockerfile_parses_or_names_a_line(
            text in r#"((FROM|RUN|COPY|ADD|ENV|ARG|WORKDIR|USER|EXPOSE|LABEL|VOLUME|ENTRYPOINT|CMD|HEALTHCHECK|SHELL|STOPSIGNAL|ONBUILD|MAINTAINER|from|# escape=`|# syntax=x)[ \t]?|--[a-z]+=?|[\\`]\n|[\[\]"',=${}:/ \t\n]|[a-z0-9]{1,6}){0,60}"#,
            vars in proptest::collection::btree_map("[A-Za-z_]{1,3}", "[ -~]{0,5}", 0..3),
        ) {
            let lines = text.lines().count().max(1);
            if let Err(error) = Dockerfile::parse(&text) {
                proptest::prop_assert!(error.line >= 1 && error.line <= lines + 1, "{error} in {lines} lines");
            }
            for word in text.split_whitespace() {
                let _ = expand(word, &vars, '\\');
            }
        }
    }

    fn commands(text: &str) -> Vec<Command> {
        Dockerfile::parse(text).unwrap().instructions.into_iter().map(|i| i.command).collect()
    }

    fn error(text: &str) -> String {
        Dockerfile::parse(text).unwrap_err().to_string()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn instructions_continuations_and_comments() {
        let file = Dockerfile::parse(
            "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM $BASE AS build\n\n# a comment\nRUN echo a && \\\n  # inside\n  echo b\nCMD [\"sh\", \"-c\", \"echo \\\"hi\\\"\"]\nentrypoint /bin/app\n",
        )
        .unwrap();
        let lines: Vec<usize> = file.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![2, 3, 6, 9, 10]);
        assert_eq!(file.instructions[2].original, "RUN echo a &&   echo b");
        assert_eq!(
            file.instructions.into_iter().map(|i| i.command).collect::<Vec<_>>(),
            vec![
                Command::Arg(vec![("BASE".into(), Some("busybox".into()))]),
                Command::From { image: "$BASE".into(), name: Some("build".into()) },
                Command::Run(CommandLine::Shell("echo a &&   echo b".into())),
                Command::Cmd(CommandLine::Exec(strings(&["sh", "-c", "echo \"hi\""]))),
                Command::Entrypoint(CommandLine::Shell("/bin/app".into())),
            ]
        );
    }

    #[test]
    fn escape_directive_changes_the_continuation() {
        let got = commands("# escape=`\nFROM busybox\nRUN echo a `\n  b\\c\n");
        assert_eq!(got[1], Command::Run(CommandLine::Shell("echo a   b\\c".into())));
        assert_eq!(
            error("# escape=x\nFROM busybox"),
            "dockerfile parse error on line 1: invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn copy_env_label_and_friends() {
        let got = commands(
            "FROM busybox\nCOPY --from=build --chown=1:2 /out/a b* /dst/\nADD [\"x y\", \"/z\"]\nENV A=1 B=\"two words\"\nENV OLD some value\nLABEL a.b=c\nEXPOSE 80/tcp 53/udp\nVOLUME [\"/data\"]\nSHELL [\"/bin/sh\", \"-ec\"]\nHEALTHCHECK --interval=5s CMD true\nHEALTHCHECK NONE\nSTOPSIGNAL SIGINT\nUSER 1000:1000\nWORKDIR /app\n",
        );
        assert_eq!(
            got[1],
            Command::Copy(Copy {
                add: false,
                sources: strings(&["/out/a", "b*"]),
                destination: "/dst/".into(),
                from: Some("build".into()),
                chown: Some("1:2".into())
            })
        );
        assert!(
            matches!(&got[2], Command::Copy(c) if c.add && c.sources == strings(&["x y"]) && c.destination == "/z")
        );
        assert_eq!(got[3], Command::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())]));
        assert_eq!(got[4], Command::Env(vec![("OLD".into(), "some value".into())]));
        assert_eq!(got[5], Command::Label(vec![("a.b".into(), "c".into())]));
        assert_eq!(got[6], Command::Expose(strings(&["80/tcp", "53/udp"])));
        assert_eq!(got[7], Command::Volume(strings(&["/data"])));
        assert_eq!(got[8], Command::Shell(strings(&["/bin/sh", "-ec"])));
        assert!(
            matches!(&got[9], Command::Healthcheck(check) if check.interval == std::time::Duration::from_secs(5) && check.test == ["CMD-SHELL", "true"])
        );
        assert_eq!(got[10], Command::Healthcheck(HealthConfig::none()));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(error("FROM busybox\n\nRUNN echo\n"), "dockerfile parse error on line 3: unknown instruction: RUNN");
        assert_eq!(error("RUN echo\n"), "dockerfile parse error on line 1: no build stage in current context");
        assert_eq!(
            error("FROM a b\n"),
            "dockerfile parse error on line 1: FROM requires either one or three arguments"
        );
        assert_eq!(
            error("FROM busybox\nCOPY onlyone\n"),
            "dockerfile parse error on line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            error("FROM busybox\nENV\n"),
            "dockerfile parse error on line 2: ENV requires at least one argument"
        );
        assert_eq!(error("FROM busybox\nCOPY --frm=x a b\n"), "dockerfile parse error on line 2: unknown flag: frm");
        assert_eq!(
            error("FROM busybox\nSHELL sh -c\n"),
            "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            error("# only a comment\n"),
            "dockerfile parse error on line 1: the Dockerfile has no FROM instruction"
        );
        assert_eq!(
            error("FROM busybox\nLABEL nolabel\n"),
            "dockerfile parse error on line 2: LABEL must have two arguments"
        );
        assert_eq!(
            error("FROM busybox\nONBUILD FROM x\n"),
            "dockerfile parse error on line 2: FROM isn't allowed as an ONBUILD trigger"
        );
    }

    #[test]
    fn json_form_only_when_it_is_valid_json() {
        assert_eq!(json_array(r#"["a", "b\u0041\n"]"#), Some(strings(&["a", "bA\n"])));
        assert_eq!(json_array("[]"), Some(Vec::new()));
        assert_eq!(json_array("[a, b]"), None);
        assert_eq!(json_array(r#"["a" "b"]"#), None);
        assert_eq!(command_line("[not json"), CommandLine::Shell("[not json".into()));
    }

    #[test]
    fn expansion_like_docker() {
        let vars: BTreeMap<String, String> = [("A", "1"), ("EMPTY", ""), ("P", "/usr/bin")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let check = |word: &str, expected: &str| assert_eq!(expand(word, &vars, '\\').unwrap(), expected, "{word}");
        check("$A", "1");
        check("${A}x", "1x");
        check("$Ax", "");
        check("${MISSING:-def}", "def");
        check("${EMPTY:-def}", "def");
        check("${EMPTY-def}", "");
        check("${A:+alt}", "alt");
        check("${EMPTY:+alt}", "");
        check("${EMPTY+alt}", "alt");
        check("${MISSING:-${P}/x}", "/usr/bin/x");
        check("'$A'", "$A");
        check("\"$A two\"", "1 two");
        check("\\$A", "$A");
        check("a\\ b", "a b");
        check("\"a\\b\"", "a\\b");
        check("cost$", "cost$");
        assert!(expand("${A", &vars, '\\').is_err());
        assert!(expand("${A?x}", &vars, '\\').is_err());
        assert!(expand("\"open", &vars, '\\').is_err());
        assert_eq!(split_words("a \"b c\" 'd e'  f\\ g", '\\'), strings(&["a", "\"b c\"", "'d e'", "f\\ g"]));
    }
}
