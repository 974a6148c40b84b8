//! The LogQL parser: a tokenizer and recursive descent.

use super::{
    AggOp, BinOp, Cmp, Grouping, LabelFilter, LineFilter, LogExpr, Matching, MetricExpr,
    ParseError, PatternPart, Query, RangeFn, Stage,
};
use crate::labels::{MatchOp, Matcher};

/// Longest query accepted.
const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Deepest nesting of aggregations and label-filter groups.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
    End,
}

struct Lexer<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
}

const SYMS: [&str; 26] = [
    "|=", "!=", "|~", "!~", "=~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",", "|", "=",
    ">", "<", "!", "+", "-", "*", "/", "%", "^",
];

impl<'a> Lexer<'a> {
    fn run(src: &'a str) -> Result<Vec<(Tok, usize)>, ParseError> {
        let mut lx = Lexer {
            src,
            toks: Vec::new(),
        };
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if c == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            if c == b'"' || c == b'`' {
                let (s, next) = lx.string(i)?;
                lx.toks.push((Tok::Str(s), i));
                i = next;
                continue;
            }
            // A `-` before a digit starts a negative number unless it follows a value
            // (`x -1` is a subtraction).
            let after_value = matches!(
                lx.toks.last(),
                Some((Tok::Ident(_) | Tok::Num(_) | Tok::Str(_), _))
                    | Some((Tok::Sym(")" | "]" | "}"), _))
            );
            if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                || (c == b'-' && !after_value && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                lx.toks.push((Tok::Num(src[start..i].to_string()), start));
                continue;
            }
            if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                lx.toks.push((Tok::Ident(src[start..i].to_string()), start));
                continue;
            }
            match SYMS.iter().find(|s| src[i..].starts_with(**s)) {
                Some(s) => {
                    lx.toks.push((Tok::Sym(s), i));
                    i += s.len();
                }
                None => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err_at(src, i, format!("syntax error: unexpected {ch:?}")));
                }
            }
        }
        lx.toks.push((Tok::End, src.len()));
        Ok(lx.toks)
    }

    /// A string literal at `i`: `"..."` with Go escapes, or a raw `` `...` ``.
    fn string(&self, i: usize) -> Result<(String, usize), ParseError> {
        let b = self.src.as_bytes();
        let q = b[i];
        let mut out = String::new();
        let mut j = i + 1;
        let mut chars = self.src[j..].char_indices();
        while let Some((k, ch)) = chars.next() {
            let at = j + k;
            if ch as u32 == u32::from(q) {
                return Ok((out, at + 1));
            }
            if ch == '\\' && q == b'"' {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    // Regexes keep their escapes (`\d`, `\.`).
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                continue;
            }
            out.push(ch);
        }
        j = self.src.len();
        Err(err_at(self.src, j, "syntax error: unterminated string"))
    }
}

fn err_at(src: &str, at: usize, message: impl Into<String>) -> ParseError {
    let before = src.get(..at.min(src.len())).unwrap_or("");
    ParseError {
        line: before.matches('\n').count() + 1,
        col: before.rsplit('\n').next().unwrap_or("").chars().count() + 1,
        message: message.into(),
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

/// Parses a LogQL query.
pub fn parse(src: &str) -> Result<Query, ParseError> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(err_at(
            src,
            0,
            format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let toks = Lexer::run(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    let q = if p.peek() == &Tok::Sym("{") {
        Query::Log(p.log_expr()?)
    } else {
        Query::Metric(p.metric()?)
    };
    if p.peek() != &Tok::End {
        return Err(p.unexpected());
    }
    Ok(q)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn at(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    /// The next token (past the end: `End`, again and again); a caller may step back once.
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn err(&self, m: impl Into<String>) -> ParseError {
        err_at(self.src, self.at(), m)
    }

    fn unexpected(&self) -> ParseError {
        let what = match self.peek() {
            Tok::Ident(s) => format!("unexpected IDENTIFIER {s:?}"),
            Tok::Str(s) => format!("unexpected STRING {s:?}"),
            Tok::Num(s) => format!("unexpected NUMBER {s}"),
            Tok::Sym(s) => format!("unexpected {s}"),
            Tok::End => "unexpected end of query".to_string(),
        };
        self.err(format!("syntax error: {what}"))
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Sym(sym) {
            self.next();
            Ok(())
        } else {
            Err(self.err(format!(
                "syntax error: {}, expecting {sym}",
                self.unexpected()
                    .message
                    .trim_start_matches("syntax error: ")
            )))
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Tok::Ident(s) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Tok::Str(s) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn regex(&self, s: &str) -> Result<regex::Regex, ParseError> {
        // Loki's regexes are Go's.
        let rust = telltale_common::goregex::translate(s, telltale_common::goregex::Flavor::Regex)
            .map_err(|e| self.err(format!("invalid regex {s:?}: {e}")))?;
        regex::RegexBuilder::new(&rust)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| self.err(format!("invalid regex {s:?}: {e}")))
    }

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        self.expect("{")?;
        let mut matchers = Vec::new();
        while self.peek() != &Tok::Sym("}") {
            let name = self.ident()?;
            let op = match self.next() {
                Tok::Sym(s @ ("=" | "!=" | "=~" | "!~")) => s,
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected());
                }
            };
            let value = self.string()?;
            matchers.push(self.matcher(&name, op, &value)?);
            if self.peek() == &Tok::Sym(",") {
                self.next();
            } else if self.peek() != &Tok::Sym("}") {
                return Err(self.unexpected());
            }
        }
        self.next();
        if !matchers.iter().any(|m| !m.matches("")) {
            return Err(self.err(
                "queries require at least one regexp or equality matcher that does not have an empty-compatible value",
            ));
        }
        let mut stages = Vec::new();
        loop {
            let stage = match self.peek().clone() {
                Tok::Sym(s @ ("|=" | "!=" | "|~" | "!~")) => {
                    self.next();
                    let text = self.string()?;
                    Stage::Line(match s {
                        "|=" => LineFilter::Contains(text),
                        "!=" => LineFilter::NotContains(text),
                        "|~" => LineFilter::Regex(self.regex(&text)?),
                        _ => LineFilter::NotRegex(self.regex(&text)?),
                    })
                }
                Tok::Sym("|") => {
                    self.next();
                    self.stage()?
                }
                _ => break,
            };
            stages.push(stage);
        }
        Ok(LogExpr { matchers, stages })
    }

    fn matcher(&self, name: &str, op: &str, value: &str) -> Result<Matcher, ParseError> {
        let op = match op {
            "=" => MatchOp::Equal(value.to_string()),
            "!=" => MatchOp::NotEqual(value.to_string()),
            "=~" => MatchOp::Regex(self.regex(&format!("^(?:{value})$"))?),
            _ => MatchOp::NotRegex(self.regex(&format!("^(?:{value})$"))?),
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
        })
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let Tok::Ident(word) = self.peek().clone() else {
            return Err(self.unexpected());
        };
        let keyword = !matches!(
            self.toks.get(self.pos + 1).map(|t| &t.0),
            Some(Tok::Sym(
                "=" | "!=" | "=~" | "!~" | "==" | ">" | ">=" | "<" | "<="
            ))
        );
        if !keyword {
            return Ok(Stage::Label(self.label_filter()?));
        }
        self.next();
        Ok(match word.as_str() {
            "json" => Stage::Json,
            "logfmt" => Stage::Logfmt,
            "regexp" => {
                let s = self.string()?;
                let re = self.regex(&s)?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(self.err("at least one named capture must be supplied"));
                }
                Stage::Regexp(re)
            }
            "pattern" => Stage::Pattern(pattern(&self.string()?).map_err(|m| self.err(m))?),
            "line_format" => Stage::LineFormat(self.string()?),
            "drop" | "keep" => {
                let mut names = vec![self.ident()?];
                while self.peek() == &Tok::Sym(",") {
                    self.next();
                    names.push(self.ident()?);
                }
                if word == "drop" {
                    Stage::Drop(names)
                } else {
                    Stage::Keep(names)
                }
            }
            "unwrap" => {
                let first = self.ident()?;
                if matches!(first.as_str(), "bytes" | "duration" | "duration_seconds")
                    && self.peek() == &Tok::Sym("(")
                {
                    self.next();
                    let name = self.ident()?;
                    self.expect(")")?;
                    Stage::Unwrap {
                        name,
                        conv: Some(first),
                    }
                } else {
                    Stage::Unwrap {
                        name: first,
                        conv: None,
                    }
                }
            }
            other => {
                return Err(self.err(format!(
                    "syntax error: unexpected IDENTIFIER {other:?}: not a parser or stage this server knows"
                )));
            }
        })
    }

    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("the query is nested too deeply"));
        }
        let mut left = self.label_filter_one()?;
        loop {
            match self.peek().clone() {
                Tok::Ident(w) if w == "and" => {
                    self.next();
                    left = LabelFilter::And(Box::new(left), Box::new(self.label_filter_one()?));
                }
                Tok::Sym(",") => {
                    self.next();
                    left = LabelFilter::And(Box::new(left), Box::new(self.label_filter_one()?));
                }
                Tok::Ident(w) if w == "or" => {
                    self.next();
                    left = LabelFilter::Or(Box::new(left), Box::new(self.label_filter_one()?));
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(left)
    }

    fn label_filter_one(&mut self) -> Result<LabelFilter, ParseError> {
        if self.peek() == &Tok::Sym("(") {
            self.next();
            let f = self.label_filter()?;
            self.expect(")")?;
            return Ok(f);
        }
        let name = self.ident()?;
        let op = match self.next() {
            Tok::Sym(s) => s,
            _ => {
                self.pos -= 1;
                return Err(self.unexpected());
            }
        };
        match self.next() {
            Tok::Str(v) if matches!(op, "=" | "!=" | "=~" | "!~") => {
                Ok(LabelFilter::Str(self.matcher(&name, op, &v)?))
            }
            Tok::Num(v) => {
                let value = number(&v).ok_or_else(|| self.err(format!("invalid number {v:?}")))?;
                let cmp = match op {
                    "=" | "==" => Cmp::Eq,
                    "!=" => Cmp::Ne,
                    ">" => Cmp::Gt,
                    ">=" => Cmp::Ge,
                    "<" => Cmp::Lt,
                    "<=" => Cmp::Le,
                    _ => return Err(self.err(format!("syntax error: {op} needs a string"))),
                };
                Ok(LabelFilter::Num { name, cmp, value })
            }
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Ident(w) if w == "by" => false,
            Tok::Ident(w) if w == "without" => true,
            _ => return Ok(None),
        };
        self.next();
        self.expect("(")?;
        let mut labels = Vec::new();
        while self.peek() != &Tok::Sym(")") {
            labels.push(self.ident()?);
            if self.peek() == &Tok::Sym(",") {
                self.next();
            }
        }
        self.next();
        Ok(Some(Grouping { without, labels }))
    }

    fn metric(&mut self) -> Result<MetricExpr, ParseError> {
        self.binary(0)
    }

    /// The binary operator at the cursor and its precedence (Prometheus': `or` lowest, then
    /// `and`/`unless`, comparisons, `+ -`, `* / %`, `^`).
    fn bin_op(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Ident(w) if w == "or" => (BinOp::Or, 1),
            Tok::Ident(w) if w == "and" => (BinOp::And, 2),
            Tok::Ident(w) if w == "unless" => (BinOp::Unless, 2),
            Tok::Sym("==") => (BinOp::Cmp(Cmp::Eq), 3),
            Tok::Sym("!=") => (BinOp::Cmp(Cmp::Ne), 3),
            Tok::Sym(">") => (BinOp::Cmp(Cmp::Gt), 3),
            Tok::Sym(">=") => (BinOp::Cmp(Cmp::Ge), 3),
            Tok::Sym("<") => (BinOp::Cmp(Cmp::Lt), 3),
            Tok::Sym("<=") => (BinOp::Cmp(Cmp::Le), 3),
            Tok::Sym("+") => (BinOp::Add, 4),
            Tok::Sym("-") => (BinOp::Sub, 4),
            Tok::Sym("*") => (BinOp::Mul, 5),
            Tok::Sym("/") => (BinOp::Div, 5),
            Tok::Sym("%") => (BinOp::Mod, 5),
            Tok::Sym("^") => (BinOp::Pow, 6),
            _ => return None,
        })
    }

    /// Operators of precedence `min` and above, by precedence climbing (`^` is right
    /// associative, the others left).
    fn binary(&mut self, min: u8) -> Result<MetricExpr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("the query is nested too deeply"));
        }
        let mut lhs = self.metric_primary()?;
        while let Some((op, prec)) = self.bin_op() {
            if prec < min {
                break;
            }
            self.next();
            let bool_mod = matches!(self.peek(), Tok::Ident(w) if w == "bool");
            if bool_mod {
                if !matches!(op, BinOp::Cmp(_)) {
                    return Err(self.err("bool modifier can only be used on comparison operators"));
                }
                self.next();
            }
            let mut matching = Matching::default();
            if let Tok::Ident(w) = self.peek().clone()
                && (w == "on" || w == "ignoring")
            {
                self.next();
                matching.on = w == "on";
                self.expect("(")?;
                while self.peek() != &Tok::Sym(")") {
                    matching.labels.push(self.ident()?);
                    if self.peek() == &Tok::Sym(",") {
                        self.next();
                    }
                }
                self.next();
                if let Tok::Ident(g) = self.peek()
                    && (g == "group_left" || g == "group_right")
                {
                    return Err(self.err(format!(
                        "{g}: many-to-one matching is not supported by this server"
                    )));
                }
            }
            let rhs = self.binary(if op == BinOp::Pow { prec } else { prec + 1 })?;
            let scalars = (lhs.is_scalar(), rhs.is_scalar());
            if op.is_set() && (scalars.0 || scalars.1) {
                return Err(self.err("set operators are not allowed between a number and a vector"));
            }
            if scalars == (true, true) && matches!(op, BinOp::Cmp(_)) && !bool_mod {
                return Err(self.err("comparisons between scalars must use BOOL modifier"));
            }
            lhs = MetricExpr::Binary {
                op,
                bool_mod,
                matching,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// A parenthesised expression, a number, a range function or an aggregation.
    fn metric_primary(&mut self) -> Result<MetricExpr, ParseError> {
        match self.peek().clone() {
            Tok::Sym("(") => {
                self.next();
                let e = self.binary(0)?;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Num(n) => {
                self.next();
                return n
                    .parse::<f64>()
                    .ok()
                    .map(MetricExpr::Number)
                    .ok_or_else(|| self.err(format!("invalid number {n:?}")));
            }
            _ => {}
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("the query is nested too deeply"));
        }
        let name = self.ident()?;
        let range_fn = match name.as_str() {
            "count_over_time" => Some(RangeFn::CountOverTime),
            "rate" => Some(RangeFn::Rate),
            "bytes_over_time" => Some(RangeFn::BytesOverTime),
            "bytes_rate" => Some(RangeFn::BytesRate),
            "sum_over_time" => Some(RangeFn::SumOverTime),
            "avg_over_time" => Some(RangeFn::AvgOverTime),
            "min_over_time" => Some(RangeFn::MinOverTime),
            "max_over_time" => Some(RangeFn::MaxOverTime),
            "first_over_time" => Some(RangeFn::FirstOverTime),
            "last_over_time" => Some(RangeFn::LastOverTime),
            _ => None,
        };
        let e = if let Some(func) = range_fn {
            self.expect("(")?;
            let log = self.log_expr()?;
            self.expect("[")?;
            let range_ns = match self.next() {
                Tok::Num(d) | Tok::Ident(d) => duration_ns(&d)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| self.err(format!("invalid range {d:?}")))?,
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected());
                }
            };
            self.expect("]")?;
            self.expect(")")?;
            let unwrapped = log.stages.iter().any(|s| matches!(s, Stage::Unwrap { .. }));
            if func.unwraps() != unwrapped {
                return Err(self.err(if unwrapped {
                    format!("invalid aggregation {name} with unwrap")
                } else {
                    format!("invalid aggregation {name} without unwrap")
                }));
            }
            let grouping = self.grouping()?;
            if grouping.is_some() && !func.unwraps() {
                return Err(self.err(format!("grouping not allowed for {name} aggregation")));
            }
            MetricExpr::Range {
                func,
                log,
                range_ns,
                grouping,
            }
        } else {
            let op = match name.as_str() {
                "sum" => AggOp::Sum,
                "avg" => AggOp::Avg,
                "min" => AggOp::Min,
                "max" => AggOp::Max,
                "count" => AggOp::Count,
                "topk" => AggOp::Topk(0),
                "bottomk" => AggOp::Bottomk(0),
                other => {
                    return Err(self.err(format!(
                        "syntax error: unexpected IDENTIFIER {other:?}: not a function or aggregation this server knows"
                    )));
                }
            };
            let mut grouping = self.grouping()?;
            self.expect("(")?;
            let op = match op {
                AggOp::Topk(_) | AggOp::Bottomk(_) => {
                    let k = match self.next() {
                        Tok::Num(n) => n.parse::<usize>().ok().filter(|&k| k > 0),
                        _ => None,
                    }
                    .ok_or_else(|| self.err("topk and bottomk need a positive integer first"))?;
                    self.expect(",")?;
                    if matches!(op, AggOp::Topk(_)) {
                        AggOp::Topk(k)
                    } else {
                        AggOp::Bottomk(k)
                    }
                }
                other => other,
            };
            let inner = self.metric()?;
            if inner.is_scalar() {
                return Err(self.err(format!(
                    "expected a vector in the {name} aggregation, got a number"
                )));
            }
            self.expect(")")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            MetricExpr::Agg {
                op,
                grouping,
                inner: Box::new(inner),
            }
        };
        self.depth -= 1;
        Ok(e)
    }
}

/// A `pattern` expression's parts.
fn pattern(s: &str) -> Result<Vec<PatternPart>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        match rest.find('<') {
            Some(i) => {
                if i > 0 {
                    out.push(PatternPart::Lit(rest[..i].to_string()));
                }
                let end = rest[i..]
                    .find('>')
                    .ok_or_else(|| format!("invalid pattern {s:?}: unclosed <"))?;
                let name = &rest[i + 1..i + end];
                if !(name == "_" || name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    || name.is_empty()
                {
                    return Err(format!("invalid pattern {s:?}: bad capture <{name}>"));
                }
                if matches!(out.last(), Some(PatternPart::Capture(_))) {
                    return Err(format!(
                        "invalid pattern {s:?}: two captures need literal text between them"
                    ));
                }
                out.push(PatternPart::Capture(
                    (name != "_").then(|| name.to_string()),
                ));
                rest = &rest[i + end + 1..];
            }
            None => {
                out.push(PatternPart::Lit(rest.to_string()));
                rest = "";
            }
        }
    }
    if !out
        .iter()
        .any(|p| matches!(p, PatternPart::Capture(Some(_))))
    {
        return Err(format!("invalid pattern {s:?}: at least one named capture"));
    }
    Ok(out)
}

/// A number, a duration (in seconds) or a byte size (in bytes).
pub fn number(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    if let Some(ns) = duration_ns(s) {
        return Some(ns as f64 / 1e9);
    }
    telltale_common::config::parse_bytes(s)
        .ok()
        .map(|b| b as f64)
}

/// A Go-style duration (`5m`, `1h30m`, `250ms`, `1.5s`) in ns.
pub fn duration_ns(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "y" => 31_536_000e9,
            _ => return None,
        };
        total += v * mult;
        rest = &rest[u..];
    }
    (total.is_finite() && total < 9.2e18).then_some(total as i64)
}

#[cfg(test)]
mod tests;
