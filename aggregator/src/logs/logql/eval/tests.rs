//! LogQL results on a fixed data set, compared with answers worked out by hand.

use super::*;
use crate::labels::Matcher;
use crate::logs::logql::{Query, parse};
use crate::logs::store::Selected;
use telltale_common::wire::LogEntry;

const S: i64 = 1_000_000_000;

/// A store over fixed streams.
struct Fixed(Vec<Selected>);

impl LogQuerier for Fixed {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Selected>, LogStoreError> {
        Ok(self
            .0
            .iter()
            .filter(|s| sel.matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .map(|s| Selected {
                labels: s.labels.clone(),
                entries: s
                    .entries
                    .iter()
                    .filter(|e| e.t_ns >= sel.start_ns && e.t_ns < sel.end_ns)
                    .cloned()
                    .collect(),
            })
            .collect())
    }

    fn streams(&self, _: &[Matcher], _: i64, _: i64) -> Vec<Labels> {
        self.0.iter().map(|s| s.labels.clone()).collect()
    }
}

fn data() -> Fixed {
    let e = |t: i64, l: &str| LogEntry {
        t_ns: t * S,
        line: l.into(),
        metadata: Vec::new(),
    };
    Fixed(vec![
        Selected {
            labels: Labels::from_pairs([("app", "api"), ("env", "prod")]),
            entries: vec![
                e(
                    10,
                    r#"{"level":"info","status":200,"path":"/a","took":"20ms"}"#,
                ),
                e(
                    20,
                    r#"{"level":"error","status":500,"path":"/a","took":"300ms"}"#,
                ),
                e(
                    30,
                    r#"{"level":"error","status":503,"path":"/b","took":"1s"}"#,
                ),
                e(
                    70,
                    r#"{"level":"info","status":200,"path":"/b","took":"5ms"}"#,
                ),
                e(80, "not json at all"),
            ],
        },
        Selected {
            labels: Labels::from_pairs([("app", "web"), ("env", "prod")]),
            entries: vec![
                e(15, "level=warn msg=\"slow request\" dur=2.5"),
                e(25, "level=info msg=ok dur=0.5"),
            ],
        },
    ])
}

fn logs(q: &str, dir: Direction, limit: usize) -> Vec<(String, Vec<i64>)> {
    let Ok(Query::Log(e)) = parse(q) else {
        panic!("{q}")
    };
    select_logs(&data(), &e, 0, 1000 * S, limit, dir, &Limits::default())
        .expect("runs")
        .into_iter()
        .map(|s| {
            (
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                s.entries.iter().map(|x| x.0 / S).collect(),
            )
        })
        .collect()
}

fn metric(q: &str, start: i64, end: i64, step: i64) -> Vec<(String, Vec<(i64, f64)>)> {
    let Ok(Query::Metric(e)) = parse(q) else {
        panic!("{q}")
    };
    range_metric(
        &data(),
        &e,
        start * S,
        end * S,
        step * S,
        &Limits::default(),
    )
    .expect("runs")
    .into_iter()
    .map(|s| {
        (
            s.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            s.points.iter().map(|p| (p.0 / S, p.1)).collect(),
        )
    })
    .collect()
}

#[test]
fn line_filters_and_direction_and_limit() {
    assert_eq!(
        logs(r#"{app="api"} |= "error""#, Direction::Forward, 100),
        vec![("app=api,env=prod".to_string(), vec![20, 30])]
    );
    assert_eq!(
        logs(
            r#"{app="api"} != "error" |~ "path\":\"/b""#,
            Direction::Backward,
            100
        ),
        vec![("app=api,env=prod".to_string(), vec![70])]
    );
    // The newest two lines across both streams.
    let two = logs(r#"{env="prod"}"#, Direction::Backward, 2);
    assert_eq!(two, vec![("app=api,env=prod".to_string(), vec![80, 70])]);
}

#[test]
fn parsers_and_label_filters() {
    let got = logs(
        r#"{app="api"} | json | level="error" and took > 500ms | keep path"#,
        Direction::Forward,
        100,
    );
    assert_eq!(got, vec![("path=/b".to_string(), vec![30])]);
    // A line that is not JSON is kept, with the parser's error label.
    let got = logs(
        r#"{app="api"} | json | __error__="JSONParserErr""#,
        Direction::Forward,
        100,
    );
    assert_eq!(got[0].1, vec![80]);
    let got = logs(
        r#"{app="web"} | logfmt | dur >= 1"#,
        Direction::Forward,
        100,
    );
    assert_eq!(got[0].1, vec![15]);
    let got = logs(
        r#"{app="web"} | regexp "level=(?P<lvl>\\w+)" | lvl="info" | drop msg, dur"#,
        Direction::Forward,
        100,
    );
    assert_eq!(
        got,
        vec![("app=web,env=prod,lvl=info".to_string(), vec![25])]
    );
    let got = logs(
        r#"{app="web"} | pattern "level=<lvl> msg=<_> dur=<d>" | d < 1"#,
        Direction::Forward,
        100,
    );
    assert_eq!(got[0].1, vec![25]);
}

#[test]
fn line_format_rewrites_the_line() {
    let Ok(Query::Log(e)) =
        parse(r#"{app="api"} | json | status=500 | line_format "{{.path}} took {{.took}}""#)
    else {
        panic!()
    };
    let r = select_logs(
        &data(),
        &e,
        0,
        1000 * S,
        10,
        Direction::Forward,
        &Limits::default(),
    )
    .expect("runs");
    assert_eq!(r[0].entries, vec![(20 * S, "/a took 300ms".to_string())]);
}

#[test]
fn range_functions_use_left_open_windows() {
    // Windows (t-30s, t] at t = 30, 60, 90.
    assert_eq!(
        metric(r#"count_over_time({app="api"}[30s])"#, 30, 90, 30),
        vec![("app=api,env=prod".to_string(), vec![(30, 3.0), (90, 2.0)])]
    );
    let r = metric(r#"rate({app="api"}[30s])"#, 30, 30, 1);
    assert_eq!(r[0].1, vec![(30, 0.1)]);
    let bytes = "not json at all".len() as f64
        + r#"{"level":"info","status":200,"path":"/b","took":"5ms"}"#.len() as f64;
    assert_eq!(
        metric(r#"bytes_over_time({app="api"}[30s])"#, 90, 90, 1)[0].1,
        vec![(90, bytes)]
    );
}

#[test]
fn aggregations_group_like_loki() {
    assert_eq!(
        metric(
            r#"sum by (level) (count_over_time({env="prod"} | logfmt | json [100s]))"#,
            100,
            100,
            1
        )
        .into_iter()
        .map(|(l, p)| (l, p[0].1))
        .collect::<Vec<_>>(),
        vec![
            (String::new(), 1.0),
            ("level=error".to_string(), 2.0),
            ("level=info".to_string(), 3.0),
            ("level=warn".to_string(), 1.0),
        ]
    );
    let top = metric(
        r#"topk(1, count_over_time({env="prod"}[100s]))"#,
        100,
        100,
        1,
    );
    assert_eq!(
        top,
        vec![("app=api,env=prod".to_string(), vec![(100, 5.0)])]
    );
    let unwrap = metric(
        r#"max_over_time({app="api"} | json | unwrap duration(took) [100s]) by (path)"#,
        100,
        100,
        1,
    );
    assert_eq!(
        unwrap,
        vec![
            ("path=/a".to_string(), vec![(100, 0.3)]),
            ("path=/b".to_string(), vec![(100, 1.0)])
        ]
    );
    let avg = metric(r#"avg(count_over_time({env="prod"}[100s]))"#, 100, 100, 1);
    assert_eq!(avg[0].1, vec![(100, 3.5)]);
}

#[test]
fn limits_refuse_instead_of_running_away() {
    let Ok(Query::Metric(e)) = parse(r#"count_over_time({app="api"}[1m])"#) else {
        panic!()
    };
    let r = range_metric(&data(), &e, 0, 1_000_000 * S, S, &Limits::default());
    assert!(matches!(r, Err(EvalError::Limit(m)) if m.contains("points")));
}

/// The values at t = 100 s, by labels.
fn at100(q: &str) -> Vec<(String, f64)> {
    metric(q, 100, 100, 1)
        .into_iter()
        .map(|(l, p)| (l, p[0].1))
        .collect()
}

#[test]
fn binary_operators_follow_prometheus_semantics() {
    // In (0, 100 s]: app=api has 5 lines (2 contain "error"), app=web has 2.
    let prod = r#"count_over_time({env="prod"}[100s])"#;
    let api = "app=api,env=prod".to_string();
    let web = "app=web,env=prod".to_string();
    assert_eq!(at100(&format!("{prod} > 3")), vec![(api.clone(), 5.0)]);
    assert_eq!(
        at100(&format!("{prod} > bool 3")),
        vec![(api.clone(), 1.0), (web.clone(), 0.0)]
    );
    // A number on the left of a comparison: the series keeps its own value.
    assert_eq!(at100(&format!("3 < {prod}")), vec![(api.clone(), 5.0)]);
    assert_eq!(
        at100(&format!("{prod} * 2 - 1")),
        vec![(api.clone(), 9.0), (web.clone(), 3.0)]
    );
    // `-1` after a value is a subtraction, not a negative number.
    assert_eq!(at100(&format!("{prod} -1"))[0].1, 4.0);
    // Loki's classic error-ratio alert.
    assert_eq!(
        at100(r#"sum(rate({app="api"} |= "error" [100s])) / sum(rate({app="api"}[100s]))"#),
        vec![(String::new(), (2.0 / 100.0) / (5.0 / 100.0))]
    );
    assert_eq!(
        at100(
            r#"sum by (env) (count_over_time({app="api"}[100s])) / on (env) sum by (env, x) (count_over_time({env="prod"}[100s]))"#
        ),
        vec![("env=prod".to_string(), 5.0 / 7.0)]
    );
    // One-to-one matching on all labels, and with `ignoring`.
    assert_eq!(
        at100(&format!("{prod} / {prod}")),
        vec![(api.clone(), 1.0), (web.clone(), 1.0)]
    );
    assert_eq!(
        at100(
            r#"count_over_time({app="api"}[100s]) + ignoring (app) count_over_time({app="web"}[100s])"#
        ),
        vec![("env=prod".to_string(), 7.0)]
    );
    // Set operators.
    let web_only = r#"count_over_time({app="web"}[100s])"#;
    assert_eq!(
        at100(&format!("{prod} and {web_only}")),
        vec![(web.clone(), 2.0)]
    );
    assert_eq!(
        at100(&format!("{prod} unless {web_only}")),
        vec![(api.clone(), 5.0)]
    );
    assert_eq!(
        at100(&format!("{web_only} or {prod}")),
        vec![(api.clone(), 5.0), (web.clone(), 2.0)]
    );
    // Precedence and associativity: `^` binds tightest and to the right, `-` to the left.
    for (q, want) in [
        ("1 + 2 * 3 ^ 2", 19.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("10 - 2 - 3", 5.0),
        ("(1 + 2) * 3", 9.0),
        ("7 % 4", 3.0),
        ("2 > bool 1", 1.0),
        ("-1 + 3", 2.0),
    ] {
        assert_eq!(at100(q), vec![(String::new(), want)], "{q}");
    }
}

#[test]
fn ambiguous_matches_are_refused() {
    let Ok(Query::Metric(e)) = parse(
        r#"count_over_time({env="prod"}[100s]) / on (env) count_over_time({env="prod"}[100s])"#,
    ) else {
        panic!()
    };
    let r = range_metric(&data(), &e, 100 * S, 100 * S, S, &Limits::default());
    assert!(
        matches!(&r, Err(EvalError::Matching(m)) if m.contains("many-to-many")),
        "{r:?}"
    );
}

#[test]
fn structured_metadata_is_filtered_and_returned_like_labels() {
    let e = |t: i64, l: &str, trace: &str| LogEntry {
        t_ns: t * S,
        line: l.into(),
        metadata: if trace.is_empty() {
            Vec::new()
        } else {
            vec![
                ("trace_id".into(), trace.into()),
                ("bad name".into(), "x".into()),
            ]
        },
    };
    let store = Fixed(vec![Selected {
        labels: Labels::from_pairs([("service_name", "payments")]),
        entries: vec![
            e(10, "charging", "aa"),
            e(11, "declined", "aa"),
            e(12, "charging", "bb"),
            e(13, "no trace", ""),
        ],
    }]);
    let Ok(Query::Log(q)) = parse(r#"{service_name="payments"} | trace_id="aa""#) else {
        panic!("parses")
    };
    let got = select_logs(
        &store,
        &q,
        0,
        100 * S,
        100,
        Direction::Forward,
        &Limits::default(),
    )
    .expect("runs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("trace_id"), Some("aa"));
    assert_eq!(got[0].labels.get("bad name"), None);
    let lines: Vec<&str> = got[0].entries.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(lines, vec!["charging", "declined"]);
    // Metric series are not split by metadata, with or without a pipeline stage: counting
    // from the index (no stage) and from the lines (a filter) agree.
    for q in [
        r#"sum by (trace_id) (count_over_time({service_name="payments"}[1m]))"#,
        r#"sum by (trace_id) (count_over_time({service_name="payments"} |= "" [1m]))"#,
        r#"count_over_time({service_name="payments"} | trace_id="aa" [1m])"#,
    ] {
        let Ok(Query::Metric(m)) = parse(q) else {
            panic!("parses")
        };
        let series = range_metric(&store, &m, 60 * S, 60 * S, S, &Limits::default()).expect("runs");
        assert_eq!(series.len(), 1, "{q}");
        assert_eq!(series[0].labels.get("trace_id"), None, "{q}");
        let want = if q.contains("\"aa\"") { 2.0 } else { 4.0 };
        assert_eq!(series[0].points[0].1, want, "{q}");
    }
}
