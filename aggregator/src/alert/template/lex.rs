//! Lexing, as Go's text/template lexer reads a template: text and actions (`{{ … }}`, trim
//! markers with any space, comments only right inside the braces), then each action's
//! tokens: strings with Go's escapes, character constants, numbers in every Go form
//! (`0x1F`, `0o17`, `0b101`, `017`, `1_000`, `0x1p-2`, `1i`), variables, fields, identifiers,
//! with Go's rules for what may follow what.

use super::TemplateError;
use super::parse::err;

/// A token's byte offset in the template source and its text as written.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub pos: usize,
    pub raw: String,
    /// Whether a space comes before it (Go wants one between two operands).
    pub spaced: bool,
}

pub(super) enum Item {
    Text(String),
    /// An action's text and its byte offset in the source.
    Action(String, usize),
}

/// The byte offset of `part`, a slice of `whole`, within it.
pub(super) fn offset(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Splits text and actions, applying trim markers and dropping comments.
pub(super) fn split(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[i + 2..];
        // Go's trim markers: `-` and a space, tab, CR or newline.
        let go_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
        let (after, trim_before) = match after.strip_prefix('-') {
            Some(a) if a.starts_with(go_space) => (&a[1..], true),
            _ => (after, false),
        };
        if trim_before {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let close = find_close(after).ok_or_else(|| err(format!("unclosed action in {src:?}")))?;
        let mut body = &after[..close];
        trim_next = false;
        if let Some(b) = body
            .strip_suffix('-')
            .filter(|b| b.ends_with(go_space))
            .map(|b| &b[..b.len() - 1])
        {
            body = b;
            trim_next = true;
        }
        // A comment opens right at `{{` (or `{{- `) and closes right before `}}` (or ` -}}`),
        // as Go's lexer wants; `{{ /* c */ }}` is an action with a `/` in it.
        let comment = body.starts_with("/*") && body.find("*/") == Some(body.len() - 2);
        if body.starts_with("/*") && !comment {
            return Err(err(format!(
                "comment ends before closing delimiter in {src:?}"
            )));
        }
        let body = body.trim();
        if !comment {
            items.push(Item::Action(body.to_string(), offset(src, body)));
        }
        rest = &after[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// The `}}` closing an action, skipping quoted strings and comments.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    if s.starts_with("/*") {
        let end = s.find("*/")?;
        return s[end..].find("}}").map(|j| end + j);
    }
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' && q != b'`' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => {
                if b[i] == b'"' || b[i] == b'`' || b[i] == b'\'' {
                    quote = Some(b[i]);
                } else if b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Str(String),
    Num(f64),
    Int(i64),
    /// An imaginary literal (`1i`): Go's complex128, printed `(0+1i)`.
    Imag(f64),
    /// A function name and the fields chained to it (`first.Labels`).
    Ident(String, Vec<String>),
    /// `$name` (or `$`) and its fields.
    Var(String, Vec<String>),
    /// `.A.B` (`.` alone: no fields).
    Field(Vec<String>),
    Bar,
    Open,
    /// `)` and the fields chained right after it.
    Close(Vec<String>),
    Declare,
    Assign,
    Comma,
}

/// Splits an action into tokens.
pub(super) fn tokens(s: &str, base: usize) -> Result<(Vec<Tok>, Vec<Meta>), TemplateError> {
    let b: Vec<char> = s.chars().collect();
    // Byte offsets of the characters (and of the end).
    let mut at: Vec<usize> = s.char_indices().map(|(k, _)| k).collect();
    at.push(s.len());
    let mut meta: Vec<Meta> = Vec::new();
    let mut out = Vec::new();
    let mut i = 0;
    let fields = |i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        // A `.` before a digit starts a number (Go's lexer), not a field.
        while *i < b.len() && b[*i] == '.' && !b.get(*i + 1).is_some_and(char::is_ascii_digit) {
            let start = *i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            if j == start {
                break;
            }
            f.push(b[start..j].iter().collect());
            *i = j;
        }
        f
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        let before = out.len();
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Tok::Bar);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                out.push(Tok::Close(fields(&mut i)));
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if b.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '\'' => {
                // A character constant: an int, as Go's lexer reads it.
                let mut j = i + 1;
                let mut text = String::new();
                while let Some(&d) = b.get(j) {
                    if d == '\'' {
                        break;
                    }
                    text.push(d);
                    if d == '\\'
                        && let Some(&e) = b.get(j + 1)
                    {
                        text.push(e);
                        j += 1;
                    }
                    j += 1;
                }
                if b.get(j) != Some(&'\'') {
                    return Err(err(format!("unterminated character constant in {s:?}")));
                }
                let c = char_constant(&text)
                    .filter(|_| text != "\\\"")
                    .ok_or_else(|| err(format!("malformed character constant: '{text}'")))?;
                out.push(Tok::Int(i64::from(u32::from(c))));
                i = j + 1;
            }
            '"' | '`' => {
                let mut j = i + 1;
                let mut text = String::new();
                loop {
                    let Some(&d) = b.get(j) else {
                        return Err(err(format!("unterminated string in {s:?}")));
                    };
                    j += 1;
                    if d == c {
                        break;
                    }
                    if d == '\n' && c == '"' {
                        return Err(err(format!("unterminated quoted string in {s:?}")));
                    }
                    if d == '\\' && c == '"' {
                        // strconv.Unquote's escapes, \' excepted (a double-quoted string's).
                        let rest: String = b[j..].iter().take(9).collect();
                        let (ch, used) = string_escape(&rest)
                            .ok_or_else(|| err(format!("invalid syntax: bad escape in {s:?}")))?;
                        text.push(ch);
                        j += used;
                    } else {
                        text.push(d);
                    }
                }
                out.push(Tok::Str(text));
                i = j;
            }
            '$' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                let name: String = b[i..j].iter().collect();
                i = j;
                out.push(Tok::Var(name, fields(&mut i)));
                terminated(&b, i)?;
            }
            '.' if !b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(Tok::Field(f));
                terminated(&b, i)?;
            }
            c if c.is_ascii_digit() || c == '+' || c == '-' || c == '.' => {
                // Go's scanNumber: an optional sign, digits with a base prefix and `_`, a
                // point, an exponent with its sign, `i`; a letter right after is an error.
                let mut j = i + 1;
                while j < b.len() {
                    let d = b[j];
                    // A sign right after an exponent letter (`1e-3`, `0x1p-2`; in hex, `e` is
                    // a digit).
                    let exp_sign = matches!(d, '+' | '-')
                        && (matches!(b[j - 1], 'p' | 'P')
                            || (matches!(b[j - 1], 'e' | 'E') && !is_hex(&b[i..j])));
                    if d.is_alphanumeric() || d == '_' || d == '.' || exp_sign {
                        j += 1;
                    } else {
                        break;
                    }
                }
                let word: String = b[i..j].iter().collect();
                i = j;
                out.push(go_number(&word).map_err(err)?);
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                let word: String = b[i..j].iter().collect();
                i = j;
                out.push(Tok::Ident(word, fields(&mut i)));
                terminated(&b, i)?;
            }
            c => {
                return Err(err(format!(
                    "unrecognized character in action: {} (in {s:?})",
                    go_rune(c)
                )));
            }
        }
        if out.len() > before {
            meta.push(Meta {
                pos: base + at[start],
                raw: s[at[start]..at[i.min(b.len())]].to_string(),
                spaced: start == 0 || b[start - 1].is_whitespace(),
            });
        }
    }
    Ok((out, meta))
}

/// Whether the number text so far has a hex prefix (where `e` is a digit).
fn is_hex(w: &[char]) -> bool {
    let w: Vec<char> = w
        .iter()
        .copied()
        .skip_while(|c| *c == '+' || *c == '-')
        .collect();
    w.len() > 1 && w[0] == '0' && (w[1] == 'x' || w[1] == 'X')
}

/// Go's `%#U` of a character: `U+0027 '''`.
fn go_rune(c: char) -> String {
    format!("U+{:04X} '{c}'", c as u32)
}

/// Go's lexer after a variable, field or identifier: a space, `.`, `,`, `|`, `:`, `)`, `(`
/// or the end must follow (`$value'c'` is a bad character).
fn terminated(b: &[char], i: usize) -> Result<(), TemplateError> {
    match b.get(i) {
        None => Ok(()),
        Some(c) if c.is_whitespace() || ".,|:)(".contains(*c) => Ok(()),
        Some(c) => Err(err(format!("bad character {}", go_rune(*c)))),
    }
}

/// A number token as Go's parser reads the literal: an int (with `0x`, `0o`, `0b` or a
/// leading `0` for octal, `_` between digits) unless written with `.`, `e`, `p` (a float,
/// hex floats included), `i` for imaginary; an integer literal past int64 is an error.
fn go_number(w: &str) -> Result<Tok, String> {
    let bad = || format!("bad number syntax: {w:?}");
    if let Some(im) = w.strip_suffix('i') {
        // ParseFloat's syntax only: decimal (`017i` is 17i) or a hex float.
        return go_float_syntax(im).map(Tok::Imag).ok_or_else(bad);
    }
    let (neg, body) = match w.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, w.strip_prefix('+').unwrap_or(w)),
    };
    if !underscores_ok(body) {
        return Err(bad());
    }
    let clean = body.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit())
    {
        u64::from_str_radix(&lower[1..], 8).ok()
    } else if !lower.is_empty() && lower.bytes().all(|c| c.is_ascii_digit()) {
        lower.parse::<u64>().ok()
    } else {
        None
    };
    if let Some(u) = int {
        let v = if neg { -(u as i128) } else { u as i128 };
        return i64::try_from(v)
            .map(Tok::Int)
            .map_err(|_| format!("integer overflow: {w:?}"));
    }
    let f = go_float_syntax(body).ok_or_else(bad)?;
    if !lower.contains(['.', 'e', 'p']) {
        return Err(format!("integer overflow: {w:?}"));
    }
    Ok(Tok::Num(if neg { -f } else { f }))
}

/// What Go's `strconv.ParseFloat` reads without error: a decimal or hex float (`_` as Go
/// allows it), finite (past float64's range is an error there).
fn go_float_syntax(w: &str) -> Option<f64> {
    let (neg, body) = match w.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, w.strip_prefix('+').unwrap_or(w)),
    };
    if !underscores_ok(body) {
        return None;
    }
    let lower = body.replace('_', "").to_ascii_lowercase();
    let f = if let Some(h) = lower.strip_prefix("0x") {
        hex_float(h)?
    } else if lower.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        lower.parse::<f64>().ok()?
    } else {
        return None;
    };
    f.is_finite().then_some(if neg { -f } else { f })
}

/// Go's rule for `_` in a number: only between two digits of its base, or right after the
/// base prefix (`1_000`, `0x_1F`; not `1__000`, `_1`, `1_`, `1_.5`).
fn underscores_ok(w: &str) -> bool {
    let b = w.as_bytes();
    let hex = w.len() > 1 && b[0] == b'0' && matches!(b[1], b'x' | b'X');
    let digit = |c: u8| {
        if hex {
            c.is_ascii_hexdigit()
        } else {
            c.is_ascii_digit()
        }
    };
    (0..b.len()).filter(|&k| b[k] == b'_').all(|k| {
        let prefix = k == 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'x' | b'o' | b'b');
        k > 0 && (digit(b[k - 1]) || prefix) && b.get(k + 1).is_some_and(|c| digit(*c))
    })
}

/// A hex float's value (`1.8p3`, after the `0x`): hex digits with an optional point, then a
/// binary exponent, which Go requires.
fn hex_float(h: &str) -> Option<f64> {
    let (m, e) = h.split_once('p')?;
    let exp: i32 = e.parse().ok()?;
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars().chain(frac.chars()) {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    Some(v * 2f64.powi(exp - 4 * frac.len() as i32))
}

/// One escape of a double-quoted Go string (after its `\\`): the character and how many
/// characters the escape took.
fn string_escape(rest: &str) -> Option<(char, usize)> {
    let e = rest.chars().next()?;
    if e == '\'' {
        return None;
    }
    let take = match e {
        'x' => 3,
        'u' => 5,
        'U' => 9,
        '0'..='7' => 3,
        _ => 1,
    };
    let t: String = rest.chars().take(take).collect();
    if t.chars().count() < take {
        return None;
    }
    Some((char_constant(&format!("\\{t}"))?, take))
}

/// The character of a Go character constant's text (between the quotes): one character or
/// one escape.
fn char_constant(t: &str) -> Option<char> {
    let mut it = t.chars();
    let c = it.next()?;
    if c != '\\' {
        return it.next().is_none().then_some(c);
    }
    let e = it.next()?;
    let rest: String = it.collect();
    let hex = |n: usize| -> Option<char> {
        (rest.len() == n)
            .then(|| u32::from_str_radix(&rest, 16).ok())
            .flatten()
            .and_then(char::from_u32)
    };
    match e {
        'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' | '\'' | '"' if rest.is_empty() => {
            Some(match e {
                'a' => '\u{7}',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'v' => '\u{b}',
                other => other,
            })
        }
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        '0'..='7' if rest.len() == 2 => {
            let v = u32::from_str_radix(&format!("{e}{rest}"), 8).ok()?;
            (v <= 255).then(|| char::from_u32(v)).flatten()
        }
        _ => None,
    }
}
