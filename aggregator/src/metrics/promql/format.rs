//! Sample values as Prometheus writes them: in query results, in labels PromQL makes from
//! values (`count_values`, `label_replace` of a value) and in the exposition format.

/// Formats a value as Prometheus does (`NaN`, `+Inf`, `-Inf`, shortest decimal otherwise).
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// Writes a sample value as Prometheus does (`NaN`, `+Inf`, `-Inf`, shortest decimal).
pub fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write;
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
        let _ = write!(out, "{v}");
    }
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
