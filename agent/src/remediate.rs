//! Remediation on the host: runs only the actions of the agent's own allowlist (`[[action]]`
//! in agent.toml) when the aggregator asks, and reports what happened.
//!
//! The aggregator can name an action and pass parameters — nothing else. An action is an argv
//! (the program by absolute path, never a shell), a working directory, an environment (the
//! agent's own is not inherited), a timeout, optionally a user to switch to, and parameters each
//! with a validation pattern (anchored) and a length limit; `{param}` in the argv is replaced by
//! the validated value, inside one argument (it can never split into several). Limits: runs at
//! once and runs per period, per action. No `[[action]]` → the agent does not even announce the
//! capability, and every command is refused.
//!
//! Every command runs at most once: its id and result are written to sled
//! (`DATA_DIR/remediation`) before the result is reported, and a command seen before is
//! answered with the stored result without running again. Results wait there until the
//! aggregator acknowledges them, so a result survives a lost connection or a restart. Every
//! request, refusal and result is also an audit event shipped with the agent's batches
//! (`kind="remediation"`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use telltale_common::config::{Invalid, humantime_duration_opt};
use telltale_common::model::now_ms;
use telltale_common::wire::{Command, CommandResult, Event};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc};

use crate::pipeline::SourceBatch;

/// How long acknowledged results are kept.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Most bytes kept of an action's stdout and of its stderr (the tail).
pub const TAIL_BYTES: usize = 4096;

/// `[[action]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSection {
    /// Name the aggregator uses.
    pub name: String,
    /// Program (absolute path) and arguments; `{param}` is replaced by a validated parameter.
    pub argv: Vec<String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Environment of the program (nothing else is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Longest run before it is killed (default `30s`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub timeout: Option<Duration>,
    /// User to run as (the agent must run as root to switch).
    #[serde(default)]
    pub user: Option<String>,
    /// Runs at once (default 1).
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// Runs per `per` (default 6).
    #[serde(default)]
    pub max_runs: Option<usize>,
    /// The rate period (default `1h`).
    #[serde(default, deserialize_with = "humantime_duration_opt")]
    pub per: Option<Duration>,
    /// Parameters.
    #[serde(default)]
    pub param: Vec<ParamSection>,
}

/// `[[action.param]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSection {
    /// Name (`{name}` in the argv).
    pub name: String,
    /// Regex the whole value must match.
    pub pattern: String,
    /// Longest value in bytes (default 64).
    #[serde(default)]
    pub max_len: Option<usize>,
}

/// A validated parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Anchored pattern.
    pub pattern: regex_lite::Regex,
    /// Longest value.
    pub max_len: usize,
}

/// A validated action.
#[derive(Debug, Clone)]
pub struct Action {
    /// Name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory.
    pub workdir: PathBuf,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Timeout.
    pub timeout: Duration,
    /// (uid, gid) to switch to.
    pub user: Option<(u32, u32)>,
    /// Runs at once.
    pub max_concurrent: usize,
    /// Runs per period.
    pub max_runs: usize,
    /// The period.
    pub per: Duration,
    /// Parameters.
    pub params: Vec<Param>,
}

fn user_ids(name: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            let uid = f[2].parse().map_err(|_| format!("bad uid for {name}"))?;
            let gid = f[3].parse().map_err(|_| format!("bad gid for {name}"))?;
            return Ok((uid, gid));
        }
    }
    Err(format!("no user {name:?}"))
}

impl ActionSection {
    /// Validates into an [`Action`]; the error names what is wrong.
    pub fn validate(self) -> Result<Action, Invalid> {
        let at = |m: String| format!("action {:?}: {m}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(at("name: use A-Z a-z 0-9 - _ .".into()).into());
        }
        let Some(prog) = self.argv.first() else {
            return Err(at("argv is empty".into()).into());
        };
        if !prog.starts_with('/') || prog.contains('{') {
            return Err(at(format!(
                "argv[0] {prog:?} must be an absolute path (no PATH lookup, no parameter)"
            ))
            .into());
        }
        let mut params = Vec::new();
        for p in &self.param {
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(at(format!("param name {:?}: use A-Z a-z 0-9 _", p.name)).into());
            }
            let pattern = regex_lite::Regex::new(&format!("^(?:{})$", p.pattern))
                .map_err(|e| at(format!("param {:?}: pattern: {e}", p.name)))?;
            params.push(Param {
                name: p.name.clone(),
                pattern,
                max_len: p.max_len.unwrap_or(64),
            });
        }
        for a in &self.argv {
            let mut rest = a.as_str();
            while let Some(i) = rest.find('{') {
                let Some(j) = rest[i..].find('}') else { break };
                let n = &rest[i + 1..i + j];
                if !params.iter().any(|p| p.name == n) {
                    return Err(
                        at(format!("argv uses {{{n}}}, which is not a declared param")).into(),
                    );
                }
                rest = &rest[i + j + 1..];
            }
        }
        let user = match &self.user {
            Some(u) => Some(user_ids(u).map_err(at)?),
            None => None,
        };
        Ok(Action {
            argv: self.argv.clone(),
            workdir: self.workdir.clone().unwrap_or_else(|| "/".into()),
            env: self.env.clone(),
            timeout: self.timeout.unwrap_or(Duration::from_secs(30)),
            user,
            max_concurrent: self.max_concurrent.unwrap_or(1).max(1),
            max_runs: self.max_runs.unwrap_or(6).max(1),
            per: self.per.unwrap_or(Duration::from_secs(3600)),
            params,
            name: self.name,
        })
    }
}

/// Why a command does not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The action is not in the allowlist.
    #[error("action {0:?} is not in this agent's allowlist")]
    UnknownAction(String),
    /// A parameter the action does not declare.
    #[error("parameter {0:?} is not declared by the action")]
    UnknownParam(String),
    /// A declared parameter is missing.
    #[error("parameter {0:?} is missing")]
    MissingParam(String),
    /// A value fails its checks.
    #[error("parameter {name:?} refused: {why}")]
    InvalidParam {
        /// The parameter.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Too many runs of the action in its period.
    #[error("rate limit: {0} runs of this action in the last {1}")]
    Rate(usize, String),
    /// Too many runs at once.
    #[error("concurrency limit: {0} runs of this action already running")]
    Busy(usize),
    /// The deadline passed before it could start.
    #[error("deadline passed before the command could start")]
    Expired,
}

/// Checks `params` against `action`; returns the argv with values in place.
pub fn build_argv(action: &Action, params: &[(String, String)]) -> Result<Vec<String>, Refusal> {
    let mut vals: HashMap<&str, &str> = HashMap::new();
    for (k, v) in params {
        let Some(p) = action.params.iter().find(|p| p.name == *k) else {
            return Err(Refusal::UnknownParam(k.clone()));
        };
        let bad = |why: &str| Refusal::InvalidParam {
            name: p.name.clone(),
            why: why.to_string(),
        };
        if v.len() > p.max_len {
            return Err(bad(&format!(
                "{} bytes, longer than {}",
                v.len(),
                p.max_len
            )));
        }
        if v.chars().any(|c| c.is_control()) {
            return Err(bad("control character (newline, NUL, ...)"));
        }
        if !p.pattern.is_match(v) {
            return Err(bad(&format!("{v:?} does not match {}", p.pattern.as_str())));
        }
        vals.insert(p.name.as_str(), v.as_str());
    }
    for p in &action.params {
        if !vals.contains_key(p.name.as_str()) {
            return Err(Refusal::MissingParam(p.name.clone()));
        }
    }
    Ok(action.argv.iter().map(|a| expand(a, &vals)).collect())
}

/// Replaces `{name}` in one pass: an inserted value is never scanned again, so a value that
/// looks like `{other}` stays literal.
fn expand(template: &str, vals: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after
            .find('}')
            .and_then(|j| vals.get(&after[..j]).map(|v| (j, v)))
        {
            Some((j, v)) => {
                out.push_str(v);
                rest = &after[j + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Default)]
struct Limits {
    running: HashMap<String, usize>,
    starts: HashMap<String, VecDeque<i64>>,
}

/// Runs commands of the allowlist.
pub struct Executor {
    actions: HashMap<String, Action>,
    db: sled::Tree,
    limits: Mutex<Limits>,
    /// Commands running now.
    in_flight: Mutex<std::collections::HashSet<String>>,
    /// Signalled when a result waits to be sent.
    pub ready: Notify,
    audit: mpsc::Sender<SourceBatch>,
}

/// Executor errors.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The journal could not be opened.
    #[error("remediation journal: {0}")]
    Open(#[from] telltale_common::store::StoreError),
    /// The journal failed to read or write.
    #[error("remediation journal: {0}")]
    Store(#[from] sled::Error),
    /// A result could not be encoded for the journal (a bug, not a disk problem).
    #[error("remediation journal: cannot encode a result: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

fn keep_tail(mut b: Vec<u8>) -> String {
    if b.len() > TAIL_BYTES {
        b.drain(..b.len() - TAIL_BYTES);
    }
    String::from_utf8_lossy(&b).into_owned()
}

impl Executor {
    /// The names of the allowlist's actions, sorted.
    pub fn action_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.actions.keys().cloned().collect();
        v.sort();
        v
    }

    /// Opens the state in `dir`; `audit` takes the audit events into the agent's batches.
    pub fn open(
        actions: Vec<Action>,
        dir: &std::path::Path,
        audit: mpsc::Sender<SourceBatch>,
    ) -> Result<Executor, ExecError> {
        // A damaged journal is moved aside (a command it knew is still refused by its own
        // deadline); one held by another process or unreadable is a start-up error.
        let db = telltale_common::store::open_or_replace(dir, "remediation journal", |d| {
            sled::Config::new()
                .path(d)
                .cache_capacity(256 * 1024)
                .open()
        })?
        .db
        .open_tree("commands")?;
        // Acknowledged results older than a week are forgotten: a command's deadline (minutes)
        // refuses any replay of one that old anyway.
        let horizon = now_ms() - KEEP_MS;
        for (k, v) in db.scan_prefix("c/").filter_map(|r| r.ok()) {
            if let Ok((r, true, at)) = rmp_serde::from_slice::<(CommandResult, bool, i64)>(&v)
                && at < horizon
            {
                let _ = db.remove(&k);
                let _ = db.remove(format!("s/{}", r.id));
            }
        }
        Ok(Executor {
            actions: actions.into_iter().map(|a| (a.name.clone(), a)).collect(),
            db,
            limits: Mutex::new(Limits::default()),
            in_flight: Mutex::new(Default::default()),
            ready: Notify::new(),
            audit,
        })
    }

    async fn audit(&self, cmd: &Command, status: &str, message: String) {
        let e = Event {
            t_ms: now_ms(),
            kind: "remediation".into(),
            labels: vec![
                ("action".into(), cmd.action.clone()),
                ("command_id".into(), cmd.id.clone()),
                ("status".into(), status.into()),
            ],
            message,
        };
        let b = SourceBatch {
            exemplars: Vec::new(),
            source: Arc::from("remediation"),
            relabel: Arc::from(Vec::new()),
            series: Vec::new(),
            events: vec![e],
        };
        if self.audit.send(b).await.is_err() {
            tracing::warn!("audit event not shipped: the pipeline is closed");
        }
    }

    fn stored(&self, id: &str) -> Option<(CommandResult, bool)> {
        let v = self.db.get(format!("c/{id}")).ok()??;
        let (r, acked, _): (CommandResult, bool, i64) = rmp_serde::from_slice(&v).ok()?;
        Some((r, acked))
    }

    fn store(&self, r: &CommandResult, acked: bool) -> Result<(), ExecError> {
        let v = rmp_serde::to_vec(&(r, acked, now_ms()))?;
        self.db.insert(format!("c/{}", r.id), v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Results not yet acknowledged by the aggregator.
    pub fn pending(&self) -> Vec<CommandResult> {
        self.db
            .scan_prefix("c/")
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| rmp_serde::from_slice::<(CommandResult, bool, i64)>(&v).ok())
            .filter(|(_, acked, _)| !acked)
            .map(|(r, _, _)| r)
            .collect()
    }

    /// The aggregator has the result of `id`.
    pub fn ack(&self, id: &str) {
        if let Some((r, false)) = self.stored(id)
            && let Err(e) = self.store(&r, true)
        {
            tracing::warn!(error = %e, "cannot mark a command result acknowledged");
        }
    }

    fn check(&self, cmd: &Command, now: i64) -> Result<(Vec<String>, Action), Refusal> {
        let action = self
            .actions
            .get(&cmd.action)
            .ok_or_else(|| Refusal::UnknownAction(cmd.action.clone()))?;
        let argv = build_argv(action, &cmd.params)?;
        if now > cmd.deadline_ms {
            return Err(Refusal::Expired);
        }
        Ok((argv, action.clone()))
    }

    /// Takes a command: refuses, dry-runs or runs it, stores and reports the result. A command
    /// id seen before is answered with its stored result and not run again.
    pub async fn handle(&self, cmd: Command) -> Result<(), ExecError> {
        if let Some((r, _)) = self.stored(&cmd.id) {
            self.audit(
                &cmd,
                "replayed",
                format!(
                    "command {} was seen before: not run again ({})",
                    cmd.id, r.status
                ),
            )
            .await;
            // Resend the stored result, in case the first report was lost.
            self.store(&r, false)?;
            self.ready.notify_one();
            return Ok(());
        }
        // Started before and never finished: running now, or the agent stopped mid-run. Either
        // way it must not start again.
        if self
            .db
            .contains_key(format!("s/{}", cmd.id))
            .unwrap_or(false)
        {
            let running = self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&cmd.id);
            if running {
                self.audit(
                    &cmd,
                    "replayed",
                    format!("command {} is running: not run again", cmd.id),
                )
                .await;
                return Ok(());
            }
            let r = CommandResult {
                id: cmd.id.clone(),
                status: "error".into(),
                reason: "the agent stopped while the command ran; not run again".into(),
                exit_code: None,
                started_ms: 0,
                duration_ms: 0,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            };
            self.store(&r, false)?;
            self.audit(&cmd, "error", r.reason.clone()).await;
            self.ready.notify_one();
            return Ok(());
        }
        let now = now_ms();
        let params: Vec<String> = cmd
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        self.audit(
            &cmd,
            "requested",
            format!("requested {} {}", cmd.action, params.join(" ")),
        )
        .await;
        let mut result = CommandResult {
            id: cmd.id.clone(),
            status: String::new(),
            reason: String::new(),
            exit_code: None,
            started_ms: 0,
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        };
        let checked = self.check(&cmd, now).and_then(|(argv, action)| {
            let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            let per = action.per.as_millis() as i64;
            let starts = l.starts.entry(action.name.clone()).or_default();
            while starts.front().is_some_and(|t| now - t >= per) {
                starts.pop_front();
            }
            if starts.len() >= action.max_runs {
                return Err(Refusal::Rate(
                    starts.len(),
                    humantime::format_duration(action.per).to_string(),
                ));
            }
            let running = l.running.get(&action.name).copied().unwrap_or(0);
            if running >= action.max_concurrent {
                return Err(Refusal::Busy(running));
            }
            if !cmd.dry_run {
                l.starts
                    .entry(action.name.clone())
                    .or_default()
                    .push_back(now);
                *l.running.entry(action.name.clone()).or_default() += 1;
            }
            Ok((argv, action))
        });
        match checked {
            Err(r) => {
                result.status = if r == Refusal::Expired {
                    "expired"
                } else {
                    "refused"
                }
                .into();
                result.reason = r.to_string();
            }
            Ok((argv, _)) if cmd.dry_run => {
                result.status = "dry_run".into();
                result.reason = format!("would run {argv:?}");
            }
            Ok((argv, action)) => {
                // Marked started (durably) before it starts: see above.
                self.db
                    .insert(format!("s/{}", cmd.id), &[][..])
                    .and_then(|_| self.db.flush())?;
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(cmd.id.clone());
                run(&action, &argv, &mut result).await;
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&cmd.id);
                let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = l.running.get_mut(&action.name) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // Durable before it is reported: a replay after this point never runs it again.
        self.store(&result, false)?;
        let msg = match result.status.as_str() {
            "succeeded" | "failed" => format!(
                "{} exited {} after {} ms",
                cmd.action,
                result.exit_code.map_or("?".into(), |c| c.to_string()),
                result.duration_ms
            ),
            _ => format!("{}: {}", result.status, result.reason),
        };
        self.audit(&cmd, &result.status, msg).await;
        self.ready.notify_one();
        Ok(())
    }

    /// Whether any action is configured.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

fn spawn_reader(
    mut s: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
            b.extend_from_slice(&chunk[..n]);
            // Keep the tail only: a chatty program cannot fill the agent's memory.
            if b.len() > 2 * TAIL_BYTES {
                let cut = b.len() - TAIL_BYTES;
                b.drain(..cut);
            }
        }
    })
}

async fn run(action: &Action, argv: &[String], r: &mut CommandResult) {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&action.env)
        .current_dir(&action.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = action.user {
        cmd.uid(uid).gid(gid);
    }
    let started = std::time::Instant::now();
    r.started_ms = now_ms();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            r.status = "error".into();
            r.reason = format!("cannot start {}: {e}", argv[0]);
            return;
        }
    };
    // Output is read as it comes; after the process exits, what its pipes still hold is
    // taken within a short grace: a program that leaves a daemon behind holding the pipes
    // must not make the run look hung.
    let out_buf = Arc::new(Mutex::new(Vec::new()));
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| spawn_reader(s, out_buf.clone())),
        child
            .stderr
            .take()
            .map(|s| spawn_reader(s, err_buf.clone())),
    ];
    let status = tokio::time::timeout(action.timeout, child.wait()).await;
    for h in readers.into_iter().flatten() {
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_millis(200), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| {
        keep_tail(std::mem::take(
            &mut *b.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    };
    r.stdout_tail = take(&out_buf);
    r.stderr_tail = take(&err_buf);
    match status {
        Ok(Ok(s)) => {
            r.exit_code = s.code();
            r.status = if s.success() { "succeeded" } else { "failed" }.into();
            if s.code().is_none() {
                r.reason = "killed by a signal".into();
            }
        }
        Ok(Err(e)) => {
            r.status = "error".into();
            r.reason = e.to_string();
        }
        Err(_) => {
            let _ = child.kill().await;
            r.status = "timeout".into();
            r.reason = format!(
                "killed after {}",
                humantime::format_duration(action.timeout)
            );
        }
    }
    r.duration_ms = started.elapsed().as_millis() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(toml_text: &str) -> Action {
        let a: ActionSection = toml::from_str(toml_text).unwrap();
        a.validate().unwrap()
    }

    fn cmd(id: &str, action: &str, params: &[(&str, &str)]) -> Command {
        Command {
            id: id.into(),
            action: action.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deadline_ms: now_ms() + 60_000,
            dry_run: false,
        }
    }

    fn executor(
        dir: &std::path::Path,
        actions: Vec<Action>,
    ) -> (Executor, mpsc::Receiver<SourceBatch>) {
        let (tx, rx) = mpsc::channel(100);
        (Executor::open(actions, &dir.join("state"), tx).unwrap(), rx)
    }

    fn touch_action(dir: &std::path::Path) -> Action {
        action(&format!(
            "name = \"mark\"\nargv = [\"/usr/bin/touch\", \"{}/{{file}}\"]\nmax_runs = 3\n[[param]]\nname = \"file\"\npattern = \"[a-z0-9-]+\"\nmax_len = 16\n",
            dir.display()
        ))
    }

    fn result(e: &Executor, id: &str) -> CommandResult {
        e.stored(id).unwrap().0
    }

    #[tokio::test]
    async fn dangerous_parameters_are_refused_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (e, mut audit) = executor(dir.path(), vec![touch_action(dir.path())]);
        let cases = [
            ("a", "x; rm -rf /", "does not match"),
            ("b", "$(reboot)", "does not match"),
            ("c", "../../etc/passwd", "does not match"),
            ("d", "ok\nsecond", "control character"),
            ("e", "aaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 16"),
            ("f", "`id`", "does not match"),
        ];
        for (id, v, why) in cases {
            e.handle(cmd(id, "mark", &[("file", v)])).await.unwrap();
            let r = result(&e, id);
            assert_eq!(r.status, "refused", "{v:?}");
            assert!(r.reason.contains(why), "{v:?}: {}", r.reason);
        }
        e.handle(cmd("g", "rm", &[])).await.unwrap();
        assert!(
            result(&e, "g")
                .reason
                .contains("not in this agent's allowlist")
        );
        e.handle(cmd("h", "mark", &[("file", "x"), ("extra", "1")]))
            .await
            .unwrap();
        assert!(result(&e, "h").reason.contains("not declared"));
        e.handle(cmd("i", "mark", &[])).await.unwrap();
        assert!(result(&e, "i").reason.contains("missing"));
        let mut expired = cmd("j", "mark", &[("file", "late")]);
        expired.deadline_ms = now_ms() - 1;
        e.handle(expired).await.unwrap();
        assert_eq!(result(&e, "j").status, "expired");
        // Nothing was created.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|x| x.ok())
            .map(|x| x.file_name())
            .filter(|n| n != "state")
            .collect();
        assert!(files.is_empty(), "{files:?}");
        // Each request and refusal is audited.
        let mut statuses = Vec::new();
        while let Ok(b) = audit.try_recv() {
            for ev in b.events {
                statuses.push(
                    ev.labels
                        .iter()
                        .find(|l| l.0 == "status")
                        .map(|l| l.1.clone())
                        .unwrap_or_default(),
                );
            }
        }
        assert_eq!(
            statuses.iter().filter(|s| *s == "refused").count(),
            9,
            "{statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| *s == "expired").count(), 1);
        assert_eq!(statuses.iter().filter(|s| *s == "requested").count(), 10);
    }

    #[tokio::test]
    async fn a_command_runs_once_without_a_shell_and_replays_are_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        // Each run makes one new file.
        let a = action(&format!(
            "name = \"echo\"\nargv = [\"/usr/bin/mktemp\", \"-p\", \"{}\"]\n",
            runs.display()
        ));
        let sh = action(
            "name = \"say\"\nargv = [\"/bin/echo\", \"{msg}\"]\n[[param]]\nname = \"msg\"\npattern = \".*\"\n",
        );
        let (e, _audit) = executor(dir.path(), vec![a, sh]);
        e.handle(cmd("1", "echo", &[])).await.unwrap();
        e.handle(cmd("1", "echo", &[])).await.unwrap();
        let r = result(&e, "1");
        assert_eq!((r.status.as_str(), r.exit_code), ("succeeded", Some(0)));
        assert_eq!(
            std::fs::read_dir(&runs).unwrap().count(),
            1,
            "a replayed id does not run again"
        );
        let vals = HashMap::from([("a", "{b}"), ("b", "x")]);
        assert_eq!(
            expand("{a}-{b}-{c}", &vals),
            "{b}-x-{c}",
            "values are not expanded again"
        );
        // A permissive pattern still cannot reach a shell: the value is one argv element.
        e.handle(cmd("2", "say", &[("msg", "$(id) ; echo hacked")]))
            .await
            .unwrap();
        assert_eq!(result(&e, "2").stdout_tail, "$(id) ; echo hacked\n");
        // Results wait for the aggregator's acknowledgement.
        assert_eq!(e.pending().len(), 2);
        e.ack("1");
        e.ack("2");
        assert!(e.pending().is_empty());
    }

    #[tokio::test]
    async fn rate_limits_timeouts_and_dry_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (e, _audit) = executor(
            dir.path(),
            vec![
                touch_action(dir.path()),
                action("name = \"slow\"\nargv = [\"/bin/sleep\", \"5\"]\ntimeout = \"200ms\"\n"),
            ],
        );
        let mut dry = cmd("d", "mark", &[("file", "dry")]);
        dry.dry_run = true;
        e.handle(dry).await.unwrap();
        assert_eq!(result(&e, "d").status, "dry_run");
        assert!(!dir.path().join("dry").exists());
        for i in 0..4 {
            e.handle(cmd(&format!("r{i}"), "mark", &[("file", &format!("f{i}"))]))
                .await
                .unwrap();
        }
        assert_eq!(result(&e, "r2").status, "succeeded");
        let r = result(&e, "r3");
        assert_eq!(r.status, "refused");
        assert!(r.reason.contains("rate limit"), "{}", r.reason);
        assert!(!dir.path().join("f3").exists());
        let t = std::time::Instant::now();
        e.handle(cmd("s", "slow", &[])).await.unwrap();
        assert_eq!(result(&e, "s").status, "timeout");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_program_leaving_a_daemon_on_its_pipes_does_not_look_hung() {
        let dir = tempfile::tempdir().unwrap();
        let (e, _audit) = executor(
            dir.path(),
            vec![action(
                "name = \"bg\"\nargv = [\"/usr/bin/setsid\", \"-f\", \"/bin/sleep\", \"3\"]\ntimeout = \"2s\"\n",
            )],
        );
        let t = std::time::Instant::now();
        e.handle(cmd("bg", "bg", &[])).await.unwrap();
        assert_eq!(result(&e, "bg").status, "succeeded");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_command_interrupted_by_an_agent_stop_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let a = action(&format!(
            "name = \"m\"\nargv = [\"/usr/bin/mktemp\", \"-p\", \"{}\"]\n",
            runs.display()
        ));
        let (e, _audit) = executor(dir.path(), vec![a]);
        // What a crash mid-run leaves: the start mark, no result, nothing running in this
        // process. (Reopening the store in one process races sled's lock, so the mark is
        // written into the open one.)
        e.db.insert("s/x", &[][..]).unwrap();
        e.db.flush().unwrap();
        e.handle(cmd("x", "m", &[])).await.unwrap();
        let r = result(&e, "x");
        assert_eq!(r.status, "error");
        assert!(r.reason.contains("stopped while the command ran"));
        assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    }

    #[test]
    fn bad_actions_are_refused_at_load() {
        for (t, want) in [
            ("name = \"x\"\nargv = []\n", "argv is empty"),
            ("name = \"x\"\nargv = [\"rm\"]\n", "absolute path"),
            (
                "name = \"x\"\nargv = [\"/bin/echo\", \"{nope}\"]\n",
                "not a declared param",
            ),
            ("name = \"x y\"\nargv = [\"/bin/echo\"]\n", "name"),
            (
                "name = \"x\"\nargv = [\"/bin/echo\"]\n[[param]]\nname = \"p\"\npattern = \"(\"\n",
                "pattern",
            ),
            (
                "name = \"x\"\nargv = [\"/bin/echo\"]\nuser = \"no-such-user-here\"\n",
                "no user",
            ),
        ] {
            let a: ActionSection = toml::from_str(t).unwrap();
            let e = a.validate().unwrap_err();
            assert!(e.0.contains(want), "{t}: {e}");
        }
    }
}
