//! Parsing: the text is split into text and actions (`{{ … }}`, with `{{-`/`-}}` trimming and
//! `{{/* comments */}}`), each action into tokens, and the actions into a tree. Variables are
//! checked here, as Go does: using one that is not in scope is a load error.

use std::collections::HashMap;

use super::lex::{Item, Meta, Tok, offset, split, tokens};
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
    /// `{{ template "name" pipeline }}`, placed (for Go's error text) at its name.
    Template(String, Option<Pipe>, Site),
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
    /// Arguments given to what is not a function (`"s" nil`): Go's parser takes it, running
    /// it fails. The first word, the command's site, the first word's site.
    NotAFunction(Arg, Site, Site),
}

/// Where a command is, for Go's error text: its first word's byte offset in the template
/// source and the command as Go prints it (`eq $value 48`, `(query "x" | first).Value`).
#[derive(Debug, Clone, Default)]
pub(super) struct Site {
    pub pos: usize,
    pub text: String,
    /// The node Go's executor last stands at after running the command (its last argument,
    /// else the function's name): where a failure after it is placed.
    pub last: (usize, String),
    /// Each argument's node (where Go checks its type): a literal, a field or variable, or
    /// the last node of a parenthesised pipeline.
    pub args: Vec<(usize, String)>,
}

/// An operand, with the fields chained after it (`.Labels.instance`, `$x.Value`).
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.A.B` and where Go places it (its errors' location).
    Dot(Vec<String>, Site),
    Var(String, Vec<String>, Site),
    Str(String),
    /// A literal with `.`, `e` or `p` (float64 to Go).
    Num(f64),
    /// Any other number literal (int to Go).
    Int(i64),
    /// An imaginary literal, as Go prints its complex128 (`(0+1i)`).
    Imag(String),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>, Vec<String>),
    /// A function named as an argument: Go calls it with no arguments (`printf "%s"
    /// externalURL`), then takes the fields chained to it; its byte offset for Go's error text.
    Func(Func, usize, Vec<String>),
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

pub(super) fn err(m: impl Into<String>) -> TemplateError {
    TemplateError(m.into())
}

/// A pipeline as Go prints it: `$x := a | b`.
pub(super) fn pipe_text(p: &Pipe) -> String {
    let cmds: Vec<&str> = p.cmds.iter().map(|c| c.site().text.as_str()).collect();
    let mut out = String::new();
    if !p.decl.is_empty() {
        out.push_str(&p.decl.join(", "));
        // Go 1.19 prints `:=` for an assignment too.
        out.push_str(" := ");
    }
    out.push_str(&cmds.join(" | "));
    out
}

impl Command {
    /// The command's place and text.
    pub(super) fn site(&self) -> &Site {
        match self {
            Command::Call(_, _, s) | Command::Arg(_, s) | Command::NotAFunction(_, s, _) => s,
        }
    }

    /// Where Go's executor last stood after running the command.
    pub(super) fn last_node(&self) -> (usize, String) {
        self.site().last.clone()
    }
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
            // A keyword ends where Go's lexer ends a word: at a space or a terminator
            // (`if.Value` is `if` then `.Value`).
            let cut = a
                .find(|c: char| c.is_whitespace() || ".,|:)(".contains(c))
                .unwrap_or(a.len());
            let (kw, rest) = (&a[..cut], a[cut..].trim());
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
                    let (name, pipe, site) = self.name_and_pipe(kw, rest, rest_at)?;
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
                        nodes.push(Node::Template(name, pipe, site));
                    }
                }
                "template" => {
                    let (name, pipe, site) = self.name_and_pipe(kw, rest, rest_at)?;
                    nodes.push(Node::Template(name, pipe, site));
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
    ) -> Result<(String, Option<Pipe>, Site), TemplateError> {
        let (toks, meta) = tokens(rest, at)?;
        let Some((Tok::Str(name), more)) = toks.split_first() else {
            return Err(err(format!("{kw} needs a quoted name (in {rest:?})")));
        };
        if kw == "define" && !more.is_empty() {
            let next = meta.get(1).map_or("", |m| m.raw.as_str());
            return Err(err(format!("unexpected {next:?} in define clause")));
        }
        let pipe = if more.is_empty() {
            if kw == "block" {
                return Err(err(format!("missing value for block (in {rest:?})")));
            }
            None
        } else {
            Some(self.pipe_tokens(more, &meta[1..], false, rest)?)
        };
        // Go's TemplateNode: at its name, printed `{{template "name" pipeline}}`.
        let quoted = super::gofmt::quote(name, false);
        let text = match &pipe {
            Some(p) => format!("{{{{template {quoted} {}}}}}", pipe_text(p)),
            None => format!("{{{{template {quoted}}}}}"),
        };
        let site = Site {
            pos: meta.first().map_or(at, |m| m.pos),
            text,
            ..Site::default()
        };
        Ok((name.clone(), pipe, site))
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
                let cut = chain
                    .find(|c: char| c.is_whitespace() || ".,|:)(".contains(c))
                    .unwrap_or(chain.len());
                let (kw2, rest2) = (&chain[..cut], chain[cut..].trim());
                // Go 1.19 (Prometheus 2.42's) knows `else if` only; `else with` came in 1.23.
                if kw2 != "if" || kw == "range" {
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
            [
                Tok::Var(_, f),
                Tok::Comma,
                Tok::Var(_, g),
                Tok::Declare | Tok::Assign,
                ..,
            ] => range && f.is_empty() && g.is_empty(),
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
        // Go's parser knows a declared variable from here on, within its own pipeline too.
        // (An assignment's variable too: only running it finds it undeclared.)
        for v in &decl {
            if !self.scope.contains(v) {
                self.scope.push(v.clone());
            }
        }
        let skipped = toks.len() - rest.len();
        let cmds = self.commands(rest, &meta[skipped..], src)?;
        if assign {
            // Go's parser takes an assignment to an undeclared variable; running it fails.
            for v in &decl {
                if !self.scope.contains(v) {
                    self.scope.push(v.clone());
                }
            }
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
            let mut last: (usize, String) = (pos, String::new());
            let mut arg_nodes: Vec<(usize, String)> = Vec::new();
            while i < toks.len() && toks[i] != Tok::Bar {
                // Go's parser: an operand is followed by a space, `|`, `)` or the end.
                if (!words.is_empty() || func.is_some()) && !meta.get(i).is_some_and(|m| m.spaced) {
                    let raw = meta.get(i).map_or("", |m| m.raw.as_str());
                    return Err(err(format!("unexpected {raw:?} in operand")));
                }
                if let (Tok::Ident(name, fields), true) =
                    (&toks[i], words.is_empty() && func.is_none())
                    && fields.is_empty()
                {
                    match name.as_str() {
                        "true" | "false" | "nil" => {}
                        _ => {
                            func = Some(Func::by_name(name).ok_or_else(|| {
                                err(format!("function {name:?} not defined (in {src:?})"))
                            })?);
                            texts.push(name.clone());
                            last = (pos, name.clone());
                            i += 1;
                            continue;
                        }
                    }
                }
                let at = meta.get(i).map_or(pos, |m| m.pos);
                let (w, text) = self.arg(toks, meta, &mut i, src)?;
                last = match &w {
                    Arg::Dot(_, s) | Arg::Var(_, _, s) => s.last.clone(),
                    Arg::Pipe(p, _) => p
                        .cmds
                        .last()
                        .map_or((at, text.clone()), |c| c.site().last.clone()),
                    Arg::Func(f, fpos, _) => (*fpos, f.signature().0.to_string()),
                    _ => (at, text.clone()),
                };
                arg_nodes.push(last.clone());
                words.push(w);
                texts.push(text);
            }
            let site = Site {
                pos,
                text: texts.join(" "),
                last,
                args: arg_nodes,
            };
            // Go's checkPipeline: a literal or `.` cannot take the value of a stage before.
            if !cmds.is_empty()
                && func.is_none()
                && matches!(
                    words.first(),
                    Some(
                        Arg::Str(_)
                            | Arg::Imag(_)
                            | Arg::Num(_)
                            | Arg::Int(_)
                            | Arg::Bool(_)
                            | Arg::Nil
                    )
                        | Some(Arg::Dot(..))
                        if !matches!(words.first(), Some(Arg::Dot(f, _)) if !f.is_empty())
                )
            {
                return Err(err(format!(
                    "non executable command in pipeline stage {}",
                    cmds.len() + 1
                )));
            }
            cmds.push(match func {
                Some(f) => Command::Call(f, words, site),
                None => match words.len() {
                    0 => return Err(err(format!("missing value for command in {src:?}"))),
                    1 => Command::Arg(words.remove(0), site),
                    _ => {
                        let first = words.remove(0);
                        let at = match &first {
                            Arg::Dot(_, s) | Arg::Var(_, _, s) => s.clone(),
                            // Go stands at the whole pipeline there.
                            Arg::Pipe(..) => site.clone(),
                            _ => Site {
                                pos,
                                text: texts[0].clone(),
                                last: (pos, texts[0].clone()),
                                args: Vec::new(),
                            },
                        };
                        Command::NotAFunction(first, site, at)
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
            // Go prints a complex128 as (re+imi).
            Tok::Imag(x) => Arg::Imag(format!(
                "(0{}{}i)",
                if x.is_sign_negative() { "" } else { "+" },
                super::go_float(x)
            )),
            Tok::Ident(w, f) if matches!(w.as_str(), "true" | "false" | "nil") && !f.is_empty() => {
                return Err(err(format!("unexpected . after term {w:?}")));
            }
            Tok::Ident(w, _) if w == "true" || w == "false" => Arg::Bool(w == "true"),
            Tok::Ident(w, _) if w == "nil" => Arg::Nil,
            Tok::Ident(w, fields) => match Func::by_name(&w) {
                Some(f) => Arg::Func(f, meta.get(*i - 1).map_or(0, |m| m.pos), fields),
                None => return Err(err(format!("function {w:?} not defined (in {src:?})"))),
            },
            Tok::Var(name, fields) => {
                if !self.scope.contains(&name) {
                    return Err(err(format!("undefined variable {name:?}")));
                }
                // Go lexes each `.x` apart and places the node at the first one chained.
                let m = meta.get(*i - 1);
                let pos = m.map_or(0, |m| m.pos) + if fields.is_empty() { 0 } else { name.len() };
                let site = Site {
                    pos,
                    text: raw.clone(),
                    last: (pos, raw.clone()),
                    args: Vec::new(),
                };
                Arg::Var(name, fields, site)
            }
            Tok::Field(f) => {
                let m = meta.get(*i - 1);
                let pos = m.map_or(0, |m| m.pos) + if f.len() > 1 { 1 + f[0].len() } else { 0 };
                let site = Site {
                    pos,
                    text: raw.clone(),
                    last: (pos, raw.clone()),
                    args: Vec::new(),
                };
                Arg::Dot(f, site)
            }
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
                        Command::Call(_, _, s)
                        | Command::Arg(_, s)
                        | Command::NotAFunction(_, s, _) => s.text.as_str(),
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
