//! What both binaries offer about themselves: shell completions (`completions bash|zsh|fish`)
//! and a man page (`man`, hidden: the packages install its output), both generated from the
//! clap definition, so they cannot drift from the flags.

use std::io::Write;

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// Writes `shell`'s completion script for `cmd` to stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, &mut out)
        }
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, &mut out),
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, name, &mut out)
        }
    }
    std::io::stdout().write_all(&out)
}

/// Writes the man page (section 1) of `cmd` to stdout: the command and, for each subcommand,
/// its own section with its flags.
pub fn man(cmd: clap::Command) -> std::io::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut s = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut s)?;
        if !s.is_empty() {
            writeln!(
                out,
                ".SH \"{}\"",
                format!("{} {}", cmd.get_name(), sub.get_name()).to_uppercase()
            )?;
            if let Some(about) = sub.get_about() {
                writeln!(out, "{about}")?;
            }
            // The options section's own heading is dropped: this section names the command.
            let text = String::from_utf8_lossy(&s).replacen(".SH OPTIONS\n", "", 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
    std::io::stdout().write_all(&out)
}

/// What a binary prints about itself instead of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// `completions SHELL`.
    Completions(Shell),
    /// `man`.
    Man,
}

/// Prints `what` for `cmd`: exit 0, or 1 with the error (a closed stdout, say).
pub fn print(cmd: clap::Command, what: Print) -> std::process::ExitCode {
    let r = match what {
        Print::Completions(shell) => completions(cmd, shell),
        Print::Man => man(cmd),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}
