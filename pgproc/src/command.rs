//! The one way to run a PostgreSQL program to completion.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{OsUser, PgBin, Result};

/// How many stderr lines a failure message carries.
const ERROR_TAIL: usize = 20;

/// A PostgreSQL program run with an explicit environment (nothing of ours
/// leaks in, e.g. a PGDATA or PGHOST of the operator's shell), as the
/// PostgreSQL OS user, with its exit status always checked.
pub struct PgCommand {
    program: PathBuf,
    name: String,
    args: Vec<OsString>,
    envs: Vec<(String, OsString)>,
    runner: Option<OsUser>,
    timeout: Option<Duration>,
    death_signal: Option<nix::sys::signal::Signal>,
    stderr_to_terminal: bool,
}

/// What a successful run printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl PgCommand {
    pub fn new(bin: &PgBin, program: &str) -> PgCommand {
        PgCommand {
            program: bin.path(program),
            name: program.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            runner: None,
            timeout: None,
            death_signal: Some(nix::sys::signal::Signal::SIGKILL),
            stderr_to_terminal: false,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.envs.push((k.to_string(), v.into()));
        self
    }

    /// The signal the program gets when pgpilot dies (default SIGKILL);
    /// `None`: it outlives us (a postmaster a later keeper adopts, see
    /// [`crate::server::Lifetime`]).
    pub fn death_signal(mut self, signal: Option<nix::sys::signal::Signal>) -> Self {
        self.death_signal = signal;
        self
    }

    /// Lets the program write to our stderr when that is a terminal (for
    /// progress displays); errors then carry no stderr tail.
    pub fn stderr_to_terminal(mut self) -> Self {
        use std::io::IsTerminal;
        self.stderr_to_terminal = std::io::stderr().is_terminal();
        self
    }

    pub fn is_stderr_terminal(&self) -> bool {
        self.stderr_to_terminal
    }

    pub fn user(mut self, runner: &Option<OsUser>) -> Self {
        self.runner = runner.clone();
        self
    }

    /// Kills the program and fails after this long.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// A `tokio::process::Command` with the explicit environment and user.
    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            // Messages we parse (pg_controldata) must not be translated.
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .current_dir("/")
            .stdin(Stdio::null());
        match &self.runner {
            Some(u) => {
                // std drops root's supplementary groups itself when it
                // switches uid (setgroups(0) before setuid).
                cmd.uid(u.uid)
                    .gid(u.gid)
                    .env("HOME", "/")
                    .env("USER", &u.name);
            }
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    cmd.env("HOME", home);
                }
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        // Nothing we start may outlive us, unless asked (a postmaster that
        // a later keeper adopts: see `server::Lifetime` for what guards a
        // primary then). A pg_basebackup or pg_rewind left running would
        // write into a directory the restarted keeper clears; a postmaster
        // of the monitor, or of a keeper configured so, must die with it.
        // std runs this after it switched uid (which would clear the
        // setting), right before exec. The signal fires when the spawning
        // *thread* exits; we spawn from tokio worker threads, which live as
        // long as the runtime, i.e. the process.
        if let Some(signal) = self.death_signal {
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)
                });
            }
        }
        cmd
    }

    /// Runs to completion; an error carries the last stderr lines.
    pub async fn run(self) -> Result<Output> {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(if self.stderr_to_terminal {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.program.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take();
        let name = self.name.clone();
        let out_task = tokio::spawn(collect(stdout, name.clone(), usize::MAX));
        let err_task = tokio::spawn(async move {
            match stderr {
                Some(s) => collect(s, name.clone(), usize::MAX).await,
                None => Vec::new(),
            }
        });
        let name = self.name.clone();
        let status = match self.timeout {
            Some(t) => match tokio::time::timeout(t, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(anyhow!("{name} did not finish within {} s", t.as_secs()).into());
                }
            },
            None => child.wait().await,
        }
        .with_context(|| format!("wait for {name}"))?;
        let stdout = out_task.await.context("join stdout reader")?.join("\n");
        let stderr_lines = err_task.await.context("join stderr reader")?;
        if !status.success() {
            let tail: Vec<_> = stderr_lines
                .iter()
                .rev()
                .take(ERROR_TAIL)
                .rev()
                .cloned()
                .collect();
            return Err(anyhow!("{name} failed ({status}): {}", tail.join("\n")).into());
        }
        Ok(Output {
            stdout,
            stderr: stderr_lines.join("\n"),
        })
    }
}

/// Reads lines, forwards them to tracing at debug, keeps the last `keep`.
async fn collect(r: impl tokio::io::AsyncRead + Unpin, name: String, keep: usize) -> Vec<String> {
    let mut lines = BufReader::new(r).lines();
    let mut kept = VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = crate::log::redact_passwords(&line);
        tracing::debug!(target: "pg", program = %name, "{line}");
        if kept.len() == keep {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    kept.into()
}
