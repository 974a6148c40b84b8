//! Random rule files and alert timelines checked against Prometheus' rule engine: Telltale's
//! observations of every alert check and `ALERTS` query become a test file's expectations,
//! and `promtool test rules` must pass it (tests/src/rulefuzz.rs). `TT_RULES_FUZZ_CASES`
//! and `TT_RULES_FUZZ_SEED` widen a run by hand; `TT_RULES_FUZZ_REPORT=FILE` keeps every
//! disagreement.

use telltale_tests::compliance::Rng;
use telltale_tests::hostile::Pick;
use telltale_tests::peers::peer;
use telltale_tests::rulefuzz::Case;

use telltale_tests::env_u64 as env;

#[test]
fn random_rules_fire_and_render_as_prometheus_does() {
    let Some(promtool) = peer("/usr/bin/promtool", "prometheus") else {
        return;
    };
    let cases = env("TT_RULES_FUZZ_CASES", 120);
    let seed = env("TT_RULES_FUZZ_SEED", 0x5eed_a1e7);
    let mut r = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let (mut alerts, mut firing, mut exprs, mut skipped) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for i in 0..cases {
        let case = Case::random(&mut r);
        let o = case
            .check(dir.path(), &promtool)
            .unwrap_or_else(|e| panic!("case {i} (seed {seed}): {e}\n{}", case.rules));
        alerts += o.alert_checks;
        firing += o.firing_checks;
        exprs += o.expr_checks;
        skipped += o.expr_skipped;
        if let Some(d) = o.disagreement {
            failed.push(format!("=== case {i} (seed {seed}) ===\n{d}"));
        }
    }
    println!(
        "{cases} rule files: {alerts} alert checks ({firing} with alerts firing), {exprs} \
         expression checks ({skipped} left out), {} disagreements",
        failed.len()
    );
    if let Ok(path) = std::env::var("TT_RULES_FUZZ_REPORT") {
        std::fs::write(path, failed.join("\n")).unwrap();
    }
    // The generator must reach firing alerts, or the comparison says little.
    assert!(firing * 5 >= alerts, "{firing} of {alerts} checks fire");
    assert!(
        failed.is_empty(),
        "{} of {cases} files disagree with promtool:\n{}",
        failed.len(),
        failed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Whether `t` prints a query result or sample as a whole, which Go prints as a pointer.
fn prints_a_sample(t: &str) -> bool {
    use telltale_aggregator::alert::template::{Data, Template};
    use telltale_common::model::Labels;
    let Ok(tpl) = Template::parse(t) else {
        return false;
    };
    let labels = Labels::from_pairs([("job", "node")]);
    let query = |_: &str| Ok(vec![(labels.clone(), 1.0)]);
    let out = tpl.render(Data {
        name: "t",
        labels: &labels,
        external: &labels,
        value: 1.0,
        external_url: "",
        query: Some(&query),
    });
    out.contains("{map[")
}

/// Random template text in an annotation: Telltale loads the rule file exactly where
/// `promtool check rules` does (Go's template parser decides what is a template).
#[test]
fn random_templates_load_where_promtool_loads_them() {
    let Some(promtool) = peer("/usr/bin/promtool", "prometheus") else {
        return;
    };
    let cases = env("TT_RULES_FUZZ_CASES", 120) * 10;
    let seed = env("TT_RULES_FUZZ_SEED", 0x5eed_a1e7);
    let mut r = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for i in 0..cases {
        let t = if r.chance(0.5) {
            telltale_tests::rulefuzz::template_soup(&mut r)
        } else {
            telltale_tests::rulefuzz::template_near_valid(&mut r)
        };
        let f = dir.path().join(format!("t{i}.yml"));
        std::fs::write(
            &f,
            format!(
                "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up\n    annotations:\n      a: {}\n",
                serde_json::to_string(&t).unwrap()
            ),
        )
        .unwrap();
        texts.push(t);
        files.push(f);
    }
    let mut theirs = Vec::new();
    for chunk in files.chunks(200) {
        theirs.extend(telltale_tests::rulefuzz::promtool_accepts(&promtool, chunk).unwrap());
    }
    let mut differ = Vec::new();
    let mut accepted = 0;
    let mut loaded = Vec::new();
    for ((f, t), theirs) in files.iter().zip(&texts).zip(theirs) {
        let ours = telltale_aggregator::rules::file::load(
            f,
            std::time::Duration::from_secs(60),
            telltale_aggregator::rules::file::Lang::PromQL,
        );
        accepted += usize::from(theirs);
        // Rendered too, unless Go would print a query's sample (a pointer there) or parse a
        // query other than `up` (PromQL's error texts differ).
        let other_query = t.matches("query \"").count() != t.matches("query \"up\"").count();
        // Regular expressions as generated only (Go's regexp error texts are not Rust's),
        // and no externalURL function (promtool has no URL: it fails there).
        let other_regex = t.matches("reReplaceAll \"").count()
            != t.matches("reReplaceAll \"h([0-9])\"").count()
            || t.matches("match \"").count() != 0;
        let url_func = t
            .replace("$externalURL", "")
            .replace(".ExternalURL", "")
            .contains("externalURL")
            || t.contains("pathPrefix");
        if theirs
            && ours.is_ok()
            && !other_query
            && !other_regex
            && !url_func
            && !prints_a_sample(t)
        {
            loaded.push(t.clone());
        }
        if ours.is_ok() != theirs {
            differ.push(format!(
                "{t:?}: promtool {}, telltale {}",
                if theirs { "loads it" } else { "refuses it" },
                match &ours {
                    Ok(_) => "loads it".to_string(),
                    Err(e) => format!("refuses it: {e}"),
                }
            ));
        }
    }
    println!(
        "{cases} templates: promtool loads {accepted}, {} disagreements",
        differ.len()
    );
    assert!(
        differ.is_empty(),
        "{} of {cases} differ:\n{}",
        differ.len(),
        differ
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // What both load renders alike: 20 templates to an alert, through promtool test rules.
    let mut renders = Vec::new();
    for chunk in loaded.chunks(20) {
        let case = Case::annotations(chunk);
        let o = case.check(dir.path(), &promtool).unwrap();
        if let Some(d) = o.disagreement {
            renders.push(d);
        }
    }
    if let Ok(path) = std::env::var("TT_RULES_FUZZ_REPORT") {
        std::fs::write(path, renders.join("\n")).unwrap();
    }
    assert!(
        renders.is_empty(),
        "{} of {} alerts render differently:\n{}",
        renders.len(),
        loaded.len().div_ceil(20),
        renders
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Both verdicts must be common, or the comparison says little.
    assert!(
        accepted * 5 >= cases as usize && accepted * 5 <= 4 * cases as usize,
        "promtool loads {accepted} of {cases}"
    );
}
