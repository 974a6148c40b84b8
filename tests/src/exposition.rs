//! The Prometheus text exposition format as tests compare it: families with their type and
//! their series, empty label values dropped as Prometheus stores them.

use std::collections::BTreeMap;

/// One exposition family: its `# TYPE` and its series (labels without empty values, as
/// Prometheus stores them) with their values.
#[derive(Default, Debug)]
pub struct Family {
    /// The `# TYPE`.
    pub kind: String,
    /// Series by label set.
    pub series: BTreeMap<BTreeMap<String, String>, f64>,
}

/// Parses text exposition into families, dropping empty label values like Prometheus does.
///
/// # Panics
/// On malformed text: a test helper for output known to be exposition (node_exporter's, the
/// agent's `collect`).
pub fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split(' ');
            let (name, kind) = (f.next().expect("exposition text"), f.next().unwrap_or(""));
            out.entry(name.to_string()).or_default().kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("exposition text");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').expect("exposition text");
                let key = rest[..eq].trim_start_matches(',').to_string();
                let bytes = rest.as_bytes();
                let mut i = eq + 2;
                let mut value = String::new();
                while bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        value.push(match bytes[i + 1] {
                            b'n' => '\n',
                            c => c as char,
                        });
                        i += 2;
                    } else {
                        let c = rest[i..].chars().next().expect("exposition text");
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
                if !value.is_empty() {
                    labels.insert(key, value);
                }
                rest = rest[i + 1..].trim_start_matches(',');
            }
        }
        let v = rest.trim().split(' ').next().expect("exposition text");
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => v.parse().expect("exposition text"),
        };
        out.entry(line[..name_end].to_string())
            .or_default()
            .series
            .insert(labels, v);
    }
    out
}
