//! Where the lb process's CPU goes during a round: `perf record -g` of the proxy process (Blixt
//! or HAProxy), each sample charged to the system call on its stack, or to user space when
//! there is none. Sending on a veth runs the receiving side's network stack inline, so "send"
//! includes the peer's TCP receive path.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Categories, in the order shown: (id, what, syscall names).
pub const CATEGORIES: [(&str, &str, &[&str]); 8] = [
    (
        "send",
        "send (TCP transmit, with the receiver's stack run inline on veth)",
        &["sendto", "sendmsg", "write", "writev"],
    ),
    ("recv", "recv", &["recvfrom", "recvmsg", "read", "readv"]),
    ("connect", "connect to the backend", &["connect", "socket"]),
    ("accept", "accept", &["accept4", "accept"]),
    ("shutdown", "shutdown (FIN)", &["shutdown"]),
    ("close", "close", &["close"]),
    (
        "events",
        "event loop and wake-ups (epoll, futex)",
        &["epoll_wait", "epoll_pwait", "epoll_ctl", "futex"],
    ),
    ("other_syscalls", "other system calls", &[]),
];

/// Samples with no system call on their stack.
pub const USER: (&str, &str) = ("user", "user space (the proxy's own code, runtime, libc)");

/// A `perf record` of one process.
#[derive(Debug)]
pub struct Recorder {
    child: Child,
    file: PathBuf,
}

impl Recorder {
    /// Starts sampling process `pid` (every thread) with call stacks.
    pub fn start(pid: u32) -> Result<Recorder> {
        let file = std::env::temp_dir().join(format!(
            "blixt-bench-tls-{}-{pid}.perf.data",
            std::process::id()
        ));
        let child = Command::new("perf")
            .args(["record", "-q", "-g", "-F", "999", "-o"])
            .arg(&file)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        // perf needs a moment to open its events
        std::thread::sleep(Duration::from_millis(300));
        Ok(Recorder { child, file })
    }

    /// Waits for perf to end (it does when the process it records exits; SIGINT after a
    /// grace period otherwise) and returns (samples, share per category id).
    pub fn finish(mut self) -> Result<(u64, Vec<(&'static str, f64)>)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-INT", &self.child.id().to_string()])
                    .status();
                self.child.wait().context("waiting for perf record")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.file)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        let stacks = crate::profile::parse_script(&String::from_utf8_lossy(&out.stdout));
        Ok(shares(&stacks))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The category id of one stack (leaf first).
fn category(stack: &[String]) -> &'static str {
    let Some(sys) = stack.iter().find_map(|f| {
        f.strip_prefix("__x64_sys_")
            .or(f.strip_prefix("__arm64_sys_"))
    }) else {
        return USER.0;
    };
    CATEGORIES
        .iter()
        .find(|(_, _, names)| names.contains(&sys))
        .map_or("other_syscalls", |(id, _, _)| id)
}

/// (samples, share per category id) of `stacks`.
pub fn shares(stacks: &[Vec<String>]) -> (u64, Vec<(&'static str, f64)>) {
    let n = stacks.len() as u64;
    let mut out = Vec::new();
    for id in CATEGORIES.iter().map(|c| c.0).chain([USER.0]) {
        let k = stacks.iter().filter(|s| category(s) == id).count();
        out.push((id, if n == 0 { 0.0 } else { k as f64 / n as f64 }));
    }
    (n, out)
}

/// What a category id means.
pub fn describe(id: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|c| c.0 == id)
        .map_or(USER.1, |c| c.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_charged_to_their_syscall() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let stacks = vec![
            s(&["tcp_v4_rcv", "__x64_sys_sendto", "__send"]),
            s(&["memcpy", "tokio::x"]),
            s(&["ep_poll", "__x64_sys_epoll_wait"]),
            s(&["x", "__x64_sys_getsockname"]),
        ];
        let (n, sh) = shares(&stacks);
        assert_eq!(n, 4);
        let get = |id: &str| sh.iter().find(|(c, _)| *c == id).unwrap().1;
        assert_eq!(get("send"), 0.25);
        assert_eq!(get("user"), 0.25);
        assert_eq!(get("events"), 0.25);
        assert_eq!(get("other_syscalls"), 0.25);
    }
}
