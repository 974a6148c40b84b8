//! Go's regular expressions in selectors.
//!
//! promql-parser compiles a matcher's regex while parsing, with Rust's syntax; Prometheus
//! compiles it with Go's. The two read some patterns differently (`\d` is ASCII in Go and
//! matches `٣` in Rust; `[[a]b]` is a class then `b]` in Go and one class in Rust), accept
//! different sets (`[[0-9]`, `\101`, `\Q.\E` are Go's; `(?x)`, `\u0041` are Rust's only).
//! So every regex matcher is compiled again from its text with `telltale_common::goregex`
//! after the parse, and a regex that Go reads but promql-parser would refuse is handed to
//! promql-parser as a placeholder and put back afterwards, so its text stays the user's
//! (`format_query` prints it).

use lrpar::{Lexeme as _, Lexer as _};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::Expr;
use promql_parser::parser::token::{T_EQL_REGEX, T_NEQ_REGEX, T_STRING};

use telltale_common::goregex::Flavor;

use super::QueryError;
use super::limits::parse_guarded;

/// Starts and ends a placeholder's number (a private-use character no query needs).
const MARK: char = '\u{E000}';

/// `q` with every regex literal replaced by a placeholder, and the values the placeholders
/// stand for; `None` when there is none. Only called when promql-parser refused `q` (its
/// regexes are Rust's), so it costs nothing on the queries it reads. A regex Go refuses is
/// Prometheus' parse error, given here with Go's text.
pub(super) fn placeholders(q: &str) -> Result<Option<(String, Vec<String>)>, QueryError> {
    let Ok(lexer) = promql_parser::parser::lexer(q) else {
        return Ok(None);
    };
    let tokens: Vec<(u16, usize, usize)> = lexer
        .iter()
        .filter_map(|l| l.ok())
        .map(|l| (l.tok_id(), l.span().start(), l.span().end()))
        .collect();
    let mut out = String::with_capacity(q.len());
    let mut values = Vec::new();
    let mut from = 0;
    for pair in tokens.windows(2) {
        let [(op, _, _), (tok, start, end)] = pair else {
            continue;
        };
        if !(*op == T_EQL_REGEX || *op == T_NEQ_REGEX) || *tok != T_STRING {
            continue;
        }
        let Some(value) = q.get(*start..*end).and_then(unquote) else {
            continue;
        };
        let bad = |e| QueryError::BadData(format!("parse error: {e}"));
        let go = telltale_common::goregex::anchored(&value, Flavor::Regex).map_err(bad)?;
        // The placeholder matches the empty string when the regex does, so promql-parser's
        // "at least one non-empty matcher" check judges it the same.
        let empty = crate::labels::compile(go).map_err(bad)?.is_match("");
        out.push_str(&q[from..*start]);
        let tail = if empty { "|" } else { "" };
        out.push_str(&format!("\"{MARK}{}{MARK}{tail}\"", values.len()));
        values.push(value);
        from = *end;
    }
    if values.is_empty() {
        return Ok(None);
    }
    out.push_str(&q[from..]);
    Ok(Some((out, values)))
}

/// A string literal's value, read by promql-parser itself (as the value of an equality
/// matcher, which compiles nothing).
fn unquote(literal: &str) -> Option<String> {
    match parse_guarded(&format!("x{{a={literal}}}")).ok()? {
        Expr::VectorSelector(vs) => vs
            .matchers
            .matchers
            .into_iter()
            .find(|m| m.name == "a")
            .map(|m| m.value),
        _ => None,
    }
}

/// Puts the placeholders' values back and compiles every regex matcher of `e` as Go reads it.
pub(super) fn compile_as_go(e: &mut Expr, values: &[String]) -> Result<(), QueryError> {
    let mut stack: Vec<&mut Expr> = vec![e];
    while let Some(e) = stack.pop() {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &mut ms.vs,
            Expr::Aggregate(a) => {
                stack.push(&mut a.expr);
                if let Some(p) = a.param.as_mut() {
                    stack.push(p);
                }
                continue;
            }
            Expr::Unary(u) => {
                stack.push(&mut u.expr);
                continue;
            }
            Expr::Binary(b) => {
                stack.push(&mut b.lhs);
                stack.push(&mut b.rhs);
                continue;
            }
            Expr::Paren(p) => {
                stack.push(&mut p.expr);
                continue;
            }
            Expr::Subquery(s) => {
                stack.push(&mut s.expr);
                continue;
            }
            Expr::Call(c) => {
                stack.extend(c.args.args.iter_mut().map(|a| &mut **a));
                continue;
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => continue,
        };
        let all = vs
            .matchers
            .matchers
            .iter_mut()
            .chain(vs.matchers.or_matchers.iter_mut().flatten());
        for m in all {
            if !matches!(m.op, PMatchOp::Re(_) | PMatchOp::NotRe(_)) {
                continue;
            }
            let swapped = placeholder(&m.value).and_then(|i| values.get(i));
            if let Some(v) = swapped {
                m.value = v.clone();
            }
            let bad = |e| QueryError::BadData(format!("parse error: {e}"));
            let go = telltale_common::goregex::anchored(&m.value, Flavor::Regex).map_err(bad)?;
            // Where Go's reading is written as the text itself, promql-parser's regex is
            // already Go's: no second compile on the query path.
            if swapped.is_none() && go == format!("^(?:{})$", m.value) {
                continue;
            }
            let re = crate::labels::compile(go).map_err(bad)?;
            m.op = match m.op {
                PMatchOp::Re(_) => PMatchOp::Re(re),
                _ => PMatchOp::NotRe(re),
            };
        }
    }
    Ok(())
}

/// The number of a placeholder value (`MARK n MARK`, then `|` when it matches "").
fn placeholder(v: &str) -> Option<usize> {
    v.strip_prefix(MARK)?.split(MARK).next()?.parse().ok()
}
