//! [`NetNs`]: a named network namespace that is deleted when dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;

use anyhow::{bail, Context, Result};

use crate::process::LabProcess;
use crate::sys;

/// Prefix of every namespace the lab creates unless told otherwise.
pub const DEFAULT_PREFIX: &str = "blx";

/// Longest namespace or interface name the lab uses (`IFNAMSIZ` - 1).
pub const MAX_NAME_LEN: usize = 15;

/// Where `ip netns` keeps its bind mounts.
const NETNS_DIR: &str = "/run/netns";

/// Per-process counter that makes namespace names unique within one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Serialises `ip netns add/del` within the process: the first `ip netns add` on a machine
/// makes `/run/netns` a shared mount, and two doing that at once can stack mounts.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace created with `ip netns add` and deleted (`ip netns del`) on drop.
///
/// Names are `<prefix><pid>-<counter in base 36>`, so parallel tests in one process and
/// several processes never collide, and [`cleanup_stale`] can tell whose a leftover was.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates a namespace with a unique name under `prefix` (1 to 6 lowercase ASCII letters)
    /// and brings its loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix)?;
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_ip(&["netns", "add", &name]).with_context(|| format!("creating netns {name}"))?;
        }
        let ns = NetNs {
            path: Path::new(NETNS_DIR).join(&name),
            name,
        };
        ns.ip(&["link", "set", "dev", "lo", "up"])
            .with_context(|| format!("bringing lo up in {}", ns.name))?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (`/run/netns/<name>`), usable with `setns(2)` or `nsenter --net=`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip -n <ns> <args>` and returns its standard output; fails with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in this namespace
    /// with a single `ip -n <ns> -batch -`; stops at the first failing line.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning `ip -batch` (is iproute2 installed?)")?;
        {
            let mut stdin = child.stdin.take().context("ip -batch stdin")?;
            let mut script = lines.join("\n");
            script.push('\n');
            stdin
                .write_all(script.as_bytes())
                .context("writing ip -batch script")?;
        }
        let out = child.wait_with_output().context("waiting for ip -batch")?;
        if !out.status.success() {
            bail!(
                "`ip -n {} -batch` failed ({}): {}\nscript:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                lines.join("\n")
            );
        }
        Ok(())
    }

    /// A [`Command`] that runs `program` inside this namespace (`ip netns exec <ns> program`);
    /// add arguments, environment and stdio to it as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args[0] args[1..]` inside the namespace, waits for it and returns its raw output
    /// (whatever the exit status).
    pub fn exec_output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        let (program, rest) = args.split_first().context("exec: empty command")?;
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "running {:?} in netns {}",
                    program.as_ref().to_string_lossy(),
                    self.name
                )
            })
    }

    /// Runs a command inside the namespace and returns its standard output; a non-zero exit
    /// is an error that carries the command line and its stderr.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.exec_output(args)?;
        if !out.status.success() {
            bail!(
                "`{}` in netns {} failed ({}): {}",
                display_args(args),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("command output is not UTF-8")
    }

    /// Starts a long-running command inside the namespace. Its stdout is captured line by
    /// line (see [`LabProcess::next_line`]); stderr goes to ours. It is killed and reaped when
    /// the returned guard drops.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<LabProcess> {
        let (program, rest) = args.split_first().context("spawn: empty command")?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        LabProcess::spawn(format!("{} in {}", display_args(args), self.name), cmd)
    }

    /// Starts `cmd` in this network namespace only: unlike [`NetNs::spawn`] (`ip netns exec`)
    /// the child keeps the host's mount namespace, so it sees the host's /sys/fs/bpf. Use it
    /// for programs that pin BPF objects (the blixt agent).
    pub fn spawn_netns_only(&self, label: &str, mut cmd: Command) -> Result<LabProcess> {
        let file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        sys::setns_net_before_exec(&mut cmd, file);
        LabProcess::spawn(format!("{label} in {}", self.name), cmd)
    }

    /// Runs `f` on a fresh thread that has entered this namespace (`setns(CLONE_NEWNET)`),
    /// and returns its result. Sockets opened in `f` belong to the namespace for their whole
    /// life, even when used from other threads later; threads spawned inside `f` start in the
    /// namespace too. The calling thread never changes namespace.
    ///
    /// # Panics
    /// If the namespace cannot be entered, or if `f` panics (the panic is propagated).
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(&self.path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path.display()));
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(scope, move || {
                    sys::setns_net(&file)
                        .unwrap_or_else(|e| panic!("setns into netns {}: {e}", self.name));
                    drop(file);
                    f()
                })
                .unwrap_or_else(|e| panic!("spawning a thread for netns {}: {e}", self.name));
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Pids of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        Ok(netns_pids(&self.name))
    }

    /// Sets a sysctl of this namespace, e.g. `sysctl_set("net.ipv4.ip_forward", "1")`.
    ///
    /// Written through `/proc/sys` from a thread inside the namespace: the `net.*` tree there
    /// is the one of the writer's namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.run_in(|| std::fs::write(&path, value))
            .with_context(|| format!("setting {key}={value} in netns {}", self.name))
    }

    /// Reads a sysctl of this namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let v = self
            .run_in(|| std::fs::read_to_string(&path))
            .with_context(|| format!("reading {key} in netns {}", self.name))?;
        Ok(v.trim().to_string())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            // Drop cannot fail; say so loudly instead, the next run's cleanup_stale removes it.
            eprintln!("blixt-lab: deleting netns {}: {e:#}", self.name);
        }
    }
}

fn netns_pids(name: &str) -> Vec<u32> {
    run_ip(&["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn display_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `ip <args>` and returns stdout; a failure carries the command and stderr.
pub(crate) fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("`ip` output is not UTF-8")
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 6 || !prefix.bytes().all(|b| b.is_ascii_lowercase()) {
        bail!("lab prefix {prefix:?} must be 1 to 6 lowercase ASCII letters");
    }
    Ok(())
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// `<prefix><pid>-<counter>`, at most [`MAX_NAME_LEN`] characters.
fn unique_name(prefix: &str) -> Result<String> {
    check_prefix(prefix)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}-{}", std::process::id(), base36(n));
    if name.len() > MAX_NAME_LEN {
        bail!("netns name {name} is longer than {MAX_NAME_LEN} characters; use a shorter prefix");
    }
    Ok(name)
}

/// The pid that created a namespace called `name` under `prefix`, if the name has the lab's
/// shape.
pub(crate) fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, counter) = rest.split_once('-')?;
    if pid.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || counter.is_empty()
        || !counter
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    pid.parse().ok()
}

/// Removes namespaces under `prefix` whose creating process is gone (a crashed or killed
/// earlier run), killing any process still inside them first. Namespaces of live processes
/// (parallel test binaries) are left alone. Returns the names removed.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    check_prefix(prefix)?;
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {NETNS_DIR}")),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {NETNS_DIR}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(prefix, &name) else {
            continue;
        };
        if pid == std::process::id() || sys::pid_alive(pid) {
            continue;
        }
        // Processes left inside (echo servers of a killed test) would keep the namespace
        // alive after its name is gone.
        for p in netns_pids(&name) {
            // Its whole group if it leads one, else just itself.
            let _ = sys::kill_group(p, libc::SIGKILL);
            let _ = sys::kill_pid(p, libc::SIGKILL);
        }
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        run_ip(&["netns", "del", &name]).with_context(|| format!("deleting stale netns {name}"))?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_unique_and_parse_back() {
        let a = unique_name("blx").unwrap();
        let b = unique_name("blx").unwrap();
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME_LEN);
        assert_eq!(owner_pid("blx", &a), Some(std::process::id()));
    }

    #[test]
    fn owner_pid_rejects_other_shapes() {
        assert_eq!(owner_pid("blx", "blx123-0"), Some(123));
        assert_eq!(owner_pid("blx", "blx123-a1"), Some(123));
        assert_eq!(owner_pid("blx", "blxd123-0"), None);
        assert_eq!(owner_pid("blx", "blx-0"), None);
        assert_eq!(owner_pid("blx", "blx123-"), None);
        assert_eq!(owner_pid("blx", "other123-0"), None);
        assert_eq!(owner_pid("blx", "blx12x-0"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("blx").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("blx1").is_err());
        assert!(check_prefix("toolong").is_err());
    }

    #[test]
    fn base36_counts() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
