//! Parsing: the text is split into text and actions (`{{ … }}`, with `{{-`/`-}}` trimming and
//! `{{/* comments */}}`), each action into tokens, and the actions into a tree. Variables are
//! checked here, as Go does: using one that is not in scope is a load error.

use std::collections::HashMap;

use super::{Func, TemplateError};

/// A node of the tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    /// Prints the pipeline's value, unless it declares or assigns a variable.
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    /// `{{ template "name" pipeline }}`.
    Template(String, Option<Pipe>),
    Break,
    Continue,
}

/// A pipeline, with the variables it declares (`$x :=`, `$i, $e :=` in `range`) or assigns
/// (`$x =`).
#[derive(Debug, Clone, Default)]
pub(super) struct Pipe {
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(super) enum Command {
    /// A function with its arguments; the previous command's value is appended as the last.
    Call(Func, Vec<Arg>, Site),
    Arg(Arg, Site),
}

/// Where a command is, for Go's error text: its first word's byte offset in the template
/// source and the command as Go prints it (`eq $value 48`, `(query "x" | first).Value`).
#[derive(Debug, Clone, Default)]
pub(super) struct Site {
    pub pos: usize,
    pub text: String,
}

/// A token's byte offset in the template source and its text as written.
#[derive(Debug, Clone)]
struct Meta {
    pos: usize,
    raw: String,
}

/// An operand, with the fields chained after it (`.Labels.instance`, `$x.Value`).
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    /// A literal with `.`, `e` or `p` (float64 to Go).
    Num(f64),
    /// Any other number literal (int to Go).
    Int(i64),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>, Vec<String>),
}

/// A template's main tree and its `define`d ones.
pub(super) struct Parsed {
    pub nodes: Vec<Node>,
    pub defines: HashMap<String, Vec<Node>>,
}

/// The variables Prometheus defines for every template.
pub(super) const PREDEFINED: [&str; 5] =
    ["$", "$labels", "$value", "$externalLabels", "$externalURL"];

/// Parses a whole template.
pub(super) fn parse(src: &str) -> Result<Parsed, TemplateError> {
    let actions = split(src)?;
    let mut p = Parser {
        items: actions,
        pos: 0,
        scope: PREDEFINED.iter().map(|s| s.to_string()).collect(),
        defines: HashMap::new(),
        loops: 0,
    };
    let (nodes, end) = p.list()?;
    if let Some(e) = end {
        return Err(err(format!("unexpected {{{{{}}}}}", e.word())));
    }
    Ok(Parsed {
        nodes,
        defines: p.defines,
    })
}

fn err(m: impl Into<String>) -> TemplateError {
    TemplateError(m.into())
}

enum Item {
    Text(String),
    /// An action's text and its byte offset in the source.
    Action(String, usize),
}

/// The byte offset of `part`, a slice of `whole`, within it.
fn offset(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Splits text and actions, applying trim markers and dropping comments.
fn split(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[i + 2..];
        let (after, trim_before) = match after.strip_prefix("- ") {
            Some(a) => (a, true),
            None => (after, false),
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
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            trim_next = true;
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
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
    if s.trim_start().starts_with("/*") {
        let end = s.find("*/")?;
        return s[end..].find("}}").map(|j| end + j);
    }
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' && q == b'"' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => {
                if b[i] == b'"' || b[i] == b'`' {
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
enum Tok {
    Str(String),
    Num(f64),
    Int(i64),
    Ident(String),
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
fn tokens(s: &str, base: usize) -> Result<(Vec<Tok>, Vec<Meta>), TemplateError> {
    let b: Vec<char> = s.chars().collect();
    // Byte offsets of the characters (and of the end).
    let mut at: Vec<usize> = s.char_indices().map(|(k, _)| k).collect();
    at.push(s.len());
    let mut meta: Vec<Meta> = Vec::new();
    let mut out = Vec::new();
    let mut i = 0;
    let fields = |i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        while *i < b.len() && b[*i] == '.' {
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
                    if d == '\\' && c == '"' {
                        match b.get(j) {
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            Some(&o) => text.push(o),
                            None => return Err(err(format!("unterminated string in {s:?}"))),
                        }
                        j += 1;
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
            }
            '.' if !b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(Tok::Field(f));
            }
            _ => {
                let mut j = i;
                while j < b.len() && !b[j].is_whitespace() && !"|(),=".contains(b[j]) {
                    j += 1;
                }
                let word: String = b[i..j].iter().collect();
                i = j;
                if word
                    .starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
                {
                    let n = parse_number(&word)
                        .ok_or_else(|| err(format!("bad number syntax: {word:?}")))?;
                    // Go's ideal constants: a float64 when written with `.`, `e` or `p`
                    // (not a hex integer's `e`), else an int.
                    let hex_int = word.trim_start_matches(['-', '+']).starts_with("0x")
                        || word.trim_start_matches(['-', '+']).starts_with("0X");
                    let float = if hex_int {
                        word.contains(['p', 'P'])
                    } else {
                        word.contains(['.', 'e', 'E', 'p', 'P'])
                    };
                    if !float && n.fract() == 0.0 && n.abs() < 9.2e18 {
                        out.push(Tok::Int(n as i64));
                    } else {
                        out.push(Tok::Num(n));
                    }
                } else {
                    out.push(Tok::Ident(word));
                }
            }
        }
        if out.len() > before {
            meta.push(Meta {
                pos: base + at[start],
                raw: s[at[start]..at[i.min(b.len())]].to_string(),
            });
        }
    }
    Ok((out, meta))
}

fn parse_number(w: &str) -> Option<f64> {
    let (neg, digits) = match w.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, w.strip_prefix('+').unwrap_or(w)),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => i64::from_str_radix(h, 16).ok()? as f64,
        None => digits.replace('_', "").parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// What ended a list of nodes.
enum End {
    End,
    /// `{{ else }}`, or `{{ else if … }}` / `{{ else with … }}` with the rest of the action.
    Else(Option<(String, usize)>),
}

impl End {
    fn word(&self) -> &'static str {
        match self {
            End::End => "end",
            End::Else(_) => "else",
        }
    }
}

struct Parser {
    items: Vec<Item>,
    pos: usize,
    /// Variables in scope, innermost last.
    scope: Vec<String>,
    defines: HashMap<String, Vec<Node>>,
    /// Depth of `range` (where `break` and `continue` may appear).
    loops: usize,
}

impl Parser {
    /// Nodes until `{{ end }}` or `{{ else … }}` (returned) or the end of the text.
    fn list(&mut self) -> Result<(Vec<Node>, Option<End>), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let i = self.pos;
            self.pos += 1;
            let a = match &self.items[i] {
                Item::Text(t) => {
                    nodes.push(Node::Text(t.clone()));
                    continue;
                }
                Item::Action(a, at) => (a.clone(), *at),
            };
            let (a, base) = a;
            let (kw, rest) = match a.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (a.as_str(), ""),
            };
            // Where `rest` starts in the source.
            let rest_at = base + offset(&a, rest);
            match kw {
                "end" if rest.is_empty() => return Ok((nodes, Some(End::End))),
                "else" => {
                    let chain = (!rest.is_empty()).then(|| (rest.to_string(), rest_at));
                    return Ok((nodes, Some(End::Else(chain))));
                }
                "if" | "with" | "range" => nodes.push(self.control(kw, rest, rest_at)?),
                "define" | "block" => {
                    let (name, pipe) = self.name_and_pipe(kw, rest, rest_at)?;
                    let saved = std::mem::replace(&mut self.scope, vec!["$".to_string()]);
                    let body = self.list();
                    self.scope = saved;
                    match body? {
                        (b, Some(End::End)) => {
                            self.defines.insert(name.clone(), b);
                        }
                        _ => return Err(err(format!("missing {{{{end}}}} for {kw} {name:?}"))),
                    }
                    if kw == "block" {
                        nodes.push(Node::Template(name, pipe));
                    }
                }
                "template" => {
                    let (name, pipe) = self.name_and_pipe(kw, rest, rest_at)?;
                    nodes.push(Node::Template(name, pipe));
                }
                "break" | "continue" if rest.is_empty() => {
                    if self.loops == 0 {
                        return Err(err(format!("{{{{{kw}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if kw == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                _ => {
                    let p = self.pipe(&a, base, false)?;
                    nodes.push(Node::Action(p));
                }
            }
        }
        Ok((nodes, None))
    }

    fn name_and_pipe(
        &mut self,
        kw: &str,
        rest: &str,
        at: usize,
    ) -> Result<(String, Option<Pipe>), TemplateError> {
        let (toks, meta) = tokens(rest, at)?;
        let Some((Tok::Str(name), more)) = toks.split_first() else {
            return Err(err(format!("{kw} needs a quoted name (in {rest:?})")));
        };
        let pipe = if more.is_empty() {
            None
        } else {
            Some(self.pipe_tokens(more, &meta[1..], false, rest)?)
        };
        Ok((name.clone(), pipe))
    }

    /// `if`, `with` or `range`, its body, its `else` (or `else if`/`else with` chain) and
    /// `end`. Variables declared in it are in scope until its end.
    fn control(&mut self, kw: &str, rest: &str, at: usize) -> Result<Node, TemplateError> {
        let mark = self.scope.len();
        let cond = self.pipe(rest, at, kw == "range")?;
        if kw == "range" {
            self.loops += 1;
        }
        let body = self.list();
        if kw == "range" {
            self.loops -= 1;
        }
        let (then, end) = body?;
        let els = match end {
            Some(End::End) => Vec::new(),
            Some(End::Else(None)) => match self.list()? {
                (e, Some(End::End)) => e,
                _ => return Err(err(format!("missing {{{{end}}}} for {kw}"))),
            },
            Some(End::Else(Some((chain, chain_at)))) => {
                let (kw2, rest2) = chain
                    .split_once(char::is_whitespace)
                    .map(|(k, r)| (k, r.trim()))
                    .unwrap_or((chain.as_str(), ""));
                if !(kw2 == "if" || kw2 == "with") || kw == "range" {
                    return Err(err(format!("unexpected {{{{else {chain}}}}}")));
                }
                let rest2_at = chain_at + offset(&chain, rest2);
                // The chained structure ends with this one's {{end}}.
                vec![self.control(kw2, rest2, rest2_at)?]
            }
            None => return Err(err(format!("missing {{{{end}}}} for {kw}"))),
        };
        self.scope.truncate(mark);
        Ok(match kw {
            "if" => Node::If(cond, then, els),
            "with" => Node::With(cond, then, els),
            _ => Node::Range(cond, then, els),
        })
    }

    fn pipe(&mut self, s: &str, at: usize, range: bool) -> Result<Pipe, TemplateError> {
        let (toks, meta) = tokens(s, at)?;
        self.pipe_tokens(&toks, &meta, range, s)
    }

    fn pipe_tokens(
        &mut self,
        toks: &[Tok],
        meta: &[Meta],
        range: bool,
        src: &str,
    ) -> Result<Pipe, TemplateError> {
        // Declarations: `$x :=`, `$x =`, and in range `$i, $e :=`.
        let mut decl = Vec::new();
        let mut assign = false;
        let mut rest = toks;
        let is_decl = |t: &[Tok]| match t {
            [Tok::Var(_, f), Tok::Declare | Tok::Assign, ..] => f.is_empty(),
            [Tok::Var(_, f), Tok::Comma, Tok::Var(_, g), Tok::Declare, ..] => {
                range && f.is_empty() && g.is_empty()
            }
            _ => false,
        };
        if is_decl(rest) {
            while let [Tok::Var(n, _), more @ ..] = rest {
                decl.push(n.clone());
                match more {
                    [Tok::Comma, r @ ..] => rest = r,
                    [Tok::Declare, r @ ..] => {
                        rest = r;
                        break;
                    }
                    [Tok::Assign, r @ ..] => {
                        assign = true;
                        rest = r;
                        break;
                    }
                    _ => return Err(err(format!("bad declaration in {src:?}"))),
                }
            }
        }
        let skipped = toks.len() - rest.len();
        let cmds = self.commands(rest, &meta[skipped..], src)?;
        if assign {
            if let Some(v) = decl.iter().find(|v| !self.scope.contains(v)) {
                return Err(err(format!("undefined variable {v:?}")));
            }
        } else {
            if decl.iter().any(|d| d == "$") {
                return Err(err("cannot declare $"));
            }
            self.scope.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, assign, cmds })
    }

    fn commands(
        &mut self,
        toks: &[Tok],
        meta: &[Meta],
        src: &str,
    ) -> Result<Vec<Command>, TemplateError> {
        let mut cmds = Vec::new();
        let mut i = 0;
        loop {
            let mut words: Vec<Arg> = Vec::new();
            let mut texts: Vec<String> = Vec::new();
            let mut func: Option<Func> = None;
            let pos = meta.get(i).map_or(0, |m| m.pos);
            while i < toks.len() && toks[i] != Tok::Bar {
                if let (Tok::Ident(name), true) = (&toks[i], words.is_empty() && func.is_none()) {
                    match name.as_str() {
                        "true" | "false" | "nil" => {}
                        _ => {
                            func = Some(Func::by_name(name).ok_or_else(|| {
                                err(format!("function {name:?} not defined (in {src:?})"))
                            })?);
                            texts.push(name.clone());
                            i += 1;
                            continue;
                        }
                    }
                }
                let (w, text) = self.arg(toks, meta, &mut i, src)?;
                words.push(w);
                texts.push(text);
            }
            let site = Site {
                pos,
                text: texts.join(" "),
            };
            cmds.push(match func {
                Some(f) => Command::Call(f, words, site),
                None => match words.len() {
                    0 => return Err(err(format!("missing value for command in {src:?}"))),
                    1 => Command::Arg(words.remove(0), site),
                    _ => {
                        return Err(err(format!(
                            "can't give arguments to a non-function (in {src:?})"
                        )));
                    }
                },
            });
            if i >= toks.len() {
                break;
            }
            i += 1; // the `|`
            if i >= toks.len() {
                // Go's parser accepts a trailing `|`.
                break;
            }
        }
        Ok(cmds)
    }

    /// One operand and its text as Go prints it.
    fn arg(
        &mut self,
        toks: &[Tok],
        meta: &[Meta],
        i: &mut usize,
        src: &str,
    ) -> Result<(Arg, String), TemplateError> {
        let t = toks[*i].clone();
        let raw = meta.get(*i).map(|m| m.raw.clone()).unwrap_or_default();
        *i += 1;
        let arg = match t {
            Tok::Str(s) => Arg::Str(s),
            Tok::Num(n) => Arg::Num(n),
            Tok::Int(n) => Arg::Int(n),
            Tok::Ident(w) if w == "true" || w == "false" => Arg::Bool(w == "true"),
            Tok::Ident(w) if w == "nil" => Arg::Nil,
            Tok::Ident(w) => {
                return Err(err(format!(
                    "function {w:?} used as an argument: put it in parentheses (in {src:?})"
                )));
            }
            Tok::Var(name, fields) => {
                if !self.scope.contains(&name) {
                    return Err(err(format!("undefined variable {name:?}")));
                }
                Arg::Var(name, fields)
            }
            Tok::Field(f) => Arg::Dot(f),
            Tok::Open => {
                // Up to the matching `)`.
                let start = *i;
                let mut depth = 1;
                while *i < toks.len() {
                    match toks[*i] {
                        Tok::Open => depth += 1,
                        Tok::Close(_) => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    *i += 1;
                }
                let Some(Tok::Close(fields)) = toks.get(*i).cloned() else {
                    return Err(err(format!("unclosed left paren in {src:?}")));
                };
                let inner = self.pipe_tokens(&toks[start..*i], &meta[start..*i], false, src)?;
                *i += 1;
                let cmds: Vec<&str> = inner
                    .cmds
                    .iter()
                    .map(|c| match c {
                        Command::Call(_, _, s) | Command::Arg(_, s) => s.text.as_str(),
                    })
                    .collect();
                let mut text = format!("({})", cmds.join(" | "));
                for f in &fields {
                    text.push('.');
                    text.push_str(f);
                }
                return Ok((Arg::Pipe(Box::new(inner), fields), text));
            }
            Tok::Close(_) => return Err(err(format!("unexpected right paren in {src:?}"))),
            Tok::Bar | Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err(err(format!("unexpected {t:?} in {src:?}")));
            }
        };
        Ok((arg, raw))
    }
}
