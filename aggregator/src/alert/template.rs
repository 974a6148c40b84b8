//! Annotation and label templates: Go's `text/template` as Prometheus rule files use it.
//!
//! Supported: text, `{{ … }}` actions with `{{-`/`-}}` trimming and `{{/* comments */}}`;
//! pipelines (`a | f x`) and parenthesised ones (`(index $labels "x")`); variables
//! (`{{ $x := … }}`, `{{ $x = … }}`, scoped to the enclosing structure) besides the predefined
//! `$labels`, `$value`, `$externalLabels`, `$externalURL` and `$`; fields (`.Labels.name`,
//! `.Value`, `.ExternalLabels`, `.ExternalURL`, and `.Labels`/`.Value` of a query sample);
//! string, number, `true`/`false`/`nil` literals; `if`/`else if`/`else`, `with`/`else`,
//! `range` (over query results, label maps in key order and integers; `$i, $e :=`; `else`;
//! `break`/`continue`), `define`, `template` and `block`; and the functions `humanize`,
//! `humanize1024`, `humanizePercentage`, `humanizeDuration`, `humanizeTimestamp`, `printf`,
//! `toUpper`, `toLower`, `title`, `reReplaceAll`, `match`, `stripPort`, `safeHtml`,
//! `parseDuration`, `externalURL`, `pathPrefix`, `query` (a PromQL instant query at the
//! rule's evaluation time; at most 20 per rendering), `first`, `label`, `value`,
//! `sortByLabel`, `strvalue`, `args`, `toTime`, `stripDomain`, and Go's `eq`/`ne`/`lt`/`le`/
//! `gt`/`ge`/`and`/`or`/`not`/`len`/`index`/`slice`/`print`/`println`/`html`/`js`/
//! `urlquery`/`call`. Not supported, as promtool 2.42 refuses them: `tmpl`, `toDuration`,
//! `now`; method calls.
//!
//! Templates are parsed when the rule file loads, so an unknown function, an undefined
//! variable or a syntax error is a load error naming the rule; errors while rendering produce
//! Prometheus' `<error expanding template: …>` text instead of failing the evaluation.

use std::fmt::Write;

use telltale_common::model::Labels;

mod exec;
mod ftoa;
mod funcs;
mod gofmt;
mod lex;
mod parse;
pub(crate) use ftoa::format_float;
use ftoa::go_float;
use funcs::{go_g4, humanize, humanize_duration, humanize_timestamp, title};
use gofmt::GoArg;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: std::sync::Arc<[parse::Node]>,
    defines: std::sync::Arc<std::collections::HashMap<String, Vec<parse::Node>>>,
    /// Whether the text contains no action (rendering is a copy).
    plain: bool,
    source: String,
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
    Query,
    First,
    Label,
    Value,
    SortByLabel,
    StrValue,
    Args,
    SafeHtml,
    ParseDuration,
    ExternalUrl,
    PathPrefix,
    ToTime,
    StripDomain,
    /// Go's `print`, `println`, `html`, `js`, `urlquery`, `slice`, `call`.
    Print,
    Println,
    Html,
    Js,
    UrlQuery,
    Slice,
    Call,
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

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
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
            "query" => Func::Query,
            "first" => Func::First,
            "label" => Func::Label,
            "value" => Func::Value,
            "sortByLabel" => Func::SortByLabel,
            "strvalue" => Func::StrValue,
            "args" => Func::Args,
            "safeHtml" => Func::SafeHtml,
            "parseDuration" => Func::ParseDuration,
            "externalURL" => Func::ExternalUrl,
            "pathPrefix" => Func::PathPrefix,
            "toTime" => Func::ToTime,
            "stripDomain" => Func::StripDomain,
            "print" => Func::Print,
            "println" => Func::Println,
            "html" => Func::Html,
            "js" => Func::Js,
            "urlquery" => Func::UrlQuery,
            "slice" => Func::Slice,
            "call" => Func::Call,
            _ => return None,
        })
    }
}

impl Func {
    /// Go's name for it, its fixed parameters and whether more may follow (the signatures
    /// of Prometheus 2.42's functions and Go's builtins).
    fn signature(self) -> (&'static str, usize, bool) {
        match self {
            Func::Humanize => ("humanize", 1, false),
            Func::Humanize1024 => ("humanize1024", 1, false),
            Func::HumanizePercentage => ("humanizePercentage", 1, false),
            Func::HumanizeDuration => ("humanizeDuration", 1, false),
            Func::HumanizeTimestamp => ("humanizeTimestamp", 1, false),
            Func::Printf => ("printf", 1, true),
            Func::ToUpper => ("toUpper", 1, false),
            Func::ToLower => ("toLower", 1, false),
            Func::Title => ("title", 1, false),
            Func::ReReplaceAll => ("reReplaceAll", 3, false),
            Func::Match => ("match", 2, false),
            Func::StripPort => ("stripPort", 1, false),
            Func::Cmp(CmpOp::Eq) => ("eq", 1, true),
            Func::Cmp(op) => (op.name(), 2, false),
            Func::And => ("and", 1, true),
            Func::Or => ("or", 1, true),
            Func::Not => ("not", 1, false),
            Func::Len => ("len", 1, false),
            Func::Index => ("index", 1, true),
            Func::Query => ("query", 1, false),
            Func::First => ("first", 1, false),
            Func::Label => ("label", 2, false),
            Func::Value => ("value", 1, false),
            Func::SortByLabel => ("sortByLabel", 2, false),
            Func::StrValue => ("strvalue", 1, false),
            Func::Args => ("args", 0, true),
            Func::SafeHtml => ("safeHtml", 1, false),
            Func::ParseDuration => ("parseDuration", 1, false),
            Func::ExternalUrl => ("externalURL", 0, false),
            Func::PathPrefix => ("pathPrefix", 0, false),
            Func::ToTime => ("toTime", 1, false),
            Func::StripDomain => ("stripDomain", 1, false),
            Func::Print => ("print", 0, true),
            Func::Println => ("println", 0, true),
            Func::Html => ("html", 0, true),
            Func::Js => ("js", 0, true),
            Func::UrlQuery => ("urlquery", 0, true),
            Func::Slice => ("slice", 1, true),
            Func::Call => ("call", 1, true),
        }
    }

    /// The Go type of parameter `i` where it is not `interface{}`: what Go checks an
    /// argument against before the call.
    fn param(self, i: usize) -> Option<&'static str> {
        match (self, i) {
            (
                Func::ToUpper
                | Func::ToLower
                | Func::Title
                | Func::StripPort
                | Func::StripDomain
                | Func::ReReplaceAll
                | Func::Match
                | Func::Query
                | Func::SafeHtml
                | Func::ParseDuration,
                _,
            )
            | (Func::Label | Func::SortByLabel | Func::Printf, 0) => Some("string"),
            (Func::First, 0) | (Func::SortByLabel, 1) => Some("template.queryResult"),
            (Func::Label, 1) | (Func::Value | Func::StrValue, 0) => Some("*template.sample"),
            _ => None,
        }
    }

    /// Go's check before a call: `args` written, `piped` when the pipeline adds one.
    fn check_arity(self, args: usize, piped: bool) -> Result<(), String> {
        let (name, fixed, variadic) = self.signature();
        let n = args + usize::from(piped);
        if variadic && n < fixed {
            return Err(format!(
                "wrong number of args for {name}: want at least {fixed} got {args}"
            ));
        }
        if !variadic && n != fixed {
            return Err(format!(
                "wrong number of args for {name}: want {fixed} got {n}"
            ));
        }
        Ok(())
    }
}

/// Runs a PromQL instant query for `query` (at the rule's evaluation time): the samples, a
/// scalar as one sample without labels, or the error.
pub type QueryFn<'a> = dyn Fn(&str) -> Result<Vec<(Labels, f64)>, String> + 'a;

/// What a template sees: the alert's labels, its value and the external labels.
#[derive(Clone, Copy)]
pub struct Data<'a> {
    /// The template's name in error texts (Prometheus: `__alert_` and the alert's name).
    pub name: &'a str,
    /// `$labels` / `.Labels`.
    pub labels: &'a Labels,
    /// `$externalLabels`.
    pub external: &'a Labels,
    /// `$value` / `.Value`.
    pub value: f64,
    /// `$externalURL` / `.ExternalURL`: the aggregator's external URL.
    pub external_url: &'a str,
    /// What `query` runs; `None` where no query engine is at hand (it then fails).
    pub query: Option<&'a QueryFn<'a>>,
}

#[derive(Debug, Clone)]
enum V {
    Str(String),
    /// A float64.
    Num(f64),
    /// An int (number literals without `.`/`e`, `len`, range indexes).
    Int(i64),
    /// A complex128 from an imaginary literal, as Go prints it (`(0+1i)`).
    Complex(String),
    Map(Labels),
    Bool(bool),
    /// The template's data (the top-level dot and `$`).
    Data,
    /// A query result's sample.
    Sample(Labels, f64),
    List(Vec<V>),
    Nil,
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Str(s) => !s.is_empty(),
            V::Num(n) => *n != 0.0,
            V::Int(n) => *n != 0,
            V::Complex(c) => c != "(0+0i)",
            V::Map(m) => !m.is_empty(),
            V::Bool(b) => *b,
            V::Data | V::Sample(..) => true,
            V::List(l) => !l.is_empty(),
            V::Nil => false,
        }
    }
    fn text(&self) -> String {
        match self {
            V::Str(s) => s.clone(),
            V::Num(n) => go_float(*n),
            V::Int(n) => n.to_string(),
            V::Complex(c) => c.clone(),
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
            V::Sample(l, v) => format!("{{{} {}}}", V::Map(l.clone()).text(), go_float(*v)),
            V::List(l) => {
                let items: Vec<String> = l.iter().map(V::text).collect();
                format!("[{}]", items.join(" "))
            }
            // Go prints Prometheus' template data struct field by field.
            V::Data => "{DATA}".into(),
            V::Nil => "<no value>".into(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            V::Str(_) => "string",
            V::Num(_) => "float64",
            V::Int(_) => "int",
            V::Complex(_) => "complex128",
            V::Map(_) => "map[string]string",
            V::Bool(_) => "bool",
            V::Data => {
                "struct { Labels map[string]string; ExternalLabels map[string]string; \
                 ExternalURL string; Value float64 }"
            }
            V::Sample(..) => "*template.sample",
            V::List(_) => "template.queryResult",
            V::Nil => "<nil>",
        }
    }

    fn num(&self) -> Result<f64, String> {
        match self {
            V::Num(n) => Ok(*n),
            V::Int(n) => Ok(*n as f64),
            // Prometheus' convertToFloat: strconv.ParseFloat for a string.
            V::Str(s) => {
                let bad = |why: &str| format!("strconv.ParseFloat: parsing {s:?}: {why}");
                let v = s.parse::<f64>().map_err(|_| bad("invalid syntax"))?;
                let named = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
                if v.is_infinite() && !matches!(named.as_str(), "inf" | "infinity") {
                    return Err(bad("value out of range"));
                }
                Ok(v)
            }
            V::Sample(_, v) => Ok(*v),
            other => Err(format!("can't convert {} to float", other.kind())),
        }
    }

    fn sample(&self, f: &str) -> Result<(&Labels, f64), String> {
        match self {
            V::Sample(l, v) => Ok((l, *v)),
            other => Err(format!(
                "{f}: expected a query sample, got {}",
                other.kind()
            )),
        }
    }
}

/// A template that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let parsed = parse::parse(src)?;
        // Text only (a comment is not: it renders as nothing).
        let plain = parsed.defines.is_empty()
            && !src.contains("{{")
            && parsed
                .nodes
                .iter()
                .all(|n| matches!(n, parse::Node::Text(_)));
        Ok(Template {
            nodes: parsed.nodes.into(),
            defines: std::sync::Arc::new(parsed.defines),
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
        let mut x = exec::Exec::new(data, &self.defines);
        match x.render(&self.nodes, &V::Data, &mut out) {
            Ok(()) => out,
            Err(e) => format!(
                "<error expanding template: error executing template {}: {}>",
                data.name,
                go_exec_error(data.name, &self.source, e)
            ),
        }
    }
}

/// What Prometheus puts before every alert template: the variables it predefines.
const PRELUDE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Go's text of an execution error: `template: NAME:LINE:COL: executing "NAME" at <CMD>:
/// MSG`, the line and column counted in the source behind Prometheus' prelude.
fn go_exec_error(name: &str, source: &str, e: exec::Fail) -> String {
    let Some((pos, context)) = e.at else {
        return format!("template: {name}: {}", e.msg);
    };
    let before = format!("{PRELUDE}{}", source.get(..pos).unwrap_or(source));
    let line = 1 + before.matches('\n').count();
    let col = match before.rfind('\n') {
        Some(nl) => before.len() - nl - 1,
        None => before.len(),
    };
    format!(
        "template: {name}:{line}:{col}: executing {} at <{context}>: {}",
        gofmt::quote(e.within.as_deref().unwrap_or(name), false),
        e.msg
    )
}

impl std::fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("labels", self.labels)
            .field("value", &self.value)
            .field("query", &self.query.is_some())
            .finish()
    }
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

fn call(f: Func, a: &[V], x: &mut exec::Exec<'_, '_>) -> Result<V, String> {
    Ok(match f {
        Func::Humanize => V::Str(humanize(one("humanize", a)?.num()?, 1000.0)),
        Func::Humanize1024 => V::Str(humanize(one("humanize1024", a)?.num()?, 1024.0)),
        Func::HumanizePercentage => V::Str(format!(
            "{}%",
            go_g4(one("humanizePercentage", a)?.num()? * 100.0)
        )),
        Func::HumanizeDuration => V::Str(humanize_duration(one("humanizeDuration", a)?.num()?)),
        Func::HumanizeTimestamp => V::Str(
            humanize_timestamp(one("humanizeTimestamp", a)?.num()?).map_err(|e| e.to_string())?,
        ),
        Func::Printf => {
            let (fmt, rest) = a
                .split_first()
                .ok_or_else(|| "printf: missing format".to_string())?;
            V::Str(printf(&fmt.text(), rest, x))
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
                let re = crate::labels::go_regex(&re.text()).map_err(|e| e.to_string())?;
                V::Str(
                    re.replace_all(&text.text(), repl.text().as_str())
                        .into_owned(),
                )
            }
            _ => return Err("reReplaceAll: wrong number of args: want 3".into()),
        },
        Func::Match => match a {
            [re, text] => {
                let re = crate::labels::go_regex(&re.text()).map_err(|e| e.to_string())?;
                V::Bool(re.is_match(&text.text()))
            }
            _ => return Err("match: wrong number of args: want 2".into()),
        },
        Func::Cmp(op) => compare(op, a)?,
        // Answered by the executor, which evaluates their arguments lazily as Go does.
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
        Func::Len => V::Int(match one("len", a)? {
            V::Str(s) => s.len() as i64,
            V::Map(m) => m.len() as i64,
            V::List(l) => l.len() as i64,
            V::Nil => return Err("reflect: call of reflect.Value.Type on zero Value".into()),
            other => return Err(format!("len of type {}", other.kind())),
        }),
        Func::Index => index(a)?,
        Func::Query => {
            let q = one("query", a)?.text();
            let run = x
                .data
                .query
                .ok_or_else(|| "query: no query engine here".to_string())?;
            x.queries += 1;
            if x.queries > exec::MAX_QUERIES {
                return Err(format!("query: more than {} queries", exec::MAX_QUERIES));
            }
            exec::samples(run(&q)?)
        }
        Func::First => match one("first", a)? {
            V::List(l) => l
                .first()
                .cloned()
                .ok_or_else(|| "first() called on vector with no elements".to_string())?,
            other => {
                return Err(format!(
                    "first: expected a query result, got {}",
                    other.kind()
                ));
            }
        },
        Func::Label => match a {
            [name, s] => V::Str(
                s.sample("label")?
                    .0
                    .get(&name.text())
                    .unwrap_or("")
                    .to_string(),
            ),
            _ => return Err("label: wrong number of args: want 2".into()),
        },
        Func::Value => V::Num(one("value", a)?.sample("value")?.1),
        Func::StrValue => V::Str(
            one("strvalue", a)?
                .sample("strvalue")?
                .0
                .get("__value__")
                .unwrap_or("")
                .to_string(),
        ),
        Func::SortByLabel => match a {
            [name, V::List(l)] => {
                let name = name.text();
                let mut l = l.clone();
                l.sort_by(|p, q| {
                    let key = |v: &V| match v {
                        V::Sample(l, _) => l.get(&name).unwrap_or("").to_string(),
                        _ => String::new(),
                    };
                    key(p).cmp(&key(q))
                });
                V::List(l)
            }
            [_, other] => {
                return Err(format!(
                    "sortByLabel: expected a query result, got {}",
                    other.kind()
                ));
            }
            _ => return Err("sortByLabel: wrong number of args: want 2".into()),
        },
        // `args 1 "x"` is a map arg0=1 arg1=x (to pass several values to a `template`).
        Func::Args => V::Map(Labels::from_pairs(
            a.iter()
                .enumerate()
                .map(|(i, v)| (format!("arg{i}"), v.text())),
        )),
        Func::SafeHtml => V::Str(one("safeHtml", a)?.text()),
        Func::ParseDuration => {
            let s = one("parseDuration", a)?.text();
            let d =
                humantime::parse_duration(&s).map_err(|e| format!("parseDuration {s:?}: {e}"))?;
            V::Num(d.as_secs_f64())
        }
        Func::ExternalUrl => {
            if !a.is_empty() {
                return Err("externalURL: takes no arguments".into());
            }
            V::Str(x.data.external_url.to_string())
        }
        Func::PathPrefix => {
            if !a.is_empty() {
                return Err("pathPrefix: takes no arguments".into());
            }
            let u = x.data.external_url;
            let path = u
                .split_once("://")
                .map_or(u, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
            V::Str(path.trim_end_matches('/').to_string())
        }
        Func::ToTime => {
            V::Str(humanize_timestamp(one("toTime", a)?.num()?).map_err(|e| e.to_string())?)
        }
        Func::StripDomain => V::Str(funcs::strip_domain(&one("stripDomain", a)?.text())),
        Func::Print => V::Str(gofmt::sprint(&go_args(a, x))),
        Func::Println => V::Str(gofmt::sprintln(&go_args(a, x))),
        Func::Html => V::Str(funcs::html_escape(&eval_args(a, x))),
        Func::Js => V::Str(funcs::js_escape(&eval_args(a, x))),
        Func::UrlQuery => V::Str(funcs::query_escape(&eval_args(a, x))),
        Func::Slice => funcs::slice(a).map_err(|e| e.0)?,
        Func::Call => {
            return Err(format!(
                "non-function of type {}",
                a.first().map_or("<nil>", V::kind)
            ));
        }
    })
}

/// Go's `eq`/`ne`/`lt`/`le`/`gt`/`ge` (text/template, Go 1.19): operands of one basic kind
/// only (an int literal against `$value`, a float64, is "incompatible types for
/// comparison"); `le` is `lt` or `eq`, `gt` is not `le` (so NaN is greater than anything);
/// `eq` takes several right-hand sides (true if any is equal).
fn compare(op: CmpOp, a: &[V]) -> Result<V, String> {
    #[derive(PartialEq)]
    enum K {
        Bool,
        Int,
        Float,
        Str,
        Nil,
        Other,
    }
    let kind = |v: &V| match v {
        V::Bool(_) => K::Bool,
        V::Int(_) => K::Int,
        V::Num(_) => K::Float,
        V::Str(_) => K::Str,
        V::Nil => K::Nil,
        _ => K::Other,
    };
    const BAD_TYPE: &str = "invalid type for comparison";
    const INCOMPATIBLE: &str = "incompatible types for comparison";
    let eq = |x: &V, ys: &[V]| -> Result<bool, String> {
        if ys.is_empty() {
            return Err("missing argument for comparison".into());
        }
        for y in ys {
            let truth = if kind(x) != kind(y) {
                if kind(x) != K::Nil && kind(y) != K::Nil {
                    return Err(INCOMPATIBLE.into());
                }
                false
            } else {
                match (x, y) {
                    (V::Bool(p), V::Bool(q)) => p == q,
                    (V::Int(p), V::Int(q)) => p == q,
                    (V::Num(p), V::Num(q)) => p == q,
                    (V::Str(p), V::Str(q)) => p == q,
                    (V::Nil, V::Nil) => true,
                    _ => return Err(format!("non-comparable type {}", y.kind())),
                }
            };
            if truth {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let lt = |x: &V, y: &V| -> Result<bool, String> {
        if matches!(kind(x), K::Other | K::Nil) || matches!(kind(y), K::Other | K::Nil) {
            return Err(BAD_TYPE.into());
        }
        if kind(x) != kind(y) {
            return Err(INCOMPATIBLE.into());
        }
        match (x, y) {
            (V::Int(p), V::Int(q)) => Ok(p < q),
            (V::Num(p), V::Num(q)) => Ok(p < q),
            (V::Str(p), V::Str(q)) => Ok(p < q),
            _ => Err(BAD_TYPE.into()),
        }
    };
    let (first, rest) = a
        .split_first()
        .ok_or_else(|| "missing argument for comparison".to_string())?;
    if op == CmpOp::Eq {
        return Ok(V::Bool(eq(first, rest)?));
    }
    let [second] = rest else {
        return Err(format!(
            "wrong number of args for {}: want 2 got {}",
            op.name(),
            a.len()
        ));
    };
    Ok(V::Bool(match op {
        CmpOp::Eq => eq(first, rest)?,
        CmpOp::Ne => !eq(first, rest)?,
        CmpOp::Lt => lt(first, second)?,
        CmpOp::Le => lt(first, second)? || eq(first, rest)?,
        CmpOp::Gt => !(lt(first, second)? || eq(first, rest)?),
        CmpOp::Ge => !lt(first, second)?,
    }))
}

/// Go's `index item i j …`: a label map by key (missing: empty), a query result or a string
/// (a byte, as an int) by position; no index is the item itself.
fn index(a: &[V]) -> Result<V, String> {
    let (item, idx) = a.split_first().ok_or("missing argument")?;
    if matches!(item, V::Nil) {
        return Err("index of untyped nil".into());
    }
    let mut v = item.clone();
    for i in idx {
        let pos = |len: usize| -> Result<usize, String> {
            match i {
                V::Int(n) if *n >= 0 && (*n as usize) < len => Ok(*n as usize),
                V::Int(n) => Err(format!("index out of range: {n}")),
                other => Err(format!(
                    "cannot index slice/array with type {}",
                    other.kind()
                )),
            }
        };
        v = match &v {
            V::Map(m) => match i {
                V::Str(k) => V::Str(m.get(k).unwrap_or("").to_string()),
                other => {
                    return Err(format!("value has type {}; should be string", other.kind()));
                }
            },
            V::List(l) => l[pos(l.len())?].clone(),
            V::Str(s) => V::Int(i64::from(s.as_bytes()[pos(s.len())?])),
            V::Nil => return Err("index of untyped nil".into()),
            other => return Err(format!("can't index item of type {}", other.kind())),
        };
    }
    Ok(v)
}

/// Go's `evalArgs` for `html`, `js` and `urlquery`: one string as it is, else `fmt.Sprint`.
fn eval_args(a: &[V], x: &exec::Exec<'_, '_>) -> String {
    match a {
        [V::Str(s)] => s.clone(),
        _ => gofmt::sprint(&go_args(a, x)),
    }
}

/// A template value as Go's `fmt` sees it.
fn go_arg(v: &V) -> GoArg {
    match v {
        V::Str(s) => GoArg::Str(s.clone()),
        V::Num(n) => GoArg::Float(*n),
        V::Int(n) => GoArg::Int(*n),
        V::Bool(b) => GoArg::Bool(*b),
        V::Map(m) => GoArg::Map(
            m.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        V::Nil => GoArg::Nil,
        other => GoArg::Other(other.kind(), other.text()),
    }
}

/// The arguments of a print function as Go sees them; the data printed as its struct.
fn go_args(a: &[V], x: &exec::Exec<'_, '_>) -> Vec<GoArg> {
    a.iter()
        .map(|v| match v {
            V::Data => GoArg::Other(v.kind(), x.show(v)),
            other => go_arg(other),
        })
        .collect()
}

/// Go's `printf`: `fmt.Sprintf` over the template's values.
fn printf(fmt: &str, args: &[V], x: &exec::Exec<'_, '_>) -> String {
    gofmt::sprintf(fmt, &go_args(args, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, value: f64) -> String {
        let labels = Labels::from_pairs([("instance", "db-1:9100"), ("device", "sda")]);
        let ext = Labels::from_pairs([("cluster", "eu")]);
        Template::parse(src).expect("parses").render(Data {
            name: "t",
            labels: &labels,
            external: &ext,
            value,
            external_url: "http://telltale.example:9470",
            query: None,
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
            ("{{ if le $value 3.0 }}a{{ end }}", 3.0, "a"),
            // An int literal against a float64 is Go's error, NaN is greater than all.
            (
                "{{ if le $value 3 }}a{{ end }}",
                3.0,
                "<error expanding template: incompatible types for comparison",
            ),
            ("{{ if gt $value 1e300 }}nan{{ end }}", f64::NAN, "nan"),
            ("{{ if lt 2 10 }}ints{{ end }}", 0.0, "ints"),
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
            match want.strip_prefix("<error expanding template") {
                Some(msg) => assert!(
                    got.starts_with("<error expanding template")
                        && got.contains(msg.trim_start_matches(": ")),
                    "{src} with {v}: {got}"
                ),
                None => assert!(got.starts_with(want), "{src} with {v}: {got}"),
            }
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
        // $value is a float64: %d is Go's in-band error, int literals print as ints.
        assert_eq!(
            render("{{ printf \"%d\" $value }}", 42.9),
            "%!d(float64=42.9)"
        );
        assert_eq!(render("{{ printf \"%d/%v\" 42 1e3 }}", 0.0), "42/1000");
        assert_eq!(render("{{ $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(render("{{ humanize 1e-27 }}", 0.0), "0.001y");
        // Go's regexp: `[` inside a class is a `[`, POSIX classes work, `&&` is literal.
        assert_eq!(
            render(r#"{{ reReplaceAll "b([[0-9])" "<$1>" "db[1" }}"#, 0.0),
            "d<[>1"
        );
        assert_eq!(
            render(
                r#"{{ reReplaceAll "[[:digit:]]+" "N" "db-12" }}|{{ match "^[a&&b]$" "&" }}"#,
                0.0
            ),
            "db-N|true"
        );
        assert_eq!(render("{{ humanizeDuration 1.5e-10 }}", 0.0), "150ps");
        assert_eq!(
            render("{{ humanizeTimestamp 1.5 }}", 0.0),
            "1970-01-01 00:00:01.5 +0000 UTC"
        );
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

    fn render_q(src: &str) -> String {
        let labels = Labels::from_pairs([("instance", "db-1:9100"), ("device", "sda")]);
        let ext = Labels::default();
        let q = |s: &str| -> Result<Vec<(Labels, f64)>, String> {
            match s {
                "up" => Ok(vec![
                    (Labels::from_pairs([("job", "b")]), 1.0),
                    (Labels::from_pairs([("job", "a")]), 0.0),
                ]),
                "bad" => Err("parse error".into()),
                _ => Ok(Vec::new()),
            }
        };
        Template::parse(src).expect("parses").render(Data {
            name: "t",
            labels: &labels,
            external: &ext,
            value: 1.0,
            external_url: "http://telltale.example:9470",
            query: Some(&q),
        })
    }

    /// What promtool 2.42 (Go 1.19) cannot check: ranges over integers, the recursion and
    /// query limits, errors; and the rest of the new functions.
    #[test]
    fn queries_variables_ranges_and_definitions() {
        for (src, want) in [
            ("{{ range 3 }}{{ . }}{{ end }}", "012"),
            ("{{ len (query \"up\") }}", "2"),
            (
                "{{ range query \"up\" | sortByLabel \"job\" }}{{ .Labels.job }}{{ end }}",
                "ab",
            ),
            ("{{ (query \"up\" | first).Labels.job }}", "b"),
            ("{{ index (query \"up\") 1 | value }}", "0"),
            ("{{ query \"up\" | first }}", "{map[job:b] 1}"),
            ("{{ query \"bad\" }}", "error calling query: parse error>"),
            (
                "{{ range 30 }}{{ query \"up\" }}{{ end }}",
                "error calling query: query: more than 20 queries>",
            ),
            (
                "{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" 1 }}",
                "<error expanding template: template \"r\": exceeded maximum depth>",
            ),
            (
                "{{ template \"nope\" }}",
                "<error expanding template: template \"nope\" not defined>",
            ),
            (
                "{{ block \"b\" $labels.device }}[{{ . }}]{{ end }}",
                "[sda]",
            ),
            (
                "{{ with $x := $labels.device }}{{ $x = \"y\" }}{{ $x }}{{ end }}",
                "y",
            ),
            ("{{ args 1 \"a\" }}", "map[arg0:1 arg1:a]"),
            (
                "{{ pathPrefix }}|{{ externalURL }}",
                "|http://telltale.example:9470",
            ),
            (
                "{{ range $i, $e := 5 }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $e }}{{ end }}",
                "012",
            ),
            (
                "{{ . }}",
                "{map[device:sda instance:db-1:9100] map[] http://telltale.example:9470 1}",
            ),
            ("{{ .Labels.device }}{{ $.Value }}", "sda1"),
            ("{{ range query \"none\" }}x{{ end }}", ""),
            (
                "{{ first (query \"none\") }}",
                "error calling first: first() called on vector with no elements>",
            ),
            (
                "{{ .Labels.x.y }}",
                "<error expanding template: can't evaluate field y in type string>",
            ),
        ] {
            let got = render_q(src);
            if want.ends_with('>') && !want.starts_with('<') {
                assert!(got.ends_with(want), "{src}: {got}");
            } else if want.starts_with("<error") {
                let msg = want.trim_start_matches("<error expanding template: ");
                assert!(
                    got.starts_with(
                        "<error expanding template: error executing template t: template: t:"
                    ),
                    "{src}: {got}"
                );
                assert!(got.ends_with(msg), "{src}: {got}");
            } else {
                assert_eq!(got, want, "{src}");
            }
        }
        // Without a query engine (runbook parameters), `query` is an error, not a panic.
        assert!(
            render("{{ query \"up\" }}", 0.0)
                .ends_with("error calling query: query: no query engine here>")
        );
    }

    proptest::proptest! {
        /// Any arrangement of template pieces parses or is refused, and renders, without a
        /// panic or a runaway.
        #[test]
        fn hostile_templates_never_panic(parts in proptest::collection::vec(0usize..PIECES.len(), 0..24)) {
            let src: String = parts.iter().map(|&i| PIECES[i]).collect();
            if let Ok(t) = Template::parse(&src) {
                let labels = Labels::default();
                let q = |_: &str| -> Result<Vec<(Labels, f64)>, String> { Ok(vec![(Labels::default(), 1.0)]) };
                let _ = t.render(Data {
            name: "t",
                    labels: &labels,
                    external: &labels,
                    value: f64::NAN,
                    external_url: "",
                    query: Some(&q),
                });
            }
        }
    }

    const PIECES: [&str; 30] = [
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "(",
        ")",
        "$x",
        " := ",
        " = ",
        "range ",
        "if ",
        "else ",
        "end",
        "define ",
        "\"d\" ",
        "template ",
        "query ",
        "\"up\" ",
        " | ",
        ".",
        ".Labels",
        "break",
        "1 ",
        "$labels",
        "with ",
        " ",
        "len ",
        "first ",
        ", $y",
        "/* c */",
    ];

    #[test]
    fn parse_errors_name_the_problem_and_render_errors_are_text() {
        let e = Template::parse("{{ nosuch $value }}").expect_err("unknown function");
        assert!(e.to_string().contains("\"nosuch\" not defined"), "{e}");
        assert!(Template::parse("{{ if $value }}x").is_err());
        assert!(Template::parse("{{ $value ").is_err());
        assert!(Template::parse("{{ $bogus }}").is_err());
        // Go's text: the template, line and column behind Prometheus' prelude, the command.
        assert_eq!(
            render("{{ $labels.device | humanize }}", 0.0),
            "<error expanding template: error executing template t: template: t:1:132: \
             executing \"t\" at <humanize>: error calling humanize: strconv.ParseFloat: \
             parsing \"sda\": invalid syntax>"
        );
        assert_eq!(
            render("x\n {{ humanize 1 2 }}", 0.0),
            "<error expanding template: error executing template t: template: t:2:4: \
             executing \"t\" at <humanize>: wrong number of args for humanize: want 1 got 2>"
        );
        assert_eq!(
            render("{{ if gt (len $labels)  1.5 }}{{ end }}", 0.0),
            "<error expanding template: error executing template t: template: t:1:118: \
             executing \"t\" at <gt (len $labels) 1.5>: error calling gt: incompatible types \
             for comparison>"
        );
    }
}
