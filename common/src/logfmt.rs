//! logfmt (`level=info msg="a b" took=5ms`), as the agent's log parser and LogQL's `| logfmt`
//! read it: space-separated `key=value` pairs, values bare or double-quoted with backslash
//! escapes; a bare key is a pair with an empty value.

/// Parses `k=v k2="v 2"`; `None` when the line is not logfmt.
pub fn parse(s: &str) -> Option<Vec<(String, String)>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &s[ks..i];
        if key.is_empty() {
            if i < b.len() {
                return None;
            }
            break;
        }
        if i >= b.len() || b[i] == b' ' {
            out.push((key.to_string(), String::new()));
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    // The escaped character whole: it may be several bytes (found by
                    // fuzzing: `"\é"` split a character and panicked).
                    b'\\' if i + 1 < b.len() => {
                        let ch = s[i + 1..].chars().next()?;
                        val.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    _ => {
                        let ch = s[i..].chars().next()?;
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return None;
            }
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            val.push_str(&s[vs..i]);
        }
        out.push((key.to_string(), val));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_multibyte_character_stays_whole() {
        let p = parse("a=\"x\\é\\\u{1F600}y\" b").expect("logfmt");
        assert_eq!(p[0], ("a".to_string(), "xé\u{1F600}y".to_string()));
        assert_eq!(p[1], ("b".to_string(), String::new()));
    }

    #[test]
    fn pairs_quotes_and_bare_keys() {
        let p = parse(r#"level=info msg="a \"b\" c" flag took=5ms"#).expect("logfmt");
        assert_eq!(
            p,
            vec![
                ("level".to_string(), "info".to_string()),
                ("msg".to_string(), "a \"b\" c".to_string()),
                ("flag".to_string(), String::new()),
                ("took".to_string(), "5ms".to_string()),
            ]
        );
        assert_eq!(parse(r#"msg="unterminated"#), None);
        assert_eq!(parse("=x"), None);
        assert_eq!(
            parse("ünï=cödé"),
            Some(vec![("ünï".to_string(), "cödé".to_string())])
        );
    }
}
