//! The template functions that format numbers and text: `title` and Prometheus' humanize
//! family (Go's `%.4g` included).

use std::fmt::Write;

use super::{go_exponent, go_float};

pub(super) fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// Go's `%.4g`, as Prometheus' humanize functions format.
pub(super) fn go_g4(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..4).contains(&exp) {
        let s = format!("{:.3e}", v);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        go_exponent(&format!("{}e{e}", trim_zeros(m)))
    } else {
        let decimals = (3 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

pub(super) fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

pub(super) fn humanize(v: f64, base: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g4(v);
    }
    if base == 1000.0 && v.abs() < 1.0 {
        const SMALL: [&str; 8] = ["", "m", "u", "n", "p", "f", "a", "z"];
        let mut v = v;
        let mut i = 0;
        while v.abs() < 1.0 && i < SMALL.len() - 1 {
            v *= 1000.0;
            i += 1;
        }
        return format!("{}{}", go_g4(v), SMALL[i]);
    }
    let big: &[&str] = if base == 1024.0 {
        &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]
    } else {
        &["", "k", "M", "G", "T", "P", "E", "Z", "Y"]
    };
    let mut v = v;
    let mut i = 0;
    while v.abs() >= base && i < big.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{}{}", go_g4(v), big[i])
}

pub(super) fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g4(v);
    }
    if v.abs() < 1.0 {
        return if v == 0.0 {
            "0s".into()
        } else {
            let (v, unit) = if v.abs() >= 1e-3 {
                (v * 1e3, "ms")
            } else if v.abs() >= 1e-6 {
                (v * 1e6, "us")
            } else {
                (v * 1e9, "ns")
            };
            format!("{}{unit}", go_g4(v))
        };
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let secs = v.abs();
    let whole = secs as u64;
    let (d, h, m, s) = (
        whole / 86400,
        whole / 3600 % 24,
        whole / 60 % 60,
        secs - (whole / 60 * 60) as f64,
    );
    let mut out = sign.to_string();
    if d > 0 {
        let _ = write!(out, "{d}d {h}h {m}m {}s", s as u64);
    } else if h > 0 {
        let _ = write!(out, "{h}h {m}m {}s", s as u64);
    } else if m > 0 {
        let _ = write!(out, "{m}m {}s", s as u64);
    } else {
        let _ = write!(out, "{}s", go_g4(s));
    }
    out
}
