//! Go's `strconv.FormatFloat` for float64 (`b e E f g G x X`, shortest or with a
//! precision), the formatting under `fmt`'s float verbs and `{{ $value }}`. Digits come from
//! Rust's exact formatting; Go's choices around them (the exponent's sign and two digits,
//! `%g`'s switch to the exponent form, ties between shortest candidates) are Go 1.19's.

/// `strconv.FormatFloat(v, fmt, prec, 64)` for `b e E f g G x X` (`prec` < 0: shortest).
pub(crate) fn format_float(v: f64, fmt: u8, prec: i64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let neg = v.is_sign_negative();
    if fmt == b'x' || fmt == b'X' {
        return hex_float(v, fmt, prec);
    }
    if fmt == b'b' {
        return binary_float(v);
    }
    let a = v.abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if fmt == b'f' && prec >= 0 {
        out.push_str(&format!("{a:.*}", prec as usize));
        return out;
    }
    let shortest = prec < 0;
    let mut prec = prec;
    let (digits, dp) = if shortest {
        // Rust's shortest digits, then the value correctly rounded to that many: where the
        // value lies exactly between two shortest candidates, Go (Ryu) takes the even one.
        let mut d = decimal(&format!("{a:e}"));
        if d.0.len() > 1 {
            d = decimal(&format!("{a:.*e}", d.0.len() - 1));
        }
        prec = match fmt {
            b'e' | b'E' => d.0.len().saturating_sub(1) as i64,
            b'f' => (d.0.len() as i64 - d.1).max(0),
            _ => d.0.len() as i64,
        };
        d
    } else {
        let n = match fmt {
            b'e' | b'E' => prec + 1,
            _ => {
                if prec == 0 {
                    prec = 1;
                }
                prec
            }
        };
        decimal(&format!("{a:.*e}", (n - 1).max(0) as usize))
    };
    let nd = digits.len() as i64;
    match fmt {
        b'e' | b'E' => fmt_e(&mut out, &digits, dp, prec, fmt),
        b'f' => fmt_f(&mut out, &digits, dp, prec),
        _ => {
            let mut eprec = prec;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                let p = prec.min(nd);
                fmt_e(
                    &mut out,
                    &digits,
                    dp,
                    p - 1,
                    if fmt == b'G' { b'E' } else { b'e' },
                );
            } else {
                let p = if prec > dp { nd } else { prec };
                fmt_f(&mut out, &digits, dp, (p - dp).max(0));
            }
        }
    }
    out
}

/// The significant digits (trailing zeros trimmed; none for zero) and the decimal point's
/// position of Rust's `{:e}` text.
fn decimal(e: &str) -> (Vec<u8>, i64) {
    let (m, x) = e.split_once('e').unwrap_or((e, "0"));
    let exp: i64 = x.parse().unwrap_or(0);
    let mut digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return (digits, 0);
    }
    (digits, exp + 1)
}

fn fmt_e(out: &mut String, d: &[u8], dp: i64, prec: i64, fmt: u8) {
    out.push(d.first().map_or('0', |c| *c as char));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as usize {
            out.push(d.get(i).map_or('0', |c| *c as char));
        }
    }
    out.push(fmt as char);
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    out.push_str(&exp.to_string());
}

fn fmt_f(out: &mut String, d: &[u8], dp: i64, prec: i64) {
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(d.get(i).map_or('0', |c| *c as char));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec {
            let j = dp + i;
            let c = if j >= 0 { d.get(j as usize) } else { None };
            out.push(c.map_or('0', |c| *c as char));
        }
    }
}

/// A finite float's sign, its 53-bit mantissa (the implicit bit set unless subnormal) and
/// its binary exponent for a mantissa read as 1.xxx, as Go's genericFtoa splits it.
fn parts(v: f64) -> (bool, u64, i64) {
    let bits = v.to_bits();
    let mut exp = ((bits >> 52) & 0x7ff) as i64;
    let mut mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        exp += 1;
    } else {
        mant |= 1u64 << 52;
    }
    (bits >> 63 != 0, mant, exp - 1023)
}

/// `%b`: the mantissa and binary exponent in decimal, `-123p-45`.
fn binary_float(v: f64) -> String {
    let (neg, mant, exp) = parts(v);
    let exp = exp - 52;
    let sign = if neg { "-" } else { "" };
    let esign = if exp >= 0 { "+" } else { "" };
    format!("{sign}{mant}p{esign}{exp}")
}

/// `%x`: `-0x1.yyyyp±dd`, the mantissa in hex, the binary exponent in decimal.
fn hex_float(v: f64, fmt: u8, prec: i64) -> String {
    let (neg, mut mant, mut exp) = parts(v);
    if mant == 0 {
        exp = 0;
    }
    mant <<= 60 - 52;
    while mant != 0 && mant & (1 << 60) == 0 {
        mant <<= 1;
        exp -= 1;
    }
    if (0..15).contains(&prec) {
        let shift = (prec * 4) as u32;
        let extra = (mant << shift) & ((1u64 << 60) - 1);
        mant >>= 60 - shift;
        if extra | (mant & 1) > 1 << 59 {
            mant += 1;
        }
        mant <<= 60 - shift;
        if mant & (1 << 61) != 0 {
            mant >>= 1;
            exp += 1;
        }
    }
    let hex: &[u8] = if fmt == b'X' {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push('0');
    out.push(fmt as char);
    out.push((b'0' + ((mant >> 60) & 1) as u8) as char);
    mant <<= 4;
    if prec < 0 && mant != 0 {
        out.push('.');
        while mant != 0 {
            out.push(hex[((mant >> 60) & 15) as usize] as char);
            mant <<= 4;
        }
    } else if prec > 0 {
        out.push('.');
        for _ in 0..prec {
            out.push(hex[((mant >> 60) & 15) as usize] as char);
            mant <<= 4;
        }
    }
    out.push(if fmt == b'X' { 'P' } else { 'p' });
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    out.push_str(&exp.to_string());
    out
}

/// Go's `%v` of a float64.
pub(crate) fn go_float(v: f64) -> String {
    format_float(v, b'g', -1)
}
