//! Bounds on a query's shape, checked before it is parsed and before it is evaluated.
//!
//! The parser (promql-parser), the syntax tree's destructor and the evaluator all recurse
//! over the expression; an expression from outside (an HTTP query, `match[]`, a rule file)
//! must not be able to drive that recursion past the thread's stack, which aborts the whole
//! process. So:
//! - [`check_text`] bounds the text *before* parsing: its length, the nesting of brackets and
//!   the number of operators (each binary operator adds a level to the tree);
//! - [`check_depth`] measures the parsed tree without recursing and bounds its depth.
//!
//! The bounds are far above what people write (Grafana's largest generated queries nest a
//! few dozen levels): expressions of depth 100 and chains of 1,000 terms answer.

use promql_parser::parser::Expr;

use super::QueryError;

/// Longest query text accepted (bytes).
pub const MAX_QUERY_BYTES: usize = 256 * 1024;
/// Deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_NESTING: usize = 256;
/// Most binary operators accepted in one query.
pub const MAX_OPERATORS: usize = 2_000;
/// Deepest syntax tree accepted.
pub const MAX_DEPTH: usize = 2_500;

fn bad(msg: String) -> QueryError {
    QueryError::BadData(msg)
}

/// Functions Prometheus 2 has that the parser's table lacks: registered once, before the
/// first parse.
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType;
        let holt_winters = promql_parser::parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        if let Err(e) = promql_parser::parser::register_extra_functions(vec![holt_winters]) {
            tracing::error!(error = %e, "cannot register holt_winters");
        }
    });
}

/// Parses `q` within the bounds: [`check_text`], the parser, then [`check_depth`]. The error
/// is [`QueryError::BadData`] with the bare message (callers say which parameter or rule it
/// concerns).
///
/// The tree is the one to evaluate: shaped as Prometheus' engine sees it (see
/// [`super::prepare`]).
pub fn parse(q: &str) -> Result<Expr, QueryError> {
    register_functions();
    check_text(q)?;
    let mut e = super::prepare::parse(q, true)?;
    check_depth(&e)?;
    super::prepare::unwrap_argument_parens(&mut e);
    Ok(e)
}

/// [`parse`] for printing: the same checks, and the tree of the text as written.
pub fn parse_syntax(q: &str) -> Result<Expr, QueryError> {
    register_functions();
    check_text(q)?;
    let e = super::prepare::parse(q, false)?;
    check_depth(&e)?;
    Ok(e)
}

/// The parser, with its panics turned into errors: it panics on some out-of-range numbers
/// (`m offset 1111111111111111111111111111111111111` overflows a `Duration`; found by
/// fuzzing), and a query must never take a request or a rule evaluation down.
pub fn parse_guarded(q: &str) -> Result<Expr, QueryError> {
    match std::panic::catch_unwind(|| promql_parser::parser::parse(q)) {
        Ok(r) => r.map_err(bad),
        Err(_) => Err(bad(
            "a number or duration in the query is out of range".to_string()
        )),
    }
}

/// Checks the query text's length, bracket nesting and operator count without parsing it.
/// String literals and comments are skipped; matchers inside `{}` are not operators.
pub fn check_text(q: &str) -> Result<(), QueryError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "query is {} bytes long, the limit is {MAX_QUERY_BYTES}",
            q.len()
        )));
    }
    let b = q.as_bytes();
    let (mut depth, mut braces, mut ops) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // Skip the literal; backslash escapes apply except in raw (`) strings.
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if c == b'{' {
                    braces += 1;
                }
                if depth > MAX_NESTING {
                    return Err(bad(format!(
                        "brackets nest deeper than {MAX_NESTING} levels"
                    )));
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if c == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            // Outside matchers: arithmetic and comparison operators (a two-character one such
            // as `==` counts twice, which only makes the bound stricter).
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' if braces == 0 => {
                ops += 1;
            }
            c if braces == 0 && c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &q[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    ops += 1;
                }
                continue;
            }
            _ => {}
        }
        if ops > MAX_OPERATORS {
            return Err(bad(format!(
                "more than {MAX_OPERATORS} operators in one query"
            )));
        }
        i += 1;
    }
    if ops > MAX_OPERATORS {
        return Err(bad(format!(
            "more than {MAX_OPERATORS} operators in one query"
        )));
    }
    Ok(())
}

/// The direct sub-expressions of `e`.
pub fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => {
            let mut v = vec![a.expr.as_ref()];
            v.extend(a.param.as_deref());
            v
        }
        Expr::Unary(u) => vec![u.expr.as_ref()],
        Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
        Expr::Paren(p) => vec![p.expr.as_ref()],
        Expr::Subquery(s) => vec![s.expr.as_ref()],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

/// The depth of the syntax tree, measured with an explicit stack (no recursion).
pub fn depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        stack.extend(children(e).into_iter().map(|c| (c, d + 1)));
    }
    max
}

/// Refuses a syntax tree deeper than [`MAX_DEPTH`].
pub fn check_depth(e: &Expr) -> Result<(), QueryError> {
    let d = depth(e);
    if d > MAX_DEPTH {
        return Err(bad(format!(
            "expression is {d} levels deep, the limit is {MAX_DEPTH}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_comments_and_matchers_do_not_count() {
        let inner = "(".repeat(300);
        assert!(
            check_text(&format!(
                "label_replace(up, \"a\", \"{inner}\", \"b\", \"c\")"
            ))
            .is_ok()
        );
        assert!(check_text(&format!("up # {inner}\n")).is_ok());
        let matchers = (0..3000)
            .map(|i| format!("a{i}!=\"x\""))
            .collect::<Vec<_>>()
            .join(",");
        assert!(check_text(&format!("up{{{matchers}}}")).is_ok());
        assert!(check_text(&format!("up{{a=\"{}\"}}", "+".repeat(5000))).is_ok());
    }

    #[test]
    fn nesting_operators_and_length_are_bounded() {
        assert!(check_text(&format!("{}1{}", "(".repeat(256), ")".repeat(256))).is_ok());
        let e = check_text(&format!("{}1{}", "(".repeat(257), ")".repeat(257))).unwrap_err();
        assert!(e.to_string().contains("nest deeper than 256"), "{e}");
        // Unbalanced input is refused just the same (it never reaches the parser).
        assert!(check_text(&"(".repeat(40_000)).is_err());
        assert!(check_text(&"[".repeat(40_000)).is_err());
        assert!(check_text(&vec!["1"; 1000].join("+")).is_ok());
        let e = check_text(&vec!["1"; 3000].join("+")).unwrap_err();
        assert!(e.to_string().contains("operators"), "{e}");
        let e = check_text(&vec!["up"; 3000].join(" or ")).unwrap_err();
        assert!(e.to_string().contains("operators"), "{e}");
        assert!(check_text(&" ".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    #[test]
    fn depth_is_measured_without_recursion() {
        let e = promql_parser::parser::parse(&vec!["1"; 50].join("+")).unwrap();
        let err =
            parse("m offset 1111111111111111111111111111111111111").expect_err("out of range");
        assert!(err.to_string().contains("out of range"), "{err}");
        assert_eq!(depth(&e), 50);
        let e = promql_parser::parser::parse("sum(rate(x[5m]))").unwrap();
        assert_eq!(depth(&e), 3);
    }
}
