//! Times promql-parser on typical queries (`cargo run --release -p telltale-aggregator --example parse_cost`).
fn main() {
    for q in [
        "1 * 2 + 4 / 6 - 10 % 2 ^ 2",
        "{__name__=\"demo_memory_usage_bytes\"}",
        "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))",
        "histogram_quantile(0.9, rate(demo_api_request_duration_seconds_bucket[1m]))",
    ] {
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = std::hint::black_box(promql_parser::parser::parse(q));
        }
        println!("{:8.1} µs  {q}", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
