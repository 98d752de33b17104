//! The protobuf text format, read without a protobuf dependency: a lexer and a parser into
//! untyped messages (`Msg`) whose fields keep their line, so every later error can name it.
//! What the fields mean is the business of the caller (mod.rs, fields.rs, solver.rs).

use crate::net::spec::Pair;

pub use crate::net::caffe_error::CaffeError;

/// A parse or mapping error, with its line.
pub(super) fn err<T>(origin: &str, line: usize, msg: impl Into<String>) -> Result<T, CaffeError> {
    Err(CaffeError::at(origin, line, msg))
}

/// A field's value.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Scalar(String),
    Msg(Msg),
}

/// A message: its fields in order, with their lines.
#[derive(Clone, Debug, Default)]
pub(super) struct Msg {
    pub(super) fields: Vec<(String, Value, usize)>,
}

impl Msg {
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Value, usize)> + 'a {
        self.fields.iter().filter(move |f| f.0 == name).map(|f| (&f.1, f.2))
    }

    pub(super) fn scalar<'a>(&'a self, name: &'a str) -> Option<(&'a str, usize)> {
        self.all(name).find_map(|(v, l)| if let Value::Scalar(s) = v { Some((s.as_str(), l)) } else { None })
    }

    pub(super) fn msg<'a>(&'a self, name: &'a str) -> Option<&'a Msg> {
        self.all(name).find_map(|(v, _)| if let Value::Msg(m) = v { Some(m) } else { None })
    }

    /// Errors on a field not in `known`.
    pub(super) fn only(&self, known: &[&str], origin: &str, what: &str) -> Result<(), CaffeError> {
        match self.fields.iter().find(|f| !known.contains(&f.0.as_str())) {
            Some((name, _, line)) => {
                err(origin, *line, format!("unknown field '{name}' in {what}; hint: convoy reads {}", known.join(", ")))
            }
            None => Ok(()),
        }
    }
}

/// Tokens of the text format.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Colon,
    Open,
    Close,
}

pub(super) fn lex(text: &str, origin: &str) -> Result<Vec<(Tok, usize)>, CaffeError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ':' => {
                chars.next();
                out.push((Tok::Colon, line));
            }
            '{' | '<' => {
                chars.next();
                out.push((Tok::Open, line));
            }
            '}' | '>' => {
                chars.next();
                out.push((Tok::Close, line));
            }
            '"' | '\'' => {
                let q = c;
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return err(origin, line, "unterminated string"),
                        Some(c) if c == q => break,
                        Some('\\') => s.push(chars.next().unwrap_or('\\')),
                        Some('\n') => return err(origin, line, "newline in a string"),
                        Some(c) => s.push(c),
                    }
                }
                out.push((Tok::Str(s), line));
            }
            c if c.is_alphanumeric() || "_-+.".contains(c) => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || "_-+.".contains(c) {
                        s.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((Tok::Ident(s), line));
            }
            c => return err(origin, line, format!("unexpected character '{c}'")),
        }
    }
    Ok(out)
}

pub(super) fn parse_msg(toks: &[(Tok, usize)], pos: &mut usize, origin: &str, nested: bool) -> Result<Msg, CaffeError> {
    let mut m = Msg::default();
    loop {
        let Some((tok, line)) = toks.get(*pos) else {
            if nested {
                let last = toks.last().map_or(1, |t| t.1);
                return err(origin, last, "missing '}'");
            }
            return Ok(m);
        };
        let line = *line;
        match tok {
            Tok::Close if nested => {
                *pos += 1;
                return Ok(m);
            }
            Tok::Ident(name) => {
                *pos += 1;
                if toks.get(*pos).map(|t| &t.0) == Some(&Tok::Colon) {
                    *pos += 1;
                }
                match toks.get(*pos) {
                    Some((Tok::Open, _)) => {
                        *pos += 1;
                        let sub = parse_msg(toks, pos, origin, true)?;
                        m.fields.push((name.clone(), Value::Msg(sub), line));
                    }
                    Some((Tok::Ident(v) | Tok::Str(v), _)) => {
                        *pos += 1;
                        m.fields.push((name.clone(), Value::Scalar(v.clone()), line));
                    }
                    _ => return err(origin, line, format!("field '{name}' has no value")),
                }
            }
            other => return err(origin, line, format!("expected a field name, found {other:?}")),
        }
    }
}

pub(super) fn num<T: std::str::FromStr>(m: &Msg, name: &str, origin: &str) -> Result<Option<T>, CaffeError> {
    match m.scalar(name) {
        None => Ok(None),
        Some((s, line)) => s
            .parse()
            .map(Some)
            .map_err(|_| CaffeError::at(origin, line, format!("'{name}: {s}' is not a valid number"))),
    }
}

/// A spatial parameter given as `one` (e.g. `kernel_size`), or `X_h` and `X_w` (`kernel_h`).
pub(super) fn pair(m: &Msg, one: &str, name: &str, default: usize, origin: &str) -> Result<Pair, CaffeError> {
    let one: Option<usize> = num(m, one, origin)?;
    let h: Option<usize> = num(m, &format!("{name}_h"), origin)?;
    let w: Option<usize> = num(m, &format!("{name}_w"), origin)?;
    Ok(match (one, h, w) {
        (_, Some(h), Some(w)) => Pair::Two([h, w]),
        (Some(v), _, _) => Pair::One(v),
        _ => Pair::One(default),
    })
}
