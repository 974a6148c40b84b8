//! Sample values as Prometheus writes them: in query results ([`write_sample`]: an exponent
//! at the extremes) and in labels PromQL makes from values (`count_values`: [`write_value`],
//! always positional).

/// Formats a value as Prometheus does in a label (`NaN`, `+Inf`, `-Inf`, shortest decimal
/// otherwise, never an exponent: Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// Writes a value as [`format_value`] formats it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 && !(v == 0.0 && v.is_sign_negative()) {
        // Integral values (counters, most gauges): the same digits `Display` prints, without
        // the float formatting machinery.
        push_int(out, v as i64);
    } else {
        push_shortest(out, v);
    }
}

/// Appends a finite `v` as the shortest digits that read back as `v`, positional, never an
/// exponent (as Go's `FormatFloat(v, 'f', -1, 64)` and Rust's `Display` write it), from
/// Ryū's digits, which cost a third of the standard formatter's (a range query's answer is
/// mostly these). Where two shortest forms are equally near `v` (a value exactly halfway),
/// Ryū's last digit is the even one and `Display`'s may be the other: both read back as `v`.
fn push_shortest(out: &mut String, v: f64) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v);
    if !s.contains('e') {
        // Positional already; Ryū writes integral values with a ".0" that Display does not.
        out.push_str(s.strip_suffix(".0").unwrap_or(s));
        return;
    }
    let (sign, digits, point) = shortest_digits(s);
    out.push_str(sign);
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..-point {
            out.push('0');
        }
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        for _ in 0..(point as usize - digits.len()) {
            out.push('0');
        }
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
}

/// Ryū's text of a value split into its sign, its significant digits and where the decimal
/// point goes among them (`1.5e-7` → `("", "15", -6)`).
fn shortest_digits(s: &str) -> (&'static str, String, i32) {
    let (mantissa, exp) = match s.find('e') {
        Some(e) => (&s[..e], s[e + 1..].parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = [int, frac].concat();
    let mut point = int.len() as i32 + exp;
    // "0.0001" (positional) and "1.0" carry zeros that are not significant digits.
    let lead = digits.len() - digits.trim_start_matches('0').len();
    if lead == digits.len() {
        return (sign, "0".into(), 1);
    }
    digits.drain(..lead);
    point -= lead as i32;
    digits.truncate(digits.trim_end_matches('0').len());
    (sign, digits, point)
}

/// Writes a sample value as Prometheus' HTTP API writes it (its `jsonutil.MarshalFloat`):
/// positional like [`write_value`], except below 1e-6 and from 1e21 on in magnitude, where it
/// is Go's shortest exponent form — `1e-07`, `1.2345678901234569e+23`, `5e-324`.
pub fn write_sample(out: &mut String, v: f64) {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 || (1e-6..1e21).contains(&a) {
        return write_value(out, v);
    }
    push_exponent(out, v);
}

/// Appends a finite `v` in Go's shortest exponent form (`1e-07`, `1.25e+19`).
fn push_exponent(out: &mut String, v: f64) {
    let mut buf = ryu::Buffer::new();
    let (sign, digits, point) = shortest_digits(buf.format_finite(v));
    out.push_str(sign);
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    let e = point - 1;
    out.push_str(if e < 0 { "e-" } else { "e+" });
    if e.abs() < 10 {
        out.push('0');
    }
    push_int(out, i64::from(e.abs()));
}

/// A value as Go's `%v` writes it in an error message (`strconv`'s shortest `'g'`: the
/// exponent form below 1e-4 and from 1e6 on in magnitude, `NaN`, `+Inf`): Prometheus' "Scalar
/// value 1e+19 overflows int64" (its answers for values from 9.3e18 to 1.2e23 are the
/// promql tests'; the bounds at 1e-4 and 1e6 are strconv's rule, no message here reaches them).
pub fn format_go_v(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 || (1e-4..1e6).contains(&a) {
        return format_value(v);
    }
    let mut s = String::new();
    push_exponent(&mut s, v);
    s
}

/// [`write_sample`] into a new string.
pub fn format_sample(v: f64) -> String {
    let mut s = String::new();
    write_sample(&mut s, v);
    s
}

/// Appends an integer in decimal.
pub fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut a = n.unsigned_abs();
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (a % 10) as u8;
        a /= 10;
        if a == 0 {
            break;
        }
    }
    for b in &buf[i..] {
        out.push(char::from(*b));
    }
}

/// A query as Prometheus' formatter (`/api/v1/format_query`) writes it. promql-parser's
/// printer is Prometheus' with two differences this evens out on a copy of the tree: an
/// `on()`/`ignoring()` next to a scalar is dropped by Prometheus' parser (so not printed),
/// and numbers are written as Go's `%v` writes them (`1e+12`, `+Inf`). Left alone:
/// Prometheus does not indent a subquery that is a split call's argument, and keeps a `\xff`
/// escape as the byte it stands for (promql-parser reads it as U+00FF).
pub fn format_query(e: &promql_parser::parser::Expr) -> String {
    let mut e = e.clone();
    as_prometheus_prints(&mut e);
    e.prettify()
}

fn as_prometheus_prints(e: &mut promql_parser::parser::Expr) {
    use promql_parser::label::Matchers;
    use promql_parser::parser::value::ValueType;
    use promql_parser::parser::{Expr, VectorSelector};
    match e {
        Expr::Binary(b) => {
            // Typed before the numbers in it become selectors.
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            as_prometheus_prints(&mut b.lhs);
            as_prometheus_prints(&mut b.rhs);
            if let (false, Some(m)) = (vectors, b.modifier.as_mut()) {
                m.matching = None;
            }
        }
        // A number as Go's `%v` writes it (`1e+12`, `+Inf`), printed through a selector of
        // that name: the same width, so lines split where Prometheus splits them.
        Expr::NumberLiteral(n) => {
            let shown = format_go_v(n.val);
            *e = Expr::VectorSelector(VectorSelector::new(Some(shown), Matchers::empty()));
        }
        Expr::Aggregate(a) => {
            as_prometheus_prints(&mut a.expr);
            if let Some(p) = a.param.as_mut() {
                as_prometheus_prints(p);
            }
        }
        Expr::Unary(u) => as_prometheus_prints(&mut u.expr),
        Expr::Paren(p) => as_prometheus_prints(&mut p.expr),
        Expr::Subquery(s) => as_prometheus_prints(&mut s.expr),
        Expr::Call(c) => {
            for a in c.args.args.iter_mut() {
                as_prometheus_prints(a);
            }
        }
        Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `/api/v1/format_query` as Prometheus 2.42 answered these (a probe of the 539
    /// compliance queries and 3000 fuzzer queries found 3529 of 3539 alike; the rest are the
    /// two differences `format_query` names).
    #[test]
    fn queries_are_formatted_as_prometheus_formats_them() {
        let f = |q: &str| format_query(&promql_parser::parser::parse(q).expect(q));
        assert_eq!(f("sum(x)by(y)"), "sum by (y) (x)");
        assert_eq!(
            f("(delta(process_cpu_seconds_total[5m])) == on() (0.76)"),
            "(delta(process_cpu_seconds_total[5m])) == (0.76)"
        );
        assert_eq!(f("a + on() b"), "a + on () b");
        assert_eq!(
            f("clamp(demo_memory_usage_bytes, 0, 1000000000000)"),
            "clamp(demo_memory_usage_bytes, 0, 1e+12)"
        );
        assert_eq!(
            f("-(quantile_over_time(Inf, queue_depth{job=\"api\"}[15s]))"),
            "-(quantile_over_time(+Inf, queue_depth{job=\"api\"}[15s]))"
        );
        assert_eq!(
            f(
                "(deriv(((pi()) ^ on() (queue_depth))[10m:] offset 6m)) + (predict_linear(process_cpu_seconds_total[10m], 0))"
            ),
            "  (deriv(((pi()) ^ (queue_depth))[10m:] offset 6m))\n+\n  (predict_linear(process_cpu_seconds_total[10m], 0))"
        );
    }

    fn display(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            format!("{v}")
        }
    }

    /// `format_value(v)` is `Display`'s text, or (a value halfway between two shortest forms)
    /// as short, positional, and read back as `v`.
    fn check(v: f64) -> Result<(), String> {
        let (got, want) = (format_value(v), display(v));
        if got == want {
            return Ok(());
        }
        let back: f64 = got.parse().map_err(|e| format!("{got}: {e}"))?;
        if back.to_bits() == v.to_bits() && got.len() == want.len() && !got.contains('e') {
            Ok(())
        } else {
            Err(format!("{v:e}: {got} (Display: {want})"))
        }
    }

    #[test]
    fn values_read_as_display_prints_them_at_the_edges() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            0.30000000000000004,
            1e-7,
            -1.2345e-7,
            5e-324,
            f64::MIN_POSITIVE,
            9.0e15,
            1e16,
            1.5e16,
            123456789012345680.0,
            1e21,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            0.083_424_769_873_455_23,
            // Exactly halfway between two shortest forms (…27.62 and …27.63).
            f64::from_bits(14_040_953_648_158_294_504),
        ] {
            check(v).unwrap();
        }
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(-1.5e16), "-15000000000000000");
        assert_eq!(format_value(0.25), "0.25");
    }

    /// Values as Prometheus 2.42's HTTP API wrote them (read off its answers to
    /// `vector(...)` and `exp(...)` queries).
    #[test]
    fn samples_are_written_as_prometheus_api_writes_them() {
        for (v, want) in [
            (1e-7, "1e-07"),
            (0.000001, "0.000001"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345678901234.0, "1.2345678901234569e+23"),
            (-1.5e-9, "-1.5e-09"),
            (5e-324, "5e-324"),
            (8.133182074637612e275, "8.133182074637612e+275"),
            (1.270983941812912e308, "1.270983941812912e+308"),
            (3.307553003638408e-308, "3.307553003638408e-308"),
            (4.2e-322, "4.2e-322"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.5, "0.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_sample(v), want, "{v:e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn any_value_reads_as_display_prints_it(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assert!(check(v).is_ok(), "{:?}", check(v));
        }

        /// At every magnitude a sample reads back as the value, positional where Prometheus
        /// is, with Go's exponent (a sign, at least two digits) where it is not.
        #[test]
        fn samples_of_every_magnitude_read_back(m in -1.0f64..1.0, e in -330i32..310) {
            let v = m * 10f64.powi(e);
            prop_assume!(v.is_finite());
            let s = format_sample(v);
            let back: f64 = s.parse().map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", s);
            let a = v.abs();
            if a != 0.0 && !(1e-6..1e21).contains(&a) {
                let (_, exp) = s.split_once('e').ok_or_else(|| TestCaseError::fail(s.clone()))?;
                prop_assert!(exp.len() >= 3 && (exp.starts_with('+') || exp.starts_with('-')), "{}", s);
            } else {
                prop_assert_eq!(s, format_value(v));
            }
        }

        #[test]
        fn values_of_every_magnitude_read_as_display_prints_them(m in -1.0f64..1.0, e in -330i32..310) {
            let v = m * 10f64.powi(e);
            prop_assert!(check(v).is_ok(), "{:?}", check(v));
        }
    }
}
