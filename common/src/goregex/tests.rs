use super::*;

/// Go allows larger programs than `regex`'s default 10 MiB (`\pL{1000}`).
const SIZE_LIMIT: usize = 256 << 20;

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect();
    String::from_utf8(bytes).expect("utf-8")
}

/// `testdata/go.txt`: 2 000 random patterns (tokens of every kind Go's parser knows, valid and
/// not) and 54 subjects, recorded from Go 1.19.8's `regexp.Compile("^(?:" + p + ")$")`: its
/// error, or which subjects it matched. Lines: `S subject`, `P pattern`, then `E error` or
/// `M bits` (hex-encoded text). Made by a probe kept outside the repository, as `gofmt.txt`.
struct Case {
    pattern: String,
    outcome: Result<Vec<bool>, String>,
}

fn recorded() -> (Vec<String>, Vec<Case>) {
    let text = include_str!("testdata/go.txt");
    let mut subjects = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        let (tag, rest) = line.split_at(1);
        let rest = rest.trim_start();
        match tag {
            "S" => subjects.push(unhex(rest)),
            "P" => cases.push(Case {
                pattern: unhex(rest),
                outcome: Ok(Vec::new()),
            }),
            "E" => cases.last_mut().expect("pattern first").outcome = Err(unhex(rest)),
            "M" => {
                cases.last_mut().expect("pattern first").outcome =
                    Ok(rest.bytes().map(|b| b == b'1').collect())
            }
            other => panic!("unknown line tag {other:?}"),
        }
    }
    (subjects, cases)
}

#[test]
fn patterns_mean_what_they_meant_to_go() {
    let (subjects, cases) = recorded();
    assert!(cases.len() >= 2000 && subjects.len() > 50);
    let mut wrong = Vec::new();
    let (mut errors, mut lite) = (0, 0);
    for c in &cases {
        let ours = anchored(&c.pattern, Flavor::Regex);
        match (&c.outcome, ours) {
            (Err(go), Err(e)) => {
                errors += 1;
                // Go 1.19's size limit has no counterpart here (Rust's own limit is larger).
                if !go.contains("internal error") && *go != e.to_string() {
                    wrong.push(format!("{:?}: Go {go:?}, ours {e}", c.pattern));
                }
            }
            (Err(go), Ok(t)) => {
                if !go.contains("internal error") {
                    wrong.push(format!(
                        "{:?}: Go {go:?}, ours accepted as {t:?}",
                        c.pattern
                    ));
                }
            }
            (Ok(_), Err(e)) => wrong.push(format!("{:?}: Go compiled it, ours {e}", c.pattern)),
            (Ok(go), Ok(t)) => {
                let re = match regex::RegexBuilder::new(&t).size_limit(SIZE_LIMIT).build() {
                    Ok(re) => re,
                    Err(e) => {
                        wrong.push(format!("{:?} -> {t:?}: Rust refuses: {e}", c.pattern));
                        continue;
                    }
                };
                let ours: Vec<bool> = subjects.iter().map(|s| re.is_match(s)).collect();
                if ours != *go {
                    let at: Vec<&String> = subjects
                        .iter()
                        .zip(ours.iter().zip(go))
                        .filter(|(_, (a, b))| a != b)
                        .map(|(s, _)| s)
                        .collect();
                    wrong.push(format!("{:?} -> {t:?}: differs on {at:?}", c.pattern));
                }
                // The same through regex-lite, which has no Unicode classes.
                // Its case folding is ASCII's (the subjects hold ſ and the Kelvin sign), and
                // its size limit smaller.
                if !t.contains("(?i")
                    && !t.contains("\\p{")
                    && !t.contains("\\P{")
                    && !t.contains("{1000}")
                {
                    let l = anchored(&c.pattern, Flavor::Lite).expect("same parse");
                    match regex_lite::Regex::new(&l) {
                        Ok(re) => {
                            lite += 1;
                            let ours: Vec<bool> = subjects.iter().map(|s| re.is_match(s)).collect();
                            if ours != *go {
                                wrong.push(format!("{:?} -> {l:?}: regex-lite differs", c.pattern));
                            }
                        }
                        Err(e) => {
                            wrong.push(format!("{:?} -> {l:?}: regex-lite refuses: {e}", c.pattern))
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ from Go:\n{}",
        wrong.len(),
        cases.len(),
        wrong[..wrong.len().min(40)].join("\n")
    );
    assert!(errors > 300 && lite > 500, "errors {errors}, lite {lite}");
}

#[test]
fn the_differences_that_matter_most() {
    let m = |p: &str, s: &str| {
        let t = anchored(p, Flavor::Regex).expect("valid");
        regex::Regex::new(&t).expect("compiles").is_match(s)
    };
    // ASCII Perl classes, as in Go.
    assert!(!m(r"\d", "٣"));
    assert!(m(r"\d", "3"));
    assert!(!m(r"\w", "é"));
    assert!(!m(r"\s", "\u{a0}"));
    assert!(
        !m(r"é\b", "é"),
        "a word boundary is ASCII: é is not a word character"
    );
    // `[` inside a class is a literal; `&&` is two ampersands.
    assert!(m("[[0-9]", "["));
    assert!(m("[a&&b]", "&"));
    // A brace that does not start a count is a literal.
    assert!(m("a{,3}", "a{,3}"));
    // Octal and \Q…\E.
    assert!(m(r"\101", "A"));
    assert!(m(r"\Qa.b\E", "a.b") && !m(r"\Qa.b\E", "axb"));
    // What Rust reads and Go refuses.
    for bad in [
        r"(?x)a", r"(?<n>a)", r"\u0041", "a**", "a{1001}", r"\pX", r"\e",
    ] {
        assert!(translate(bad, Flavor::Regex).is_err(), "{bad}");
    }
    assert_eq!(
        anchored("[a", Flavor::Regex).unwrap_err().to_string(),
        "error parsing regexp: missing closing ]: `[a)$`"
    );
    assert!(
        anchored(r"\Qa", Flavor::Regex).is_err(),
        "\\Q takes the anchor's )$"
    );
    assert!(m(r"\<a\>", "<a>"), "\\< is a literal in Go");
}

#[test]
fn hostile_nesting_is_neither_recursion_nor_a_crash() {
    let deep = format!("{}a{}", "(".repeat(100_000), "){1}".repeat(100_000));
    let t = translate(&deep, Flavor::Regex).expect("Go reads it");
    assert!(t.len() > 100_000);
    assert!(translate(&"(".repeat(100_000), Flavor::Regex).is_err());
    assert!(translate(&format!("{}a", "(?i:".repeat(50_000)), Flavor::Regex).is_err());
    // Counts of 2 and more multiply: ten levels of {2} are 1024 copies, past Go's limit.
    let ten = format!("{}a{}", "(".repeat(10), "){2}".repeat(10));
    assert_eq!(
        translate(&ten, Flavor::Regex).unwrap_err().code,
        "invalid repeat count"
    );
    let nine = format!("{}a{}", "(".repeat(9), "){2}".repeat(9));
    assert!(translate(&nine, Flavor::Regex).is_ok());
}
