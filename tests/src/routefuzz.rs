//! Random Alertmanager routing files checked against Alertmanager 0.25's own tool: `amtool
//! check-config` must accept exactly the files Telltale accepts, and for the files both load,
//! `amtool config routes test` must send random label sets to the receivers Telltale's
//! routing tree sends them to. The files mix every way of writing a matcher — `match`,
//! `match_re`, `matchers` lists with and without braces, quoted and bare values, Alertmanager's
//! escapes (`\"`, `\\`, `\n`, and a backslash before anything else being itself), names with
//! colons, trailing commas — regexes in Go's syntax where Rust's differs (`[[0-9]`, `\d` on
//! `٣`, `&&` in a class, octal, `\Q…\E`), `continue`, inheritance of receivers and
//! `group_by`, and now and then a mistake (an undefined receiver, a bad label name, a bad
//! regex, a matcher on the root).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use telltale_aggregator::alerting::config::RoutingConfig;
use telltale_common::model::Labels;

use crate::compliance::Rng;
use crate::hostile::Pick;

/// Label names: the first five are valid everywhere; `x:y` only in `matchers`.
const NAMES: &[&str] = &["a", "b", "severity", "team", "env", "x:y"];

/// Label values, with the characters the matcher syntax treats specially.
const VALUES: &[&str] = &[
    "a",
    "b",
    "ab",
    "api",
    "db",
    "crit",
    "critical",
    "warning",
    "1",
    "12",
    "٣",
    "é",
    "A",
    "x y",
    "a,b",
    "q\"t",
    "back\\slash",
    "a\\tb",
    "new\nline",
    "{x}",
    "[",
    "a.b",
];

/// Regex pieces: Go syntax that Rust reads differently, and common patterns.
const REGEXES: &[&str] = &[
    ".*",
    ".+",
    "a|b",
    "ab|db",
    "[a-c]+",
    r"\d+",
    r"\d",
    r"\w+",
    "[[:alpha:]]+",
    "(?i)API|DB",
    "crit.*",
    "[[0-9]+",
    "[[]",
    "[a&&b]+",
    r"\141b",
    r"\Qa.b\E",
    "a{,3}",
    "[^a]*",
    r"\pL+",
    r"(?s:new.line)",
    "new.line",
    r"\{x\}",
    "{x}",
    r"x\s?y",
    "",
];

/// Regexes Go refuses (some of which Rust reads).
const BAD_REGEXES: &[&str] = &[
    "(", "a**", "(?x)a", "[z-a]", r"\8", r"\u0061", "(?<n>a)", "x{1001}",
];

/// A YAML double-quoted scalar (JSON's escapes, which YAML shares).
fn yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A matcher value as Alertmanager's parser reads it back: quoted with its escapes, or bare
/// when nothing in it needs quoting.
fn matcher_value(r: &mut Rng, v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_alphanumeric() || ".*+|[]()?^$:-_ ".contains(c))
        && !v.starts_with(' ')
        && !v.ends_with(' ');
    if plain && r.chance(0.4) {
        return v.to_string();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str(if r.chance(0.5) { "\\\\" } else { "\\" }),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn regex(r: &mut Rng) -> String {
    if r.chance(0.01) {
        return r.pick(BAD_REGEXES).to_string();
    }
    let mut re = r.pick(REGEXES).to_string();
    if r.chance(0.2) {
        re = format!("{re}|{}", r.pick(REGEXES));
    }
    re
}

/// One matcher in Alertmanager's text syntax.
fn matcher(r: &mut Rng) -> String {
    let name = if r.chance(0.005) {
        "1a".to_string()
    } else {
        r.pick(NAMES).to_string()
    };
    let op = *r.pick(&["=", "!=", "=~", "!~", "=", "=~"]);
    let value = if op.ends_with('~') {
        let re = regex(r);
        matcher_value(r, &re)
    } else {
        let v = r.pick(VALUES).to_string();
        matcher_value(r, &v)
    };
    let sp = |r: &mut Rng| if r.chance(0.2) { " " } else { "" };
    let (s1, s2, s3) = (sp(r), sp(r), sp(r));
    format!("{s1}{name}{s2}{op}{s3}{value}")
}

/// One entry of a `matchers` list: one matcher, or several in Alertmanager's list forms.
fn matcher_line(r: &mut Rng) -> String {
    let n = 1 + r.below(2);
    let ms: Vec<String> = (0..n).map(|_| matcher(r)).collect();
    let sep = *r.pick(&[",", ", ", " , "]);
    let mut body = ms.join(sep);
    if r.chance(0.1) {
        body.push(',');
    }
    if r.chance(0.005) {
        body = body.replacen(sep, ",,", 1);
    }
    if r.chance(0.3) {
        format!("{{{body}}}")
    } else {
        body
    }
}

/// Distinct names for a `match` or `match_re` map (a repeated key is a YAML error in both).
fn legacy_names(r: &mut Rng, n: usize) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    while names.len() < n {
        let name = if r.chance(0.01) {
            "x:y".to_string()
        } else {
            NAMES[r.below(5)].to_string()
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A route (not the root) at `depth`, written into `out` with `indent`.
fn route(r: &mut Rng, out: &mut String, indent: usize, depth: usize) {
    let pad = " ".repeat(indent);
    let mut lines: Vec<String> = Vec::new();
    let mut line = |_: &mut String, text: String| lines.push(text);
    match r.below(20) {
        0 => line(out, "receiver: ''".into()),
        1..=5 => {}
        _ => line(out, format!("receiver: r{}", r.below(5))),
    }
    if r.chance(0.25) {
        let n = 1 + r.below(2);
        let pairs: Vec<String> = legacy_names(r, n)
            .into_iter()
            .map(|name| {
                let v = r.pick(VALUES).to_string();
                format!("{name}: {}", yaml(&v))
            })
            .collect();
        line(out, format!("match: {{{}}}", pairs.join(", ")));
    }
    if r.chance(0.25) {
        let n = 1 + r.below(2);
        let pairs: Vec<String> = legacy_names(r, n)
            .into_iter()
            .map(|name| {
                let re = regex(r);
                format!("{name}: {}", yaml(&re))
            })
            .collect();
        line(out, format!("match_re: {{{}}}", pairs.join(", ")));
    }
    if r.chance(0.6) {
        let lines: Vec<String> = (0..1 + r.below(2))
            .map(|_| {
                let m = matcher_line(r);
                yaml(&m)
            })
            .collect();
        line(out, format!("matchers: [{}]", lines.join(", ")));
    }
    if r.chance(0.3) {
        line(out, "continue: true".into());
    }
    if r.chance(0.1) {
        let g = if r.chance(0.1) {
            *r.pick(&["[a, a]", "['...', a]", "['1a']"])
        } else {
            *r.pick(&["[]", "['...']", "[a]", "[a, b]"])
        };
        line(out, format!("group_by: {g}"));
    }
    if lines.is_empty() {
        lines.push("receiver: r1".into());
    }
    for (i, l) in lines.iter().enumerate() {
        let lead = if i == 0 { "- " } else { "  " };
        let _ = writeln!(out, "{pad}{lead}{l}");
    }
    if depth < 3 && r.chance(0.5) {
        let _ = writeln!(out, "{pad}  routes:");
        for _ in 0..1 + r.below(3) {
            route(r, out, indent + 4, depth + 1);
        }
    }
}

/// A generated routing file.
pub struct Case {
    /// The file (YAML).
    pub yaml: String,
}

/// What one file's run found.
#[derive(Default)]
pub struct Outcome {
    /// Whether both loaded it.
    pub loaded: bool,
    /// Label sets routed by both.
    pub routed: usize,
    /// Where they disagreed.
    pub disagreement: Option<String>,
}

impl Case {
    /// A random routing file.
    pub fn random(r: &mut Rng) -> Case {
        let mut out = String::from("route:\n");
        if !r.chance(0.02) {
            out.push_str("  receiver: r0\n");
        }
        if r.chance(0.3) {
            let g = *r.pick(&["[alertname]", "['...']", "[a, severity]"]);
            let _ = writeln!(out, "  group_by: {g}");
        }
        if r.chance(0.02) {
            out.push_str("  matchers: ['a=b']\n");
        }
        out.push_str("  routes:\n");
        for _ in 0..1 + r.below(4) {
            route(r, &mut out, 4, 1);
        }
        out.push_str("receivers:\n");
        let n = if r.chance(0.03) { 4 } else { 5 };
        for i in 0..n {
            let _ = writeln!(out, "  - name: r{i}");
        }
        Case { yaml: out }
    }

    /// Loads the file in both and routes `label_sets` random label sets through both.
    pub fn check(
        &self,
        dir: &Path,
        amtool: &Path,
        r: &mut Rng,
        label_sets: usize,
    ) -> std::io::Result<Outcome> {
        let file = dir.join("routes.yml");
        std::fs::write(&file, &self.yaml)?;
        let theirs = Command::new(amtool)
            .arg("check-config")
            .arg(&file)
            .output()?;
        let ours = RoutingConfig::parse(&self.yaml);
        let mut o = Outcome::default();
        if theirs.status.success() != ours.is_ok() {
            o.disagreement = Some(format!(
                "amtool check-config: {}; Telltale: {}\n{}{}",
                if theirs.status.success() {
                    "loads"
                } else {
                    "refuses"
                },
                match &ours {
                    Ok(_) => "loads".to_string(),
                    Err(e) => format!("refuses: {e}"),
                },
                String::from_utf8_lossy(&theirs.stdout),
                String::from_utf8_lossy(&theirs.stderr),
            ));
            return Ok(o);
        }
        let Ok(cfg) = ours else {
            return Ok(o);
        };
        o.loaded = true;
        for _ in 0..label_sets {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for name in NAMES {
                if r.chance(0.5) {
                    pairs.push((name.to_string(), r.pick(VALUES).to_string()));
                }
            }
            let args: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            let out = Command::new(amtool)
                .args(["config", "routes", "test"])
                .arg(format!("--config.file={}", file.display()))
                .args(&args)
                .output()?;
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let labels = Labels::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let ours: Vec<String> = cfg
                .route
                .matching(&labels)
                .into_iter()
                .map(|x| x.receiver.clone())
                .collect();
            o.routed += 1;
            if ours.join(",") != theirs {
                o.disagreement = Some(format!(
                    "labels {pairs:?}: amtool {theirs:?} ({}), Telltale {:?}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    ours.join(",")
                ));
                return Ok(o);
            }
        }
        Ok(o)
    }
}
