//! The syntax tree as Prometheus' engine sees it, where promql-parser's differs.
//!
//! - **Unary `+`.** promql-parser drops it (`+x` parses as `x`); Prometheus keeps a unary
//!   expression. The value is the same, but the shape shows in two places: a unary `+` on a
//!   range vector or a string is a type error (`rate(+x[5m])`), and `timestamp(+x)` and
//!   `absent(+x{job="a"})` do not see a selector (the evaluation time; no labels). The text is
//!   lexed with promql-parser's own lexer, and a unary `+` is written as `- -` where the shape
//!   matters: a double negation has the same value and is not a selector either.
//! - **Parentheses around a function's argument.** Prometheus removes them before calling
//!   (`rate((x[5m]))` is `rate(x[5m])`, `absent((x{job="a"}))` names `job="a"`), so they are
//!   removed here, once, instead of in every function that looks at its argument's shape.
//!
//! - **Numbers out of range.** Prometheus reads a number with Go's `strconv`, which refuses
//!   one past the largest double (`1e400`: "value out of range") where promql-parser reads
//!   +Inf, and refuses an `@` time of 2^63 seconds or more, which promql-parser saturates.
//!
//! - **Regular expressions** are Go's (`super::regexes`).
//!
//! `/api/v1/format_query` prints the tree [`super::limits::parse_syntax`] gives, without these
//! changes: the text the user wrote, as Prometheus prints it.

use lrpar::{Lexeme as _, Lexer as _};
use promql_parser::parser::token::{
    T_ADD, T_AT, T_ATAN2, T_BOOL, T_COMMA, T_DIV, T_EQLC, T_GROUP_LEFT, T_GROUP_RIGHT, T_GTE,
    T_GTR, T_IDENTIFIER, T_IGNORING, T_LAND, T_LEFT_PAREN, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_NUMBER, T_ON, T_POW, T_RIGHT_PAREN, T_SUB,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, NumberLiteral};

use super::QueryError;
use super::limits::parse_guarded;

/// Functions whose result depends on whether their argument is a bare selector.
const SHAPE_FUNCTIONS: [&str; 2] = ["timestamp", "absent"];

/// The byte offsets of every unary `+` in `q`, each with whether it begins the argument of
/// one of [`SHAPE_FUNCTIONS`] (after any opening parentheses). `None` when there is none, or
/// the text does not lex (the parser then says why).
fn unary_pluses(q: &str) -> Option<Vec<(usize, bool)>> {
    if !q.contains('+') {
        return None;
    }
    let lexer = promql_parser::parser::lexer(q).ok()?;
    let tokens: Vec<(u16, usize, usize)> = lexer
        .iter()
        .filter_map(|l| l.ok())
        .map(|l| (l.tok_id(), l.span().start(), l.span().end()))
        .collect();
    // For each open parenthesis, the token before it; for the last closed one, that token.
    let mut opened: Vec<Option<u16>> = Vec::new();
    let mut closed_after: Option<u16> = None;
    let mut found = Vec::new();
    for (i, &(tok, start, _)) in tokens.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| tokens[j].0);
        if tok == T_ADD {
            let unary = match prev {
                None => true,
                Some(p) if p == T_RIGHT_PAREN => matches!(
                    closed_after,
                    Some(t) if [T_ON, T_IGNORING, T_GROUP_LEFT, T_GROUP_RIGHT].contains(&t)
                ),
                Some(p) => [
                    T_LEFT_PAREN,
                    T_COMMA,
                    T_ADD,
                    T_SUB,
                    T_MUL,
                    T_DIV,
                    T_MOD,
                    T_POW,
                    T_ATAN2,
                    T_EQLC,
                    T_NEQ,
                    T_LTE,
                    T_LSS,
                    T_GTE,
                    T_GTR,
                    T_LAND,
                    T_LOR,
                    T_LUNLESS,
                    T_BOOL,
                    T_GROUP_LEFT,
                    T_GROUP_RIGHT,
                ]
                .contains(&p),
            };
            if unary {
                // Back over the opening parentheses to the token before the first.
                let mut j = i;
                while j > 0 && tokens[j - 1].0 == T_LEFT_PAREN {
                    j -= 1;
                }
                let shape = j < i
                    && j > 0
                    && tokens[j - 1].0 == T_IDENTIFIER
                    && q.get(tokens[j - 1].1..tokens[j - 1].2)
                        .is_some_and(|name| SHAPE_FUNCTIONS.contains(&name));
                // Spans are byte offsets; the check keeps a surprise from slicing mid-character.
                if q.as_bytes().get(start) == Some(&b'+') {
                    found.push((start, shape));
                }
            }
        }
        if tok == T_LEFT_PAREN {
            opened.push(prev);
        } else if tok == T_RIGHT_PAREN {
            closed_after = opened.pop().flatten();
        }
    }
    (!found.is_empty()).then_some(found)
}

/// Refuses the numbers Prometheus' parser refuses and promql-parser reads (see the module's
/// documentation), with Prometheus' messages.
fn check_numbers(q: &str) -> Result<(), QueryError> {
    // A number past the largest double has an exponent or over 300 digits; an `@` time needs
    // an `@`: most queries need no lexing here.
    let long_digits = || {
        q.as_bytes()
            .split(|b| !b.is_ascii_digit())
            .any(|run| run.len() >= 300)
    };
    if !q.contains(['e', 'E', '@']) && !long_digits() {
        return Ok(());
    }
    let Ok(lexer) = promql_parser::parser::lexer(q) else {
        return Ok(());
    };
    let tokens: Vec<(u16, usize, usize)> = lexer
        .iter()
        .filter_map(|l| l.ok())
        .map(|l| (l.tok_id(), l.span().start(), l.span().end()))
        .collect();
    for (i, &(tok, start, end)) in tokens.iter().enumerate() {
        let Some(text) = q.get(start..end).filter(|_| tok == T_NUMBER) else {
            continue;
        };
        // Hexadecimal integers and `Inf`/`NaN` are the parser's to judge.
        let Ok(v) = text.parse::<f64>() else {
            continue;
        };
        let lower = text.to_ascii_lowercase();
        if v.is_infinite() && !lower.contains("inf") {
            return Err(QueryError::BadData(format!(
                "parse error: error parsing number: strconv.ParseFloat: parsing {text:?}: value out of range"
            )));
        }
        // `@ n`, `@ -n`, `@ +n`.
        let before = |k: usize| i.checked_sub(k).map(|j| tokens[j].0);
        let sign = match before(1) {
            Some(t) if t == T_SUB => Some(-1.0),
            Some(t) if t == T_ADD => Some(1.0),
            _ => None,
        };
        let at = match sign {
            Some(s) if before(2) == Some(T_AT) => Some(s * v),
            None if before(1) == Some(T_AT) => Some(v),
            _ => None,
        };
        // Go converts the seconds to int64 milliseconds only below float64(MaxInt64) (2^63)
        // seconds.
        if let Some(secs) = at.filter(|s| s.abs() >= i64::MAX as f64) {
            return Err(QueryError::BadData(format!(
                "parse error: timestamp out of bounds for @ modifier: {secs:.6}"
            )));
        }
    }
    Ok(())
}

/// `q` with the unary `+` at the offsets `at` written as `- -`.
fn as_double_negation(q: &str, at: impl Iterator<Item = usize>) -> String {
    let mut out = String::with_capacity(q.len() + 8);
    let mut from = 0;
    for i in at {
        out.push_str(&q[from..i]);
        out.push_str(" - - ");
        from = i + 1;
    }
    out.push_str(&q[from..]);
    out
}

/// Refuses a unary operator on a range vector or a string, as Prometheus' parser does
/// (promql-parser lets a subquery through, and never sees a `+`).
fn check_unary(e: &Expr) -> Result<(), QueryError> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        if let Expr::Unary(u) = e {
            let got = match u.expr.value_type() {
                ValueType::Matrix => Some("range vector"),
                ValueType::String => Some("string"),
                ValueType::Scalar | ValueType::Vector => None,
            };
            if let Some(got) = got {
                return Err(QueryError::BadData(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got \"{got}\""
                )));
            }
        }
        stack.extend(super::limits::children(e));
    }
    Ok(())
}

/// Parses `q` as Prometheus' parser would, with the unary-operator type check and Go's
/// regular expressions (`super::regexes`). `for_evaluation` also writes the unary `+` that
/// begin a [`SHAPE_FUNCTIONS`] argument as `- -` (see the module's documentation).
pub fn parse(q: &str, for_evaluation: bool) -> Result<Expr, QueryError> {
    check_numbers(q)?;
    if !q.contains("=~") && !q.contains("!~") {
        return parse_unary(q, for_evaluation);
    }
    // promql-parser compiles regexes with Rust's syntax: only when it refuses the text are
    // they swapped for placeholders (`super::regexes`).
    let (mut e, values) = match parse_unary(q, for_evaluation) {
        Ok(e) => (e, Vec::new()),
        Err(err) => match super::regexes::placeholders(q)? {
            Some((text, values)) => (parse_unary(&text, for_evaluation)?, values),
            None => return Err(err),
        },
    };
    super::regexes::compile_as_go(&mut e, &values)?;
    Ok(e)
}

/// The parse with unary `+` handled (see the module's documentation).
fn parse_unary(q: &str, for_evaluation: bool) -> Result<Expr, QueryError> {
    let Some(pluses) = unary_pluses(q) else {
        let e = parse_guarded(q)?;
        check_unary(&e)?;
        return Ok(e);
    };
    // Every unary `+` as `- -`: the tree has a unary node wherever Prometheus' has one.
    let all = parse_guarded(&as_double_negation(q, pluses.iter().map(|p| p.0)))?;
    check_unary(&all)?;
    let shaped: Vec<usize> = pluses.iter().filter(|p| p.1).map(|p| p.0).collect();
    if !for_evaluation || shaped.is_empty() {
        parse_guarded(q)
    } else {
        parse_guarded(&as_double_negation(q, shaped.into_iter()))
    }
}

/// Removes the parentheses around every function argument, as Prometheus' engine does before
/// calling a function. Uses an explicit stack: the tree may be as deep as
/// [`super::limits::MAX_DEPTH`].
pub fn unwrap_argument_parens(e: &mut Expr) {
    let mut stack: Vec<&mut Expr> = vec![e];
    while let Some(e) = stack.pop() {
        if let Expr::Call(c) = e {
            for a in c.args.args.iter_mut() {
                while matches!(**a, Expr::Paren(_)) {
                    let hole = Expr::NumberLiteral(NumberLiteral { val: 0.0 });
                    if let Expr::Paren(p) = std::mem::replace(&mut **a, hole) {
                        *a = p.expr;
                    }
                }
            }
        }
        match e {
            Expr::Aggregate(a) => {
                stack.push(&mut a.expr);
                if let Some(p) = a.param.as_mut() {
                    stack.push(p);
                }
            }
            Expr::Unary(u) => stack.push(&mut u.expr),
            Expr::Binary(b) => {
                stack.push(&mut b.lhs);
                stack.push(&mut b.rhs);
            }
            Expr::Paren(p) => stack.push(&mut p.expr),
            Expr::Subquery(s) => stack.push(&mut s.expr),
            Expr::Call(c) => stack.extend(c.args.args.iter_mut().map(|a| a.as_mut())),
            Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::VectorSelector(_)
            | Expr::MatrixSelector(_)
            | Expr::Extension(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(q: &str) -> Vec<(usize, bool)> {
        unary_pluses(q).unwrap_or_default()
    }

    #[test]
    fn unary_plus_is_told_from_addition_and_signs() {
        assert_eq!(offsets("+x"), vec![(0, false)]);
        assert_eq!(offsets("x + y"), vec![]);
        assert_eq!(offsets("x + +y"), vec![(4, false)]);
        assert_eq!(offsets("x offset +5m"), vec![]);
        assert_eq!(offsets("x @ +5"), vec![]);
        assert_eq!(offsets("1e+5 + x"), vec![]);
        assert_eq!(offsets("x{a=\"+\"} + y"), vec![]);
        assert_eq!(offsets("x + on(a) +y"), vec![(10, false)]);
        assert_eq!(offsets("x + on(a) group_left(b) +y"), vec![(24, false)]);
        assert_eq!(offsets("x + ignoring(a) group_left +y"), vec![(27, false)]);
        assert_eq!(offsets("(x) + y"), vec![]);
        assert_eq!(offsets("rate(x[5m]) + y"), vec![]);
        assert_eq!(offsets("x > bool +y"), vec![(9, false)]);
        assert_eq!(offsets("sum by (a) (+x)"), vec![(12, false)]);
        assert_eq!(offsets("timestamp(+x)"), vec![(10, true)]);
        assert_eq!(offsets("timestamp(((+x)))"), vec![(12, true)]);
        assert_eq!(offsets("absent(+x)"), vec![(7, true)]);
        assert_eq!(offsets("timestamp(x + +y)"), vec![(14, false)]);
        assert_eq!(offsets("clamp(+x, 1, +2)"), vec![(6, false), (13, false)]);
        // Offsets are bytes, past multi-byte characters too.
        assert_eq!(offsets("x{a=\"é€\"} + +y"), vec![(15, false)]);
        assert_eq!(offsets("timestamp(+x{a=\"é\"})"), vec![(10, true)]);
        let e = format!(
            "{}",
            parse("timestamp(+x{a=\"é\"}) + +y{b=\"€\"}", true).expect("parses")
        );
        assert!(e.starts_with("timestamp(--x{"), "{e}");
    }

    fn eval_tree(q: &str) -> Result<Expr, QueryError> {
        parse(q, true)
    }

    #[test]
    fn a_unary_plus_on_a_range_vector_or_a_string_is_refused() {
        for q in [
            "+x[5m]",
            "rate(+x[5m])",
            "+x[5m:1m]",
            "-x[5m:1m]",
            "+(x)[5m:1m]",
            "+\"a\"",
            "absent_over_time(+x[5m:1m])",
            "sum(+x[1m:])",
            "- x[5m:]",
        ] {
            let e = eval_tree(q).expect_err(q);
            assert!(
                e.to_string().contains("unary expression only allowed"),
                "{q}: {e}"
            );
        }
        for q in ["+x", "+1", "1 + +x", "+-1"] {
            eval_tree(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn numbers_past_a_double_and_at_times_past_int64_are_refused_as_prometheus_does() {
        // Prometheus 2.42's answers (strconv.ParseFloat's range error; the @ bound).
        for (q, why) in [
            ("1e400", "value out of range"),
            ("-1.8e308", "value out of range"),
            ("1.7976931348623159e308", "value out of range"),
            ("topk(1e400, x)", "value out of range"),
            ("x @ 1e400", "value out of range"),
            ("x @ 9.3e18", "timestamp out of bounds"),
            ("x @ -9.3e18", "timestamp out of bounds"),
            ("x[5m:1m] @ +1e19", "timestamp out of bounds"),
            ("x @ 1e20 offset 1m", "timestamp out of bounds"),
        ] {
            let e = eval_tree(q).expect_err(q).to_string();
            assert!(e.contains(why), "{q}: {e}");
            // format_query refuses them too.
            assert!(parse(q, false).is_err(), "{q}");
        }
        // 400 digits, no exponent.
        let long = format!("1{}", "0".repeat(400));
        let e = eval_tree(&long).expect_err("400 digits").to_string();
        assert!(e.contains("value out of range"), "{e}");
        for q in [
            "1e308",
            "1.7976931348623158e308",
            "1e-400",
            "Inf",
            "-inf",
            "x @ 9.2e18",
            "x @ -9.2e18",
            "x offset 1m @ 1e10",
            "x{a=\"1e400\"}",
            "label_replace(x, \"a\", \"1e400\", \"b\", \"\")",
            "123456789012345678901234567890",
            "x # 1e400",
        ] {
            eval_tree(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn a_unary_plus_hides_the_selector_from_timestamp_and_absent_only() {
        let shown = |q: &str| format!("{}", eval_tree(q).expect(q));
        assert_eq!(shown("timestamp(+x)"), "timestamp(--x)");
        assert_eq!(shown("absent((+x{a=\"b\"}))"), "absent((--x{a=\"b\"}))");
        assert_eq!(shown("+x"), "x");
        assert_eq!(shown("sum(+x)"), "sum(x)");
        // The formatter's tree keeps the text's shape.
        assert_eq!(
            format!("{}", parse("timestamp(+x)", false).expect("parses")),
            "timestamp(x)"
        );
    }

    #[test]
    fn parentheses_around_arguments_are_removed_and_nowhere_else() {
        let mut e = eval_tree("rate(((x[5m]))) + (y) + absent((sum((z))))").expect("parses");
        unwrap_argument_parens(&mut e);
        assert_eq!(format!("{e}"), "rate(x[5m]) + (y) + absent(sum((z)))");
    }
}
