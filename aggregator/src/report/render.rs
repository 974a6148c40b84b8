//! A report as Markdown, and as one self-contained HTML page (inline style, inline SVG charts:
//! no script, no external file, readable offline and in a mail client).

use std::fmt::Write;

use super::{Chart, Report, Table, rfc3339};

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_table(out: &mut String, t: &Table) {
    if t.rows.is_empty() {
        out.push_str("_none_\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "| {} |",
        t.headers
            .iter()
            .map(|h| md_cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(t.headers.len()));
    for r in &t.rows {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    out.push('\n');
}

/// The report as Markdown (charts as their tables of values are left to the HTML).
pub fn markdown(r: &Report) -> String {
    let mut out = format!(
        "# {}\n\n{} to {} (generated {})\n\n",
        r.title,
        rfc3339(r.start_ms),
        rfc3339(r.end_ms),
        rfc3339(r.generated_ms)
    );
    for s in &r.sections {
        let _ = writeln!(out, "## {}\n", s.heading);
        for p in &s.text {
            let _ = writeln!(out, "{p}\n");
        }
        if let Some(t) = &s.table {
            md_table(&mut out, t);
        }
    }
    out
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A line chart as SVG: time on x, values on y (from 0 when all are positive), a legend.
pub fn svg(c: &Chart) -> String {
    let (w, h, l, b) = (640.0, 240.0, 60.0, 30.0);
    let pts: Vec<(i64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {}\" width=\"{w}\" \
         height=\"{}\" role=\"img\"><title>{}</title>",
        h + 20.0 * c.series.len() as f64,
        h + 20.0 * c.series.len() as f64,
        esc(&c.title)
    );
    if pts.is_empty() {
        out.push_str("<text x=\"10\" y=\"20\">no data</text></svg>");
        return out;
    }
    let (t0, t1) = pts
        .iter()
        .fold((i64::MAX, i64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let mut lo = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let mut hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some((_, y)) = c.line {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let x = |t: i64| l + (w - l - 10.0) * (t - t0) as f64 / (t1 - t0).max(1) as f64;
    let y = |v: f64| 10.0 + (h - b - 10.0) * (1.0 - (v - lo) / (hi - lo));
    let _ = write!(
        out,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{}\" font-size=\"11\">{}</text>\
         <text x=\"4\" y=\"{}\" font-size=\"11\">{}</text>\
         <text x=\"{l}\" y=\"{}\" font-size=\"11\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        h - b,
        w - 10.0,
        h - b,
        y(hi) + 4.0,
        esc(&format!("{hi:.3} {}", c.unit)),
        y(lo),
        esc(&format!("{lo:.3} {}", c.unit)),
        h - 8.0,
        &rfc3339(t0)[..16],
        w - 10.0,
        h - 8.0,
        &rfc3339(t1)[..16],
    );
    if let Some((name, v)) = &c.line {
        let _ = write!(
            out,
            "<line x1=\"{l}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#888\" \
             stroke-dasharray=\"4 3\"/><text x=\"{1}\" y=\"{2}\" font-size=\"10\" \
             text-anchor=\"end\">{3}</text>",
            y(*v),
            w - 10.0,
            y(*v) - 3.0,
            esc(name)
        );
    }
    for (i, (name, points)) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <rect x=\"{l}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            path.join(" "),
            h + 20.0 * i as f64,
            l + 14.0,
            h + 9.0 + 20.0 * i as f64,
            esc(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}}\
         table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;\
         padding:.3rem .6rem;text-align:left}}th{{background:#f3f3f3}}</style></head><body>\
         <h1>{0}</h1><p>{1} to {2} (generated {3})</p>",
        esc(&r.title),
        rfc3339(r.start_ms),
        rfc3339(r.end_ms),
        rfc3339(r.generated_ms)
    );
    for s in &r.sections {
        let _ = write!(out, "<h2>{}</h2>", esc(&s.heading));
        for p in &s.text {
            let _ = write!(out, "<p>{}</p>", esc(p));
        }
        if let Some(t) = &s.table {
            if t.rows.is_empty() {
                out.push_str("<p><em>none</em></p>");
            } else {
                out.push_str("<table><tr>");
                for h in &t.headers {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr>");
                for row in &t.rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</table>");
            }
        }
        if let Some(c) = &s.chart {
            out.push_str(&svg(c));
        }
    }
    out.push_str("</body></html>\n");
    out
}
