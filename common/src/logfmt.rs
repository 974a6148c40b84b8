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
                    b'\\' if i + 1 < b.len() => {
                        val.push(char::from(b[i + 1]));
                        i += 2;
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
