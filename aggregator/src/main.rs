//! The `telltale-aggregator` command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use telltale_aggregator::config::{Config, Overrides};

/// Telltale aggregator: QUIC ingest from agents, durable storage, Prometheus-compatible API.
#[derive(Parser)]
#[command(name = "telltale-aggregator", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log line format: text, logfmt or json (default: TELLTALE_LOG_FORMAT, else text).
    /// Levels come from TELLTALE_LOG (else RUST_LOG): `info,telltale_aggregator::ingest=debug`.
    #[arg(long, global = true, env = "TELLTALE_LOG_FORMAT", value_parser = clap::value_parser!(telltale_common::logging::Format))]
    log_format: Option<telltale_common::logging::Format>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions {
        /// The shell.
        shell: telltale_common::cli::Shell,
    },
    /// Print the man page (roff) to standard output; the packages install it.
    #[command(hide = true)]
    Man,
    /// Make and issue the certificates of the agent ↔ aggregator link.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Run the aggregator.
    Serve(ServeArgs),
    /// Validate a configuration file and the TLS files it names, then exit.
    CheckConfig(ServeArgs),
    /// Rule files.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Routing files.
    Routes {
        #[command(subcommand)]
        cmd: RoutesCmd,
    },
    /// Inspect a data directory (read-only; safe beside a running aggregator).
    Storage {
        #[command(subcommand)]
        cmd: StorageCmd,
    },
    /// Anomaly detection.
    Anomaly {
        #[command(subcommand)]
        cmd: AnomalyCmd,
    },
    /// Make a report on a running aggregator (`/api/v1/reports/render`) and print it.
    Report(ReportArgs),
    /// Print a running aggregator's live pipeline diagram (`/api/v1/pipeline`) as Markdown
    /// with a Mermaid block, for docs and runbooks.
    Diagram(DiagramArgs),
    /// SLO files (Sloth `prometheus/v1`, OpenSLO `v1` and `v1alpha`).
    Slos {
        #[command(subcommand)]
        cmd: SlosCmd,
    },
}

#[derive(clap::Args)]
struct ReportArgs {
    /// slo, incidents, capacity or alert-tuning.
    #[arg(long)]
    kind: String,
    /// The range, ending at `--end` (default 7d).
    #[arg(long, default_value = "7d")]
    range: String,
    /// The range's end (RFC 3339 or Unix seconds; default now).
    #[arg(long)]
    end: Option<String>,
    /// md, html or json.
    #[arg(long, default_value = "md")]
    format: String,
    /// The aggregator's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:9470")]
    url: String,
    /// Bearer token (needed when the aggregator has a read token).
    #[arg(long, env = "TELLTALE_READ_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `report`: GET the rendered report and print it; exit 1 naming the error.
fn report(a: ReportArgs) -> ExitCode {
    let mut url = format!(
        "{}/api/v1/reports/render?kind={}&range={}&format={}",
        a.url.trim_end_matches('/'),
        a.kind,
        a.range,
        a.format
    );
    if let Some(e) = &a.end {
        url.push_str(&format!("&end={e}"));
    }
    print_get(&url, a.token.as_deref())
}

#[derive(clap::Args)]
struct DiagramArgs {
    /// The aggregator's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:9470")]
    url: String,
    /// markdown (a fenced Mermaid block), mermaid (the flowchart alone) or json.
    #[arg(long, default_value = "markdown")]
    format: String,
    /// The structure only: no measured figures, no alert states (stable text for docs).
    #[arg(long)]
    no_figures: bool,
    /// live (what runs) or all (every kind of source and stage).
    #[arg(long, default_value = "live")]
    view: String,
    /// Bearer token (needed when the aggregator has a read token).
    #[arg(long, env = "TELLTALE_READ_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `diagram`: GET `/api/v1/pipeline` and print it.
fn diagram(a: DiagramArgs) -> ExitCode {
    if !matches!(a.format.as_str(), "markdown" | "mermaid" | "json") {
        eprintln!(
            "telltale-aggregator: --format {:?}: markdown, mermaid or json",
            a.format
        );
        return ExitCode::from(2);
    }
    let url = format!(
        "{}/api/v1/pipeline?format={}&view={}&figures={}",
        a.url.trim_end_matches('/'),
        a.format,
        a.view,
        !a.no_figures
    );
    print_get(&url, a.token.as_deref())
}

/// GETs `url` and prints the body; exit 1 naming the error.
fn print_get(url: &str, token: Option<&str>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let run = async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{url}: {status}: {body}"))
        }
    };
    let out = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run));
    match out {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telltale-aggregator: {e}");
            ExitCode::from(1)
        }
    }
}

/// Every receiver a `[[report]]` names is in the routing file.
fn report_receivers(
    cfg: &Config,
    routing: &telltale_aggregator::alerting::config::RoutingConfig,
) -> Result<(), String> {
    for r in &cfg.reports {
        if let Some(x) = r
            .receivers
            .iter()
            .find(|x| !routing.receivers.contains_key(*x))
        {
            return Err(format!(
                "report {:?}: receiver {x:?} is not in the routing file",
                r.name
            ));
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum SlosCmd {
    /// Validate SLO files (the `[slo] files` / `--slos` format); exits 1 if any fails.
    Check {
        /// SLO files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the Prometheus rule file the SLO files generate (Sloth's rule names and labels),
    /// to inspect it or run it elsewhere.
    Generate {
        /// SLO files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AnomalyCmd {
    /// Validate detector files (the `[anomaly] files` / `--detectors` format); exits 1 if any
    /// fails.
    Check {
        /// Detector files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run Telltale's detector over every NAB data file (streaming, one parameter set),
    /// write NAB result files under OUT/telltale/ and print the normalised score per profile.
    Nab {
        /// NAB's directory (data, labels, config, results/null).
        #[arg(long)]
        dir: PathBuf,
        /// Where the result files go.
        #[arg(long)]
        out: PathBuf,
        /// The method (context, knn, ewma, seasonal, changepoint, ensemble).
        #[arg(long, default_value = "context")]
        method: String,
        /// Method parameters, `key=value,...` over the defaults.
        #[arg(long, default_value = "")]
        params: String,
        /// Only these categories (comma-separated, e.g. `realTraffic,realAdExchange`); the
        /// score is then normalised over them.
        #[arg(long)]
        only: Option<String>,
    },
    /// Measure a method's cost: SERIES models fed POINTS points each (a noisy cycle, or with
    /// `--rising` a counter that keeps growing with jitter, NaN gaps and resets; after
    /// enough points to fill the models); prints CPU per point and memory per series, and
    /// what 10 000 series at 10 s would take.
    Cost {
        /// The method.
        #[arg(long, default_value = "context")]
        method: String,
        /// Method parameters, `key=value,...` over the defaults.
        #[arg(long, default_value = "")]
        params: String,
        /// Series (models).
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Points measured per series (after the fill).
        #[arg(long, default_value_t = 50)]
        points: usize,
        /// A growing counter instead of a cycle (the shape that keeps widening a range).
        #[arg(long)]
        rising: bool,
    },
    /// Forecast accuracy on held-back tails: the last day (at most a fifth) of every NAB file
    /// of realAWSCloudwatch and realKnownCause, and a disk-fill scenario, forecast by
    /// Holt-Winters and by predict_linear over the last 6 hours; prints MAPE per file and
    /// the means.
    ForecastEval {
        /// NAB's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The leave-one-category-out score: for each NAB category, the run (parameter set) and
    /// threshold best on the other six categories, scored on it (tests/nab/loco.sh).
    NabLoco {
        /// NAB's directory (data, labels, config, results/null).
        #[arg(long)]
        dir: PathBuf,
        /// A run: `NAME=DIR`, DIR holding `telltale/<category>/telltale_<file>.csv` as
        /// `anomaly nab --out DIR` writes (repeatable).
        #[arg(long = "run", required = true)]
        runs: Vec<String>,
        /// The profile.
        #[arg(long, default_value = "standard")]
        profile: String,
    },
    /// Score a detector's NAB result files by NAB's rules and print its normalised score per
    /// profile (null detector 0, perfect 100) with the threshold chosen.
    NabScore {
        /// NAB's directory (data, labels, config, results/null).
        #[arg(long)]
        dir: PathBuf,
        /// Where `<detector>/<category>/<detector>_<file>.csv` are (default: DIR/results).
        #[arg(long)]
        results: Option<PathBuf>,
        /// The detector's name.
        #[arg(long)]
        detector: String,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Validate Prometheus rule files like `promtool check rules` (with `--logql`: Loki ruler
    /// files); exits 1 if any fails.
    Check {
        /// The files hold LogQL rules (`[logs] rule_files`), not PromQL.
        #[arg(long)]
        logql: bool,
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests written for `promtool test rules` on Telltale's rule engine and a
    /// test clock; exits 1 if any fails.
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RoutesCmd {
    /// Validate a routing file (Alertmanager configuration + Telltale extensions); exits 1 if
    /// it fails, and prints what is accepted but not acted on.
    Check {
        /// The routing file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum StorageCmd {
    /// Verify every checksum: block indexes and chunks, WAL records, series and events logs.
    /// Exits 1 when anything is damaged, naming each problem.
    Check {
        /// The aggregator's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print series, samples, bytes on disk and bytes per sample, per block kind and level.
    Stats {
        /// The aggregator's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a CA and the server certificate: DIR/{ca.crt,ca.key,server.crt,server.key}.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS name or IP address for the server certificate (repeatable);
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue an agent's client certificate: DIR/agents/NAME.{crt,key}.
    Issue {
        /// Directory holding the CA (from `certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// The agent's name; it becomes the `instance` label of everything the agent sends.
        #[arg(long)]
        agent: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory with ca.crt, server.crt, server.key.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:9470).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// QUIC listen address (default 0.0.0.0:9471).
    #[arg(long)]
    quic_listen: Option<SocketAddr>,
    /// Bearer token for state-changing HTTP calls (unset: loopback only).
    #[arg(long, env = "TELLTALE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Bearer token every read needs (unset: reads are open; the API token works too).
    #[arg(long, env = "TELLTALE_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Prometheus rule files to evaluate (repeatable; `*` and `?` allowed in the file name).
    #[arg(long = "rules", value_name = "GLOB")]
    rules: Vec<String>,
    /// Log rule files (Loki's ruler format: LogQL metric queries; repeatable; `*` and `?`
    /// allowed in the file name).
    #[arg(long = "log-rules", value_name = "GLOB")]
    log_rules: Vec<String>,
    /// Anomaly detector files (repeatable; `*` and `?` allowed in the file name).
    #[arg(long = "detectors", value_name = "GLOB")]
    detectors: Vec<String>,
    /// SLO files (Sloth or OpenSLO; repeatable; `*` and `?` allowed in the file name).
    #[arg(long = "slos", value_name = "GLOB")]
    slos: Vec<String>,
    /// A directory of dashboard JSON files for the web UI.
    #[arg(long)]
    dashboards: Option<PathBuf>,
    /// Routing file (Alertmanager's configuration shape).
    #[arg(long)]
    routes: Option<PathBuf>,
    /// Runbook file (remediation).
    #[arg(long)]
    runbooks: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self) -> Result<Config, telltale_common::config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                tls_dir: self.tls_dir.clone(),
                http_listen: self.http_listen,
                quic_listen: self.quic_listen,
                api_token: self.api_token.clone(),
                read_token: self.read_token.clone(),
                rules: self.rules.clone(),
                log_rules: self.log_rules.clone(),
                detectors: self.detectors.clone(),
                slos: self.slos.clone(),
                dashboards: self.dashboards.clone(),
                routes: self.routes.clone(),
                runbooks: self.runbooks.clone(),
            },
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    use telltale_common::cli::{Print, print};
    match &cli.cmd {
        Cmd::Completions { shell } => return print(Cli::command(), Print::Completions(*shell)),
        Cmd::Man => return print(Cli::command(), Print::Man),
        _ => {}
    }
    match cli.cmd {
        Cmd::Certs { cmd } => {
            let r = match cmd {
                CertsCmd::Init { dir, sans } => {
                    telltale_common::tls::init_ca(&dir, &sans).map(|()| {
                        format!(
                            "wrote {0}/ca.crt {0}/ca.key {0}/server.crt {0}/server.key",
                            dir.display()
                        )
                    })
                }
                CertsCmd::Issue { dir, agent } => telltale_common::tls::issue_agent(&dir, &agent)
                    .map(|(c, k)| format!("wrote {} {}", c.display(), k.display())),
            };
            match r {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Storage { cmd } => {
            use telltale_aggregator::metrics::tsdb::check;
            let dir = match &cmd {
                StorageCmd::Check { data_dir } | StorageCmd::Stats { data_dir } => data_dir.clone(),
            };
            if !dir.is_dir() {
                eprintln!(
                    "telltale-aggregator: --data-dir {}: not a directory",
                    dir.display()
                );
                return ExitCode::from(2);
            }
            match cmd {
                StorageCmd::Check { .. } => match check::check(&dir) {
                    Ok(r) => {
                        println!(
                            "checked {} blocks ({} chunks), {} WAL segments ({} records), {} series records",
                            r.blocks, r.chunks, r.segments, r.records, r.series
                        );
                        for p in &r.problems {
                            println!("DAMAGED {p}");
                        }
                        if r.problems.is_empty() {
                            println!("all checksums OK");
                            ExitCode::SUCCESS
                        } else {
                            println!("{} problems", r.problems.len());
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => {
                        eprintln!("telltale-aggregator: {}: {e}", dir.display());
                        ExitCode::from(1)
                    }
                },
                StorageCmd::Stats { .. } => match check::stats(&dir) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("telltale-aggregator: {}: {e}", dir.display());
                        ExitCode::from(1)
                    }
                },
            }
        }
        Cmd::Rules {
            cmd: RulesCmd::Check { logql, files },
        } => {
            let lang = if logql {
                telltale_aggregator::rules::file::Lang::LogQL
            } else {
                telltale_aggregator::rules::file::Lang::PromQL
            };
            let mut failed = false;
            for f in files {
                println!("Checking {}", f.display());
                match telltale_aggregator::rules::file::load(&f, Duration::from_secs(60), lang) {
                    Ok(groups) => {
                        let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                        println!("  SUCCESS: {n} rules found\n");
                    }
                    Err(e) => {
                        failed = true;
                        println!("  FAILED:\n{e}\n");
                    }
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Anomaly {
            cmd:
                AnomalyCmd::Nab {
                    dir,
                    out,
                    method,
                    params,
                    only,
                },
        } => {
            use telltale_aggregator::anomaly::{method::Method, nab};
            let method = match Method::parse(&method, &params) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("{method:?}");
            let t = std::time::Instant::now();
            let cats: Option<Vec<String>> =
                only.map(|o| o.split(',').map(|c| format!("{}/", c.trim())).collect());
            let keep = |f: &str| {
                cats.as_ref()
                    .is_none_or(|c| c.iter().any(|c| f.starts_with(c)))
            };
            let made = nab::run(&dir, &out, "telltale", &method, &keep);
            let rows = match made {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(1);
                }
            };
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{rows} points in {secs:.1} s ({:.1} µs per point)",
                secs * 1e6 / rows.max(1) as f64
            );
            let scored = match &cats {
                Some(_) => nab::fold::subset_scores(&dir, &out, "telltale", &keep),
                None => nab::scores(&dir, &out, "telltale"),
            };
            match scored {
                Ok(s) => {
                    for (profile, (score, threshold)) in s {
                        println!("telltale {profile}: {score:.2} (threshold {threshold})");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Anomaly {
            cmd:
                AnomalyCmd::Cost {
                    method,
                    params,
                    series,
                    points,
                    rising,
                },
        } => {
            let method = match telltale_aggregator::anomaly::method::Method::parse(&method, &params)
            {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            let (fill, secs, bytes) = anomaly_cost(&method, series, points, rising);
            let per_point = secs * 1e6 / (series * points).max(1) as f64;
            println!(
                "{}: {series} series ({}), filled with {fill} points each, then {points} points measured",
                method.name(),
                if rising {
                    "rising counters"
                } else {
                    "noisy cycles"
                }
            );
            println!("  CPU per point: {per_point:.2} µs");
            println!(
                "  memory per series: {:.1} KiB (model heap)",
                bytes as f64 / series.max(1) as f64 / 1024.0
            );
            println!(
                "  10 000 series at 10 s: {:.2} % of one core, {:.0} MiB",
                per_point * 1000.0 / 1e6 * 100.0,
                bytes as f64 / series.max(1) as f64 * 10_000.0 / 1048576.0
            );
            let most = method.max_bytes();
            println!(
                "  the most one model holds (set aside from [anomaly] max_model_bytes): {:.1} KiB; 10 000 series: {:.0} MiB",
                most as f64 / 1024.0,
                most as f64 * 10_000.0 / 1048576.0
            );
            ExitCode::SUCCESS
        }
        Cmd::Anomaly {
            cmd: AnomalyCmd::ForecastEval { dir },
        } => match forecast_eval(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("telltale-aggregator: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Anomaly {
            cmd: AnomalyCmd::NabLoco { dir, runs, profile },
        } => {
            let mut parsed = Vec::new();
            for r in &runs {
                let Some((name, d)) = r.split_once('=') else {
                    eprintln!("telltale-aggregator: --run {r:?}: expected NAME=DIR");
                    return ExitCode::from(2);
                };
                parsed.push((name.to_string(), PathBuf::from(d), "telltale".to_string()));
            }
            use telltale_aggregator::anomaly::nab::fold;
            match fold::leave_one_category_out(&dir, &parsed, &profile) {
                Ok((folds, total)) => {
                    for f in &folds {
                        println!(
                            "{:<24} chosen {:<24} threshold {:.6}  six others {:6.2}  held out {:6.2}",
                            f.category, f.chosen, f.threshold, f.train, f.held_out
                        );
                    }
                    println!("leave-one-category-out {profile}: {total:.2}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Rules {
            cmd: RulesCmd::Test { files },
        } => {
            let mut failed = false;
            for f in files {
                println!("Unit Testing:  {}", f.display());
                match telltale_aggregator::rules::unittest::run(&f) {
                    Ok(fails) if fails.is_empty() => println!("  SUCCESS\n"),
                    Ok(fails) => {
                        failed = true;
                        println!("  FAILED:");
                        for x in fails {
                            println!("    {x}");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        println!("  FAILED:\n    {e}");
                    }
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Report(a) => report(a),
        Cmd::Diagram(a) => diagram(a),
        // Printed above.
        Cmd::Completions { .. } | Cmd::Man => ExitCode::SUCCESS,
        Cmd::Slos {
            cmd: SlosCmd::Check { files },
        } => {
            use telltale_aggregator::slo;
            let mut failed = false;
            for f in &files {
                println!("Checking {}", f.display());
                let loaded = slo::load(f).and_then(|s| {
                    slo::groups(&s, Duration::from_secs(60))?;
                    Ok(s)
                });
                match loaded {
                    Ok(slos) => {
                        println!("  SUCCESS: {} SLOs found", slos.len());
                        for s in slos {
                            println!(
                                "    {} ({}, objective {} % over {})",
                                s.id,
                                s.spec,
                                s.objective,
                                s.period_window()
                            );
                        }
                    }
                    Err(e) => {
                        failed = true;
                        println!("  FAILED:\n{e}");
                    }
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Slos {
            cmd: SlosCmd::Generate { files },
        } => match telltale_aggregator::slo::load_all(&files) {
            Ok(slos) => {
                print!("{}", telltale_aggregator::slo::generate::rule_file(&slos));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("telltale-aggregator: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Anomaly {
            cmd: AnomalyCmd::Check { files },
        } => {
            let mut failed = false;
            for f in &files {
                println!("Checking {}", f.display());
                match telltale_aggregator::anomaly::live::spec::load(f) {
                    Ok(ds) => {
                        println!("  SUCCESS: {} detectors found", ds.len());
                        for d in ds {
                            println!(
                                "    {} ({:?}, every {}, history {})",
                                d.name,
                                d.kind,
                                humantime::format_duration(d.interval),
                                humantime::format_duration(d.history)
                            );
                            if let telltale_aggregator::anomaly::live::spec::Kind::Series(m) =
                                &d.kind
                            {
                                let most = m.max_bytes().max(1);
                                let budget =
                                    telltale_aggregator::config::DEFAULT_ANOMALY_MAX_MODEL_BYTES;
                                println!(
                                    "      at most {:.1} KiB per series set aside from [anomaly] max_model_bytes (the default {} MiB holds {} such series)",
                                    most as f64 / 1024.0,
                                    budget >> 20,
                                    budget / most as u64
                                );
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        println!("  FAILED:\n{e}");
                    }
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Anomaly {
            cmd:
                AnomalyCmd::NabScore {
                    dir,
                    results,
                    detector,
                },
        } => {
            let results = results.unwrap_or_else(|| dir.join("results"));
            match telltale_aggregator::anomaly::nab::scores(&dir, &results, &detector) {
                Ok(s) => {
                    for (profile, (score, threshold)) in s {
                        println!("{detector} {profile}: {score:.2} (threshold {threshold})");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Routes {
            cmd: RoutesCmd::Check { file },
        } => {
            println!("Checking {}", file.display());
            match telltale_aggregator::alerting::config::RoutingConfig::load(&file) {
                Ok(c) => {
                    println!(
                        "  SUCCESS: {} receivers, {} routes, {} inhibit rules, {} time intervals, {} escalation policies, {} topology services",
                        c.receivers.len(),
                        c.route.walk().len(),
                        c.inhibit_rules.len(),
                        c.time_intervals.len(),
                        c.escalation_policies.len(),
                        c.correlation.services.len()
                    );
                    for w in &c.warnings {
                        println!("  WARNING: {w}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("  FAILED:\n{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::CheckConfig(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            let routing = match telltale_aggregator::reload::Alerting::load(&cfg) {
                Ok(a) => a.routing,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = report_receivers(&cfg, &routing) {
                eprintln!("telltale-aggregator: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = telltale_aggregator::api::ui::load_dashboards(cfg.dashboards.as_deref())
            {
                eprintln!("telltale-aggregator: {e}");
                return ExitCode::from(2);
            }
            let tls = telltale_common::tls::TlsPaths {
                ca: cfg.tls_dir.join("ca.crt"),
                cert: cfg.tls_dir.join("server.crt"),
                key: cfg.tls_dir.join("server.key"),
            };
            if let Some((cert, key, ca)) = &cfg.http_tls
                && let Err(e) =
                    telltale_aggregator::serve::https::server_config(cert, key, ca.as_deref())
            {
                eprintln!("telltale-aggregator: HTTPS: {e:#}");
                return ExitCode::from(2);
            }
            match tls.load().and_then(|m| m.server_config()) {
                Ok(_) => {
                    println!("configuration OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Serve(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            let alerting = match telltale_aggregator::reload::Alerting::load(&cfg) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = report_receivers(&cfg, &alerting.routing) {
                eprintln!("telltale-aggregator: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = telltale_aggregator::api::ui::load_dashboards(cfg.dashboards.as_deref())
            {
                eprintln!("telltale-aggregator: {e}");
                return ExitCode::from(2);
            }
            // Before anything in the data directory is read or written: a second `serve` on
            // the same directory must not replay the live WAL or touch its segments.
            let _lock = match telltale_common::lockfile::lock_dir(
                &cfg.data_dir,
                "telltale-aggregator serve",
            ) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some((cert, key, ca)) = &cfg.http_tls
                && let Err(e) =
                    telltale_aggregator::serve::https::server_config(cert, key, ca.as_deref())
            {
                eprintln!("telltale-aggregator: HTTPS: {e:#}");
                return ExitCode::from(2);
            }
            telltale_common::logging::init_with(log_format.unwrap_or_default());
            // Queries and rules are evaluated on the runtime's threads: they get the stack the
            // evaluator's depth bound is sized for.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(telltale_aggregator::metrics::promql::SERVER_THREAD_STACK)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("telltale-aggregator: cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(telltale_aggregator::serve::serve(cfg, alerting)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("telltale-aggregator: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Feeds `series` fresh models of `method` enough points to fill them, then `points` more
/// each, round-robin as a live detector would; returns the fill, the seconds the measured
/// points took (thread CPU time) and the models' heap bytes.
fn anomaly_cost(
    method: &telltale_aggregator::anomaly::method::Method,
    series: usize,
    points: usize,
    rising: bool,
) -> (usize, f64, usize) {
    use telltale_aggregator::anomaly::method::Method;
    let fill = match method {
        Method::Knn(p) => p.memory + p.window + 10,
        // Past the values it re-learns from, and long enough for its counts to settle.
        Method::Context(p) => p.relearn + 3000,
        _ => 600,
    };
    let value = |s: usize, i: usize| {
        let jitter = ((i * 7919 + s * 31) % 17) as f64 * 0.1;
        if rising {
            // A counter's value: a steady rate with jitter, a short scrape gap (NaN) now
            // and then, and a reset every 20 000 points; series are staggered so the measured
            // points are past the fill's maximum (each one widens the range), and some of
            // them reset.
            if (i + s) % 997 < 2 {
                return f64::NAN;
            }
            return ((i + 2 * s) % 20_000) as f64 * 5.0 + jitter;
        }
        let x = (i as f64 / 30.0 + s as f64).sin() * 10.0 + 50.0;
        x + jitter
    };
    let mut models: Vec<_> = (0..series).map(|_| method.build()).collect();
    for i in 0..fill {
        for (s, m) in models.iter_mut().enumerate() {
            m.update(i as i64 * 10_000, value(s, i));
        }
    }
    // This thread's time on a CPU (ns, the first field of its schedstat).
    let cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9)
    };
    let start = cpu();
    for i in fill..fill + points {
        for (s, m) in models.iter_mut().enumerate() {
            m.update(i as i64 * 10_000, value(s, i));
        }
    }
    let secs = cpu() - start;
    let bytes = models.iter().map(|m| m.bytes()).sum();
    (fill, secs, bytes)
}

/// `anomaly forecast-eval`: see its help.
fn forecast_eval(dir: &std::path::Path) -> Result<(), telltale_aggregator::anomaly::nab::NabError> {
    use telltale_aggregator::anomaly::{forecast, nab};
    const DAY: i64 = 86_400_000;
    let (mut hw_all, mut pl_all, mut hw_better) = (Vec::new(), Vec::new(), 0usize);
    let mut one = |name: &str, values: &[f64], step_ms: i64| {
        let per_day = (DAY / step_ms.max(1)) as usize;
        let horizon = per_day.min(values.len() / 5).max(1);
        let window = (6 * 3_600_000 / step_ms.max(1)) as usize;
        if let Some((hw, pl)) = forecast::held_back(values, per_day, horizon, window) {
            println!(
                "{name:<60} horizon {horizon:>4}  holt-winters {hw:8.2} %  predict_linear[6h] {pl:8.2} %"
            );
            hw_all.push(hw);
            pl_all.push(pl);
            hw_better += usize::from(hw < pl);
        }
    };
    for file in nab::windows(dir)?.keys() {
        if !(file.starts_with("realAWSCloudwatch/") || file.starts_with("realKnownCause/")) {
            continue;
        }
        let (ts, vs) = nab::read_data(&dir.join("data").join(file))?;
        let t: Vec<i64> = ts.iter().filter_map(|t| nab::timestamp_ms(t)).collect();
        // The step: the most common gap.
        let mut gaps: Vec<i64> = t
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|g| *g > 0)
            .collect();
        gaps.sort_unstable();
        let step = gaps.get(gaps.len() / 2).copied().unwrap_or(300_000);
        one(file, &vs, step);
    }
    // A disk filling 2 GB an hour from 500 GB, with a nightly rotation freeing 5 GB and
    // noise, at 5 minutes: 8 days seen, the 9th forecast.
    let disk: Vec<f64> = (0..288 * 9)
        .map(|i| {
            let day = i / 288;
            let noise = ((i * 7919) % 101) as f64 / 100.0 - 0.5;
            500e9 - 2e9 * i as f64 / 12.0 + 5e9 * day as f64 + noise * 1e9
        })
        .collect();
    one("scenario: disk fill (avail bytes)", &disk, 300_000);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let n = hw_all.len();
    let (hw_mean, pl_mean) = (
        hw_all.iter().sum::<f64>() / n.max(1) as f64,
        pl_all.iter().sum::<f64>() / n.max(1) as f64,
    );
    let (hw_med, pl_med) = (median(&mut hw_all), median(&mut pl_all));
    println!(
        "{n} series: median MAPE holt-winters {hw_med:.2} % vs predict_linear[6h] {pl_med:.2} % (ratio {:.2}); mean {hw_mean:.1} % vs {pl_mean:.1} %; holt-winters better on {hw_better} of {n}",
        hw_med / pl_med.max(1e-12)
    );
    Ok(())
}
