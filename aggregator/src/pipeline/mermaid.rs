//! The diagram as a Mermaid flowchart: one subgraph per stage, left to right; edges in the
//! direction data flows, labelled with their figures; the critical path thick and red
//! (`==>` and a `linkStyle`), alerting points filled red (`classDef alerting`).

use std::fmt::Write;

use super::{Figure, Graph};

/// A number as people read it: `950`, `1.2k`, `3.4M`, `0.25`.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration in seconds as people read it: `420 µs`, `3.1 ms`, `1.2 s`, `2.5 min`.
pub fn duration(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        let ms = s * 1e3;
        if ms < 10.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// The figure as one line: `120 samples/s · append p50 1.2 ms p99 4.0 ms`.
pub fn figure_text(f: &Figure) -> String {
    let mut parts = Vec::new();
    if let Some(r) = f.rate
        && !f.unit.is_empty()
    {
        parts.push(format!("{} {}/s", number(r), f.unit));
    }
    match (f.p50, f.p99) {
        (Some(a), Some(b)) => {
            let what = if f.what.is_empty() {
                String::new()
            } else {
                format!("{} ", f.what)
            };
            parts.push(format!("{what}p50 {} p99 {}", duration(a), duration(b)));
        }
        _ if !f.what.is_empty() && f.unit.is_empty() => {
            parts.push(format!("{}: idle", f.what));
        }
        _ => {}
    }
    parts.join(" · ")
}

/// Text made safe inside a quoted Mermaid label (its entity codes, not HTML's).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            '#' => out.push_str("#35;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The flowchart.
pub fn render(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    for (stage, title) in &g.stages {
        let _ = writeln!(out, "    subgraph stage_{stage}[\"{}\"]", esc(title));
        let _ = writeln!(out, "        direction TB");
        for n in g.nodes.iter().filter(|n| &n.stage == stage) {
            let mut lines = vec![format!("<b>{}</b>", esc(&n.title))];
            lines.extend(n.detail.iter().map(|d| esc(d)));
            if let Some(f) = &n.figure {
                let t = figure_text(f);
                if !t.is_empty() {
                    lines.push(esc(&t));
                }
            }
            if !n.alerting.is_empty() {
                lines.push(esc(&format!("firing: {}", n.alerting.join(", "))));
            }
            let _ = writeln!(out, "        {}[\"{}\"]", n.id, lines.join("<br/>"));
        }
        let _ = writeln!(out, "    end");
    }
    let mut thick = Vec::new();
    for (i, e) in g.edges.iter().enumerate() {
        let arrow = if e.critical {
            thick.push(i.to_string());
            "==>"
        } else if e.control {
            "-.->"
        } else {
            "-->"
        };
        let text = match &e.figure {
            Some(f) => figure_text(f),
            None => e.label.clone(),
        };
        if text.is_empty() {
            let _ = writeln!(out, "    {} {arrow} {}", e.from, e.to);
        } else {
            let _ = writeln!(out, "    {} {arrow}|\"{}\"| {}", e.from, esc(&text), e.to);
        }
    }
    out.push_str("    classDef critical stroke:#c62828,stroke-width:3px\n");
    out.push_str(
        "    classDef alerting fill:#ffcdd2,stroke:#b71c1c,stroke-width:4px,color:#b71c1c\n",
    );
    let critical: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.critical && n.alerting.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    if !critical.is_empty() {
        let _ = writeln!(out, "    class {} critical", critical.join(","));
    }
    let alerting: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| !n.alerting.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    if !alerting.is_empty() {
        let _ = writeln!(out, "    class {} alerting", alerting.join(","));
    }
    if !thick.is_empty() {
        let _ = writeln!(
            out,
            "    linkStyle {} stroke:#c62828,stroke-width:4px",
            thick.join(",")
        );
    }
    out
}

/// The flowchart as a Markdown block, for docs and runbooks.
pub fn markdown(g: &Graph) -> String {
    format!("```mermaid\n{}```\n", render(g))
}
