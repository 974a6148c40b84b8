//! Annotation and label templates: the part of Go's `text/template` that Prometheus rule files
//! use.
//!
//! Supported: text, `{{ … }}` actions with `{{-`/`-}}` trimming, pipelines (`a | f x`),
//! `$labels.name`, `$labels`, `$value`, `$externalLabels.name`, `.Labels.name`, `.Value`,
//! string and number literals, `{{ if … }}`/`{{ else }}`/`{{ end }}`, `{{ with … }}`, and the
//! functions `humanize`, `humanize1024`, `humanizePercentage`, `humanizeDuration`,
//! `humanizeTimestamp`, `printf`, `toUpper`, `toLower`, `title`, `reReplaceAll`, `match`,
//! `stripPort`, Go's `eq`/`ne`/`lt`/`le`/`gt`/`ge`/`and`/`or`/`not`/`len`/`index`, and
//! `$externalURL`. Templates are parsed when the rule file loads,
//! so an unknown function or a syntax error is a load error naming the rule; errors while
//! rendering produce Prometheus' `<error expanding template: …>` text instead of failing the
//! evaluation.

use std::fmt::Write;

use telltale_common::model::Labels;

mod funcs;
use funcs::{go_g4, humanize, humanize_duration, title};

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// Whether the text contains no action (rendering is a copy).
    plain: bool,
    source: String,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

type Pipeline = Vec<Command>;

#[derive(Debug, Clone)]
enum Command {
    /// A function with its arguments; the previous pipeline value is appended as the last one.
    Call(Func, Vec<Operand>),
    Operand(Operand),
}

#[derive(Debug, Clone)]
enum Operand {
    Labels,
    Label(String),
    ExternalLabels,
    ExternalLabel(String),
    ExternalUrl,
    Value,
    Dot,
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    HumanizeTimestamp,
    Printf,
    ToUpper,
    ToLower,
    Title,
    ReReplaceAll,
    Match,
    StripPort,
    /// Go's comparison functions: `eq a b c` is a == b || a == c.
    Cmp(CmpOp),
    And,
    Or,
    Not,
    Len,
    Index,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Func {
    fn by_name(n: &str) -> Option<Func> {
        Some(match n {
            "humanize" => Func::Humanize,
            "humanize1024" => Func::Humanize1024,
            "humanizePercentage" => Func::HumanizePercentage,
            "humanizeDuration" => Func::HumanizeDuration,
            "humanizeTimestamp" => Func::HumanizeTimestamp,
            "printf" => Func::Printf,
            "toUpper" => Func::ToUpper,
            "toLower" => Func::ToLower,
            "title" => Func::Title,
            "reReplaceAll" => Func::ReReplaceAll,
            "match" => Func::Match,
            "stripPort" => Func::StripPort,
            "eq" => Func::Cmp(CmpOp::Eq),
            "ne" => Func::Cmp(CmpOp::Ne),
            "lt" => Func::Cmp(CmpOp::Lt),
            "le" => Func::Cmp(CmpOp::Le),
            "gt" => Func::Cmp(CmpOp::Gt),
            "ge" => Func::Cmp(CmpOp::Ge),
            "and" => Func::And,
            "or" => Func::Or,
            "not" => Func::Not,
            "len" => Func::Len,
            "index" => Func::Index,
            _ => return None,
        })
    }
}

/// What a template sees: the alert's labels, its value and the external labels.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// `$labels` / `.Labels`.
    pub labels: &'a Labels,
    /// `$externalLabels`.
    pub external: &'a Labels,
    /// `$value` / `.Value`.
    pub value: f64,
    /// `$externalURL` / `.ExternalURL`: the aggregator's external URL.
    pub external_url: &'a str,
}

#[derive(Debug, Clone)]
enum V {
    Str(String),
    Num(f64),
    Map(Labels),
    Bool(bool),
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Str(s) => !s.is_empty(),
            V::Num(n) => *n != 0.0,
            V::Map(m) => !m.is_empty(),
            V::Bool(b) => *b,
        }
    }
    fn text(&self) -> String {
        match self {
            V::Str(s) => s.clone(),
            V::Num(n) => go_float(*n),
            V::Bool(b) => b.to_string(),
            // Go prints a map as map[k:v k2:v2], keys sorted.
            V::Map(m) => {
                let mut s = String::from("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    let _ = write!(s, "{k}:{v}");
                }
                s.push(']');
                s
            }
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            V::Str(_) => "string",
            V::Num(_) => "float64",
            V::Map(_) => "map",
            V::Bool(_) => "bool",
        }
    }

    fn num(&self) -> Result<f64, String> {
        match self {
            V::Num(n) => Ok(*n),
            V::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("can't convert {s:?} to float")),
            V::Bool(_) | V::Map(_) => Err("expected a number".into()),
        }
    }
}

/// Go's exponent form: Rust's `1.5e-7` / `1e21` written `1.5e-07` / `1e+21`.
pub fn go_exponent(rust_e: &str) -> String {
    match rust_e.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => rust_e.to_string(),
    }
}

/// Go's `%v` for a float64 (strconv 'g' with the shortest representation).
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let exp = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    if !(-4..21).contains(&exp) {
        go_exponent(&format!("{v:e}"))
    } else {
        format!("{v}")
    }
}

/// A template that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let tokens = lex(src)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos)?;
        if let Some(e) = end {
            return Err(TemplateError(format!("unexpected {{{{{e}}}}}")));
        }
        let plain = nodes.iter().all(|n| matches!(n, Node::Text(_)));
        Ok(Template {
            nodes,
            plain,
            source: src.to_string(),
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `data`; a failing action renders as Prometheus' error text.
    pub fn render(&self, data: Data<'_>) -> String {
        if self.plain {
            return self.source.clone();
        }
        let mut out = String::new();
        match render_nodes(&self.nodes, data, &V::Map(data.labels.clone()), &mut out) {
            Ok(()) => out,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }
}

enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut toks = Vec::new();
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
            toks.push(Tok::Text(text.to_string()));
        }
        let close = find_close(after)
            .ok_or_else(|| TemplateError(format!("unclosed action in {src:?}")))?;
        let mut body = &after[..close];
        trim_next = false;
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            trim_next = true;
        }
        toks.push(Tok::Action(body.trim().to_string()));
        rest = &after[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        toks.push(Tok::Text(text.to_string()));
    }
    Ok(toks)
}

/// The `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
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

/// Parses nodes until `{{end}}` or `{{else}}` (returned as the terminator) or the end.
fn parse_nodes(
    toks: &[Tok],
    pos: &mut usize,
) -> Result<(Vec<Node>, Option<&'static str>), TemplateError> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(a) => {
                let a = a.as_str();
                if a.starts_with("/*") {
                    continue;
                }
                if a == "end" {
                    return Ok((nodes, Some("end")));
                }
                if a == "else" {
                    return Ok((nodes, Some("else")));
                }
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) if k == "if" || k == "with" => (k, r),
                    _ => ("", a),
                };
                if kw.is_empty() {
                    nodes.push(Node::Action(parse_pipeline(rest)?));
                    continue;
                }
                let cond = parse_pipeline(rest)?;
                let (then, term) = parse_nodes(toks, pos)?;
                let els = match term {
                    Some("else") => match parse_nodes(toks, pos)? {
                        (e, Some("end")) => e,
                        _ => return Err(TemplateError(format!("missing {{{{end}}}} for {kw}"))),
                    },
                    Some(_) => Vec::new(),
                    None => return Err(TemplateError(format!("missing {{{{end}}}} for {kw}"))),
                };
                nodes.push(if kw == "if" {
                    Node::If(cond, then, els)
                } else {
                    Node::With(cond, then, els)
                });
            }
        }
    }
    Ok((nodes, None))
}

fn parse_pipeline(s: &str) -> Result<Pipeline, TemplateError> {
    let words = split_words(s)?;
    let mut cmds = Vec::new();
    for part in words.split(|w| w == "|") {
        let Some((head, args)) = part.split_first() else {
            return Err(TemplateError(format!("empty command in {s:?}")));
        };
        if head.starts_with('$') || head.starts_with('.') || is_literal(head) {
            if !args.is_empty() {
                return Err(TemplateError(format!(
                    "can't give arguments to {head} in {s:?}"
                )));
            }
            cmds.push(Command::Operand(operand(head)?));
        } else {
            let f = Func::by_name(head).ok_or_else(|| {
                TemplateError(format!("function {head:?} not defined (in {s:?})"))
            })?;
            let args = args
                .iter()
                .map(|a| operand(a))
                .collect::<Result<Vec<_>, _>>()?;
            cmds.push(Command::Call(f, args));
        }
    }
    Ok(cmds)
}

fn is_literal(w: &str) -> bool {
    w.starts_with('"') || w.starts_with('`') || w.parse::<f64>().is_ok()
}

fn operand(w: &str) -> Result<Operand, TemplateError> {
    if let Some(s) = w.strip_prefix('"') {
        let s = s
            .strip_suffix('"')
            .ok_or_else(|| TemplateError(format!("unterminated string {w}")))?;
        return Ok(Operand::Str(unescape(s)));
    }
    if let Some(s) = w.strip_prefix('`') {
        let s = s
            .strip_suffix('`')
            .ok_or_else(|| TemplateError(format!("unterminated string {w}")))?;
        return Ok(Operand::Str(s.to_string()));
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Operand::Num(n));
    }
    Ok(match w {
        "$labels" | ".Labels" => Operand::Labels,
        "$value" | ".Value" => Operand::Value,
        "$externalLabels" | ".ExternalLabels" => Operand::ExternalLabels,
        "$externalURL" | ".ExternalURL" => Operand::ExternalUrl,
        "." => Operand::Dot,
        _ => {
            if let Some(n) = w
                .strip_prefix("$labels.")
                .or_else(|| w.strip_prefix(".Labels."))
            {
                Operand::Label(n.to_string())
            } else if let Some(n) = w
                .strip_prefix("$externalLabels.")
                .or_else(|| w.strip_prefix(".ExternalLabels."))
            {
                Operand::ExternalLabel(n.to_string())
            } else {
                return Err(TemplateError(format!("undefined variable or field {w}")));
            }
        }
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits an action into words, keeping quoted strings whole and `|` as its own word.
fn split_words(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                cur.push(c);
                let mut closed = false;
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' && c == '"' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(TemplateError(format!("unterminated string in {s:?}")));
                }
            }
            '|' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push("|".into());
            }
            '(' | ')' => {
                return Err(TemplateError(format!(
                    "parenthesised pipelines are not supported (in {s:?})"
                )));
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn render_nodes(nodes: &[Node], d: Data<'_>, dot: &V, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&run(p, d, dot)?.text()),
            Node::If(c, then, els) => {
                let branch = if run(c, d, dot)?.truthy() { then } else { els };
                render_nodes(branch, d, dot, out)?;
            }
            Node::With(c, then, els) => {
                let v = run(c, d, dot)?;
                if v.truthy() {
                    render_nodes(then, d, &v, out)?;
                } else {
                    render_nodes(els, d, dot, out)?;
                }
            }
        }
    }
    Ok(())
}

fn value_of(o: &Operand, d: Data<'_>, dot: &V) -> V {
    match o {
        Operand::Labels => V::Map(d.labels.clone()),
        Operand::Label(n) => V::Str(d.labels.get(n).unwrap_or("").to_string()),
        Operand::ExternalLabels => V::Map(d.external.clone()),
        Operand::ExternalLabel(n) => V::Str(d.external.get(n).unwrap_or("").to_string()),
        Operand::ExternalUrl => V::Str(d.external_url.to_string()),
        Operand::Value => V::Num(d.value),
        Operand::Dot => dot.clone(),
        Operand::Str(s) => V::Str(s.clone()),
        Operand::Num(n) => V::Num(*n),
    }
}

fn run(p: &Pipeline, d: Data<'_>, dot: &V) -> Result<V, String> {
    let mut prev: Option<V> = None;
    for c in p {
        prev = Some(match c {
            Command::Operand(o) => value_of(o, d, dot),
            Command::Call(f, args) => {
                let mut vals: Vec<V> = args.iter().map(|a| value_of(a, d, dot)).collect();
                if let Some(p) = prev.take() {
                    vals.push(p);
                }
                call(*f, &vals)?
            }
        });
    }
    prev.ok_or_else(|| "empty pipeline".to_string())
}

fn one<'a>(f: &str, a: &'a [V]) -> Result<&'a V, String> {
    match a {
        [v] => Ok(v),
        _ => Err(format!(
            "{f}: wrong number of args: want 1, got {}",
            a.len()
        )),
    }
}

fn call(f: Func, a: &[V]) -> Result<V, String> {
    Ok(match f {
        Func::Humanize => V::Str(humanize(one("humanize", a)?.num()?, 1000.0)),
        Func::Humanize1024 => V::Str(humanize(one("humanize1024", a)?.num()?, 1024.0)),
        Func::HumanizePercentage => V::Str(format!(
            "{}%",
            go_g4(one("humanizePercentage", a)?.num()? * 100.0)
        )),
        Func::HumanizeDuration => V::Str(humanize_duration(one("humanizeDuration", a)?.num()?)),
        Func::HumanizeTimestamp => {
            let v = one("humanizeTimestamp", a)?.num()?;
            if !v.is_finite() {
                V::Str(go_g4(v))
            } else {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(v.max(0.0));
                V::Str(humantime::format_rfc3339_millis(t).to_string())
            }
        }
        Func::Printf => {
            let (fmt, rest) = a
                .split_first()
                .ok_or_else(|| "printf: missing format".to_string())?;
            V::Str(printf(&fmt.text(), rest)?)
        }
        Func::ToUpper => V::Str(one("toUpper", a)?.text().to_uppercase()),
        Func::ToLower => V::Str(one("toLower", a)?.text().to_lowercase()),
        Func::Title => V::Str(title(&one("title", a)?.text())),
        Func::StripPort => {
            let s = one("stripPort", a)?.text();
            V::Str(match s.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => s,
            })
        }
        Func::ReReplaceAll => match a {
            [re, repl, text] => {
                let re = regex::Regex::new(&re.text()).map_err(|e| e.to_string())?;
                V::Str(
                    re.replace_all(&text.text(), repl.text().as_str())
                        .into_owned(),
                )
            }
            _ => return Err("reReplaceAll: wrong number of args: want 3".into()),
        },
        Func::Match => match a {
            [re, text] => {
                let re = regex::Regex::new(&re.text()).map_err(|e| e.to_string())?;
                V::Bool(re.is_match(&text.text()))
            }
            _ => return Err("match: wrong number of args: want 2".into()),
        },
        Func::Cmp(op) => compare(op, a)?,
        // Go's and/or: the first falsy (truthy) argument, else the last.
        Func::And => a
            .iter()
            .find(|v| !v.truthy())
            .or(a.last())
            .cloned()
            .ok_or_else(|| "and: want at least 1 argument".to_string())?,
        Func::Or => a
            .iter()
            .find(|v| v.truthy())
            .or(a.last())
            .cloned()
            .ok_or_else(|| "or: want at least 1 argument".to_string())?,
        Func::Not => V::Bool(!one("not", a)?.truthy()),
        Func::Len => V::Num(match one("len", a)? {
            V::Str(s) => s.len() as f64,
            V::Map(m) => m.len() as f64,
            other => return Err(format!("len of {}", other.kind())),
        }),
        Func::Index => match a {
            [V::Map(m), key] => V::Str(m.get(&key.text()).unwrap_or("").to_string()),
            [other, _] => return Err(format!("can't index item of type {}", other.kind())),
            _ => return Err("index: wrong number of args: want 2".into()),
        },
    })
}

/// Go's `eq`/`ne`/`lt`/`le`/`gt`/`ge`: numbers with numbers (a number-like string counts as
/// a number, as `$value` and literals mix), strings with strings, booleans for `eq`/`ne`;
/// `eq` takes several right-hand sides (true if any is equal).
fn compare(op: CmpOp, a: &[V]) -> Result<V, String> {
    use std::cmp::Ordering;
    let ord = |x: &V, y: &V| -> Result<Option<Ordering>, String> {
        match (x, y) {
            (V::Num(p), q) | (q, V::Num(p)) if !matches!(q, V::Bool(_) | V::Map(_)) => {
                let (l, r) = if matches!(x, V::Num(_)) {
                    (*p, q.num()?)
                } else {
                    (q.num()?, *p)
                };
                Ok(l.partial_cmp(&r))
            }
            (V::Str(l), V::Str(r)) => Ok(Some(l.cmp(r))),
            (V::Bool(l), V::Bool(r)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => Ok(Some(l.cmp(r))),
            _ => Err(format!(
                "incompatible types for comparison: {} and {}",
                x.kind(),
                y.kind()
            )),
        }
    };
    let (first, rest) = a
        .split_first()
        .ok_or_else(|| "missing argument for comparison".to_string())?;
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    if op != CmpOp::Eq && rest.len() > 1 {
        return Err("wrong number of args for comparison: want 2".into());
    }
    let mut any = false;
    for r in rest {
        let o = ord(first, r)?;
        any |= match op {
            CmpOp::Eq => o == Some(Ordering::Equal),
            CmpOp::Ne => o != Some(Ordering::Equal),
            CmpOp::Lt => o == Some(Ordering::Less),
            CmpOp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
            CmpOp::Gt => o == Some(Ordering::Greater),
            CmpOp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
        };
    }
    Ok(V::Bool(any))
}

/// Go's `printf` for the verbs rule files use: `%s %v %d %f %e %g %q %x %%`, with width and
/// precision.
fn printf(fmt: &str, args: &[V]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        let verb = loop {
            match it.next() {
                Some(ch) if "0123456789.-+ #".contains(ch) => spec.push(ch),
                Some(ch) => break ch,
                None => return Err("printf: format ends inside a verb".into()),
            }
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let (width, prec) = match spec.split_once('.') {
            Some((w, p)) => (w.to_string(), p.parse::<usize>().ok()),
            None => (spec.clone(), None),
        };
        let left = width.contains('-');
        let zero = width.starts_with('0');
        let width: usize = width
            .trim_start_matches(['-', '+', ' ', '#', '0'])
            .parse()
            .unwrap_or(0);
        let body = match verb {
            'd' => format!("{}", arg.num()?.trunc() as i64),
            'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), arg.num()?),
            'e' => go_exponent(&format!("{:.*e}", prec.unwrap_or(6), arg.num()?)),
            'g' => match prec {
                Some(_) | None => go_float(arg.num()?),
            },
            'q' => format!("{:?}", arg.text()),
            'x' => format!("{:x}", arg.num()?.trunc() as i64),
            's' | 'v' => match prec {
                Some(p) => arg.text().chars().take(p).collect(),
                None => arg.text(),
            },
            other => format!("%!{other}({})", arg.text()),
        };
        if body.len() < width {
            let pad = width - body.len();
            if left {
                out.push_str(&body);
                out.extend(std::iter::repeat_n(' ', pad));
            } else {
                out.extend(std::iter::repeat_n(if zero { '0' } else { ' ' }, pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, value: f64) -> String {
        let labels = Labels::from_pairs([("instance", "db-1:9100"), ("device", "sda")]);
        let ext = Labels::from_pairs([("cluster", "eu")]);
        Template::parse(src).expect("parses").render(Data {
            labels: &labels,
            external: &ext,
            value,
            external_url: "http://telltale.example:9470",
        })
    }

    #[test]
    fn go_comparison_logic_len_index_and_the_external_url() {
        // What Prometheus rule files write with them.
        for (src, v, want) in [
            (
                "{{ if gt $value 80.0 }}high{{ else }}ok{{ end }}",
                90.0,
                "high",
            ),
            (
                "{{ if gt $value 80.0 }}high{{ else }}ok{{ end }}",
                10.0,
                "ok",
            ),
            ("{{ if le $value 3 }}a{{ end }}", 3.0, "a"),
            (
                "{{ if eq $labels.instance \"web-1\" \"db-1:9100\" }}mine{{ end }}",
                0.0,
                "mine",
            ),
            (
                "{{ if ne $labels.instance \"db-1:9100\" }}x{{ else }}y{{ end }}",
                0.0,
                "y",
            ),
            ("{{ if lt \"a\" \"b\" }}sorted{{ end }}", 0.0, "sorted"),
            (
                "{{ if and $labels.instance $value }}both{{ else }}no{{ end }}",
                0.0,
                "no",
            ),
            (
                "{{ if and $labels.instance $value }}both{{ else }}no{{ end }}",
                2.0,
                "both",
            ),
            ("{{ or $labels.missing \"fallback\" }}", 0.0, "fallback"),
            ("{{ if not $labels.missing }}absent{{ end }}", 0.0, "absent"),
            ("{{ len $labels }} {{ len $labels.device }}", 0.0, "2 3"),
            (
                "{{ index $labels \"device\" }}|{{ index $labels \"nope\" }}|",
                0.0,
                "sda||",
            ),
            (
                "{{ $externalURL }}/alerts",
                0.0,
                "http://telltale.example:9470/alerts",
            ),
            ("{{ .ExternalURL }}", 0.0, "http://telltale.example:9470"),
            (
                "{{ if gt $labels 1 }}{{ end }}",
                0.0,
                "<error expanding template",
            ),
            ("{{ eq $value }}", 0.0, "<error expanding template"),
        ] {
            let got = render(src, v);
            assert!(got.starts_with(want), "{src} with {v}: {got}");
        }
    }

    #[test]
    fn labels_value_and_functions_render_as_prometheus_does() {
        assert_eq!(render("{{ $labels.instance }} down", 0.0), "db-1:9100 down");
        assert_eq!(render("{{ .Labels.device }}/{{ .Value }}", 2.5), "sda/2.5");
        assert_eq!(render("{{ printf \"%.2f\" $value }}%", 4.56789), "4.57%");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.756), "75.6%");
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.0012), "1.2m");
        assert_eq!(render("{{ $value | humanize1024 }}", 2048.0), "2ki");
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(render("{{ $value | humanizeDuration }}", 0.25), "250ms");
        assert_eq!(render("{{ $externalLabels.cluster }}", 0.0), "eu");
        assert_eq!(render("{{ $labels.instance | stripPort }}", 0.0), "db-1");
        assert_eq!(render("{{ $labels.device | toUpper }}", 0.0), "SDA");
        assert_eq!(
            render("{{ $labels }}", 0.0),
            "map[device:sda instance:db-1:9100]"
        );
        assert_eq!(render("{{ $value }}", 1e21), "1e+21");
        assert_eq!(render("{{ printf \"%d\" $value }}", 42.9), "42");
    }

    #[test]
    fn if_else_with_and_trimming() {
        assert_eq!(
            render(
                "{{ if $labels.device }}disk {{ $labels.device }}{{ else }}none{{ end }}",
                0.0
            ),
            "disk sda"
        );
        assert_eq!(
            render("{{ if $labels.nope }}x{{ else }}none{{ end }}", 0.0),
            "none"
        );
        assert_eq!(
            render("{{ with $labels.device }}[{{ . }}]{{ end }}", 0.0),
            "[sda]"
        );
        assert_eq!(render("a  {{- $value -}}  b", 1.0), "a1b");
    }

    #[test]
    fn parse_errors_name_the_problem_and_render_errors_are_text() {
        let e = Template::parse("{{ nosuch $value }}").expect_err("unknown function");
        assert!(e.to_string().contains("\"nosuch\" not defined"), "{e}");
        assert!(Template::parse("{{ if $value }}x").is_err());
        assert!(Template::parse("{{ $value ").is_err());
        assert!(Template::parse("{{ $bogus }}").is_err());
        assert_eq!(
            render("{{ $labels.device | humanize }}", 0.0),
            "<error expanding template: can't convert \"sda\" to float>"
        );
    }
}
