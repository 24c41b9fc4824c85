//! Child processes of the control plane that cannot outlive the test binary.
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it when the test binary
//! dies, however it dies (panic, `exit`, SIGKILL, a timeout in CI). The death signal fires when
//! the *thread* that forked the child exits, not the process (prctl(2)), and test threads are
//! short-lived: so children are spawned by one dedicated thread that lives as long as the
//! process.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, Context as _, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("k8s-harness-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread) lasts until the
                // process exits.
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the k8s harness spawner thread");
        Mutex::new(tx)
    })
}

pub(crate) fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid) and builds an io::Error without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the k8s harness spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the k8s harness spawner thread did not answer"))?
}

/// One running control-plane process; killed on drop. Output goes to a log file.
#[derive(Debug)]
pub(crate) struct Component {
    name: &'static str,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Component {
    pub(crate) fn start(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(log_dir);
        tracing::debug!(%name, binary = %binary.display(), ?args, "starting");
        let child = spawn_tied_to_process(command)
            .with_context(|| format!("starting {name} ({})", binary.display()))?;
        Ok(Self {
            name,
            log,
            child: Mutex::new(Some(child)),
        })
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error (with the end of the log) if the process has exited.
    pub(crate) fn check_running(&self) -> Result<()> {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let Some(child) = guard.as_mut() else {
            return Err(anyhow!("{} was stopped", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            )),
            Err(e) => Err(anyhow!("waiting for {}: {e}", self.name)),
        }
    }

    /// The last `lines` lines of the log (for error messages).
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Kills the process and reaps it. Idempotent.
    pub(crate) fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = guard.take() {
            // A test cluster's state is thrown away, so there is nothing to shut down cleanly.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
