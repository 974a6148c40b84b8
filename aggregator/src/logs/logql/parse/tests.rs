use super::*;

fn ok(q: &str) -> Query {
    parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
}

#[test]
fn the_queries_users_write_parse() {
    for q in [
        r#"{app="api"}"#,
        r#"{app="api", env=~"prod|staging"} |= "error" != "timeout" |~ "5\\d\\d""#,
        r#"{app="api"} | json | level="error" | status >= 500 and duration > 250ms"#,
        r#"{app="api"} | logfmt | line_format "{{.method}} {{ .path }}""#,
        r#"{app="api"} | regexp "(?P<ip>\\S+) - (?P<user>\\S+)""#,
        r#"{app="nginx"} | pattern "<ip> - - [<_>] \"<method> <path> <_>\" <status>""#,
        r#"count_over_time({app="api"}[5m])"#,
        r#"sum by (level) (count_over_time({app="api"} | json [5m]))"#,
        r#"sum(rate({app="api"} |= "error" [1m])) by (env)"#,
        r#"topk(3, sum by (path) (bytes_rate({app="api"}[1h])))"#,
        r#"avg_over_time({app="api"} | logfmt | unwrap duration(latency) [5m]) by (path)"#,
        r#"max_over_time({app="api"} | json | unwrap bytes(size) [10m])"#,
        "{app=\"api\"} # a comment\n |= `raw \\d string`",
    ] {
        ok(q);
    }
}

#[test]
fn errors_say_where_like_loki() {
    for (q, want) in [
        (r#"{app="api""#, "col 11"),
        (r#"{app=~".*"}"#, "at least one"),
        (r#"rate({app="api"})"#, "expecting ["),
        (r#"sum_over_time({app="api"}[5m])"#, "without unwrap"),
        (
            r#"count_over_time({app="api"} | unwrap x [5m])"#,
            "with unwrap",
        ),
        (r#"{app="api"} | frobnicate"#, "frobnicate"),
        (r#"{app="api"} |~ "(""#, "invalid regex"),
        (r#"{app="api"} | regexp "(\\d+)""#, "named capture"),
        (r#"{app="api"} |= "unterminated"#, "unterminated"),
        (
            r#"topk(0, count_over_time({a="b"}[1m]))"#,
            "positive integer",
        ),
        ("{a=\"b\"}\n | @", "line 2, col 4"),
    ] {
        let e = parse(q).expect_err(q).to_string();
        assert!(e.starts_with("parse error at line "), "{q}: {e}");
        assert!(e.contains(want), "{q}: {e} (wanted {want})");
    }
}

#[test]
fn deep_or_long_queries_are_refused_not_overflowed() {
    let deep = format!(
        "{}count_over_time({{a=\"b\"}}[1m]){}",
        "sum(".repeat(100),
        ")".repeat(100)
    );
    assert!(parse(&deep).is_err());
    let long = format!("{{a=\"{}\"}}", "x".repeat(70_000));
    assert!(parse(&long).is_err());
    for _ in 0..500 {
        let n = rand::random::<u8>() as usize % 40;
        let junk: String = (0..n)
            .map(|_| b"{}()[]|=!~\"`a1 ,.<>-"[rand::random::<u8>() as usize % 20] as char)
            .collect();
        let _ = parse(&junk);
    }
}

#[test]
fn durations_and_numbers() {
    assert_eq!(duration_ns("5m"), Some(300_000_000_000));
    assert_eq!(duration_ns("1h30m"), Some(5_400_000_000_000));
    assert_eq!(duration_ns("250ms"), Some(250_000_000));
    assert_eq!(duration_ns("x"), None);
    assert_eq!(number("1.5"), Some(1.5));
    assert_eq!(number("250ms"), Some(0.25));
    assert_eq!(number("1KiB"), Some(1024.0));
}

#[test]
fn binary_expressions_that_make_no_sense_are_refused() {
    let c = r#"count_over_time({a="b"}[1m])"#;
    for (q, says) in [
        ("1 > 2".to_string(), "BOOL modifier"),
        (format!("1 and {c}"), "set operators"),
        ("sum(1)".to_string(), "got a number"),
        (format!("{c} + bool {c}"), "bool modifier"),
        (format!("{c} / on (a) group_left {c}"), "group_left"),
        (format!("{c} +"), "unexpected end"),
    ] {
        let e = parse(&q).expect_err(&q);
        assert!(e.message.contains(says), "{q}: {e}");
    }
    let deep = format!("{}1", "1 ^ ".repeat(200));
    assert!(parse(&deep).expect_err("deep").message.contains("nested"));
}
