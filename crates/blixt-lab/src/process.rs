//! [`LabProcess`]: a child process that is killed and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::sys;

/// How long [`Drop`] lets a process handle SIGTERM before it sends SIGKILL.
const DROP_GRACE: Duration = Duration::from_millis(1000);

/// A child process (usually started with [`crate::NetNs::spawn`]) in a process group of its
/// own. Its stdout is read line by line on a helper thread; stderr is inherited.
///
/// On drop the whole group gets SIGTERM, then SIGKILL if it has not exited within a second,
/// and the child is reaped, so a failing test leaves no process behind.
#[derive(Debug)]
pub struct LabProcess {
    label: String,
    child: Child,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl LabProcess {
    /// Spawns `cmd` with stdout captured, stdin closed and a new process group. `label` names
    /// the process in error messages.
    pub fn spawn(label: impl Into<String>, mut cmd: Command) -> Result<Self> {
        let label = label.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::channel();
        let reader = thread::Builder::new()
            .name("lab-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawning stdout reader thread")?;
        Ok(LabProcess {
            label,
            child,
            lines,
            reader: Some(reader),
            status: None,
        })
    }

    /// The child's pid (also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What this process is, as given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The next line the process writes to stdout, waiting at most `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{}: no output line within {timeout:?}", self.label)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.try_wait()?;
                bail!("{}: stdout closed (exit status {status:?})", self.label)
            }
        }
    }

    /// Skips stdout lines until one satisfies `pred`, waiting at most `timeout` in all.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line(left)
                .with_context(|| format!("waiting {timeout:?} for a matching line"))?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.label))?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit by itself and returns its status and
    /// all stdout lines not read yet.
    pub fn wait_output(mut self, timeout: Duration) -> Result<(ExitStatus, Vec<String>)> {
        let status = self
            .wait_timeout(timeout)?
            .ok_or_else(|| anyhow!("{} did not exit within {timeout:?}", self.label))?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok((status, self.lines.try_iter().collect()))
    }

    /// Sends SIGTERM to the process group, waits up to `grace` for it to exit, then sends
    /// SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let _ = sys::kill_group(self.id(), libc::SIGTERM);
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.kill()
    }

    /// Sends SIGKILL to the process group and reaps the child.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            // The leader is gone; members of its group may not be.
            let _ = sys::kill_group(self.id(), libc::SIGKILL);
            return Ok(status);
        }
        let _ = sys::kill_group(self.id(), libc::SIGKILL);
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.label))?;
        self.status = Some(status);
        Ok(status)
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Err(e) = self.terminate(DROP_GRACE) {
            eprintln!("blixt-lab: stopping {}: {e:#}", self.label);
        }
        if let Some(reader) = self.reader.take() {
            // The pipe closes when the group is gone; a grandchild that escaped the group
            // could hold it open, so do not wait for the reader forever.
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}
