//! The `telltale-agent` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use telltale_agent::config::{Config, Overrides};

/// Telltale host agent: collects host metrics and ships them to the aggregator over QUIC.
#[derive(Parser)]
#[command(name = "telltale-agent", version, about)]
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
    /// Run the agent.
    Run(RunArgs),
    /// Validate the configuration and the TLS files it names, then exit.
    CheckConfig(RunArgs),
    /// Run the host collectors once and print what they read, in the Prometheus text format
    /// (compare it with node_exporter's `/metrics`); sends nothing.
    Collect(CollectArgs),
}

#[derive(clap::Args)]
struct CollectArgs {
    /// Also run the opt-in `tcpstat` collector.
    #[arg(long)]
    tcpstat: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file (TOML); flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Agent name (must match the certificate's common name).
    #[arg(long)]
    name: Option<String>,
    /// Aggregator address, HOST:PORT.
    #[arg(long)]
    aggregator: Option<String>,
    /// Data directory (the buffer lives here).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CA certificate file.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Agent certificate file.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Agent key file.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Collection interval (humantime: 10s, 1s).
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
}

impl RunArgs {
    fn config(&self) -> Result<Config, telltale_common::config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                name: self.name.clone(),
                aggregator: self.aggregator.clone(),
                data_dir: self.data_dir.clone(),
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                interval: self.interval,
            },
        )
    }
}

fn collect_once(a: &CollectArgs) -> ExitCode {
    use telltale_agent::sources::host;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = host::Out::new(now);
    let optional = host::Optional { tcpstat: a.tcpstat };
    host::collect_all(&host::Root::default(), optional, &mut out);
    print!("{}", host::exposition(&out.series));
    for (c, e) in &out.errors {
        eprintln!("collector {c} failed: {e}");
    }
    ExitCode::SUCCESS
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
    let (args, check_only) = match cli.cmd {
        Cmd::Run(a) => (a, false),
        Cmd::CheckConfig(a) => (a, true),
        Cmd::Collect(a) => return collect_once(&a),
        Cmd::Completions { .. } | Cmd::Man => return ExitCode::SUCCESS,
    };
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telltale-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        return match cfg.tls.load().and_then(|m| m.client_config()) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("telltale-agent: {e}");
                ExitCode::from(2)
            }
        };
    }
    // Before the buffer is opened: a second agent on the same data directory stops here,
    // naming the first, instead of touching its buffer.
    let _lock = match telltale_common::lockfile::lock_dir(&cfg.data_dir, "telltale-agent run") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("telltale-agent: {e}");
            return ExitCode::from(2);
        }
    };
    telltale_agent::run::memory::one_arena();
    telltale_common::logging::init_with(log_format.unwrap_or_default());
    // One thread is plenty for an agent and keeps its footprint small.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telltale-agent: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let reload = || args.config();
    match rt.block_on(telltale_agent::run::run_with_reload(cfg, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telltale-agent: {e:#}");
            // A buffer or journal that cannot be opened (held, no permission) is a start-up
            // error like a bad configuration: exit 2, as systemd's unit expects for those.
            let startup = e
                .downcast_ref::<telltale_agent::buffer::BufferError>()
                .is_some_and(|b| matches!(b, telltale_agent::buffer::BufferError::Open(_)))
                || e.downcast_ref::<telltale_agent::remediate::ExecError>()
                    .is_some_and(|x| {
                        use telltale_agent::remediate::ExecError;
                        matches!(x, ExecError::Open(_) | ExecError::Store(_))
                    });
            ExitCode::from(if startup { 2 } else { 1 })
        }
    }
}
