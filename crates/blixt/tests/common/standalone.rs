//! `blixt run --config DIR` with the manifests of examples/standalone on the lab's
//! load-balancer node (`standalone.rs`, `tls_standalone.rs`): the example files copied into
//! a directory of the test's own with the pin directory and status socket moved there too,
//! the servers each test puts on the backends, and the commands the tests check blixt with.
//!
//! Uses `common/lab.rs`, which the including test declares as `mod lab_support`.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use blixt_lab::process::LabProcess;
use blixt_lab::topology::{Lab, LabSpec};

use crate::lab_support::{build_lab, unique_id, vip, wait_generation, DirGuard};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/standalone");
pub const BLIXT: &str = env!("CARGO_BIN_EXE_blixt");

/// The running `blixt run`, with `S`, the servers on the backends. Fields drop in order:
/// the running blixt (killed first, by `Drop`), its pins and files, the servers, the lab.
pub struct StandaloneRun<S> {
    pub run: Option<LabProcess>,
    pins: DirGuard,
    dir: DirGuard,
    pub servers: S,
    /// The last generation waited for.
    pub generation: u64,
    pub lab: Lab,
}

impl<S> Drop for StandaloneRun<S> {
    fn drop(&mut self) {
        if let Some(mut r) = self.run.take() {
            let _ = r.kill();
        }
    }
}

impl<S> StandaloneRun<S> {
    /// A lab of three backends, `servers` started on it, `files` of examples/standalone
    /// copied into a directory named after `name`, and `blixt run` on it up to its first
    /// generation.
    pub fn start(name: &str, files: &[&str], servers: impl FnOnce(&Lab) -> S) -> Self {
        let lab = build_lab(LabSpec::with_backends(3));
        assert_eq!(
            lab.backends[0].v4().to_string(),
            "10.99.10.2",
            "examples/ assume the lab's addresses"
        );
        let servers = servers(&lab);
        let id = unique_id();
        let dir = DirGuard(std::env::temp_dir().join(format!("{name}-{id}")));
        let pins = DirGuard(PathBuf::from(format!("/sys/fs/bpf/{name}-{id}")));
        std::fs::create_dir_all(&dir.0).unwrap();
        for f in files {
            let text = std::fs::read_to_string(Path::new(EXAMPLES).join(f)).unwrap();
            let text = text
                .replace(
                    "pinDir: /sys/fs/bpf/blixt",
                    &format!("pinDir: {}", pins.0.display()),
                )
                .replace(
                    "statusSocket: /run/blixt/status.sock",
                    &format!("statusSocket: {}", dir.0.join("status.sock").display()),
                );
            std::fs::write(dir.0.join(f), text).unwrap();
        }
        let mut s = StandaloneRun {
            run: None,
            pins,
            dir,
            servers,
            generation: 0,
            lab,
        };
        s.spawn();
        s
    }

    /// Starts `blixt run` on the config directory and waits for its first generation.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(BLIXT);
        cmd.arg("run").arg("--config").arg(&self.dir.0);
        let run = self
            .lab
            .lb
            .spawn_netns_only("blixt run", cmd)
            .expect("blixt run");
        self.run = Some(run);
        self.generation = 0;
        self.wait_next_generation();
    }

    pub fn wait_next_generation(&mut self) {
        self.generation += 1;
        wait_generation(self.run.as_mut().unwrap(), self.generation);
    }

    /// Takes the next generation into account when `blixt run` has already announced it (or
    /// does within `timeout`): for a change that may land in one generation or two, once what
    /// it changes is seen serving.
    pub fn catch_up_generation(&mut self, timeout: Duration) {
        let want = format!("\"generation\":{}}}", self.generation + 1);
        let run = self.run.as_mut().unwrap();
        if run.wait_for_line(timeout, |l| l.contains(&want)).is_ok() {
            self.generation += 1;
        }
    }

    /// The config directory.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Replaces `file` in the config directory atomically (as an editor's save does).
    pub fn write(&self, file: &str, text: &str) {
        let tmp = self.dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir().join(file)).unwrap();
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir().join(file)).unwrap()
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir().join(file)).unwrap();
    }

    /// `blixt args…`, which must succeed; its output.
    pub fn blixt(&self, args: &[&str]) -> String {
        let out = Command::new(BLIXT).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "blixt {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn socket(&self) -> String {
        self.dir().join("status.sock").display().to_string()
    }

    /// `blixt status -o format` of this run.
    pub fn status(&self, format: &str) -> String {
        self.blixt(&["status", "--socket", &self.socket(), "-o", format])
    }

    /// `blixt inspect -o format` of this run's pins, with the TLS part from its status
    /// socket when `tls`.
    pub fn inspect(&self, format: &str, tls: bool) -> String {
        let pins = self.pins.0.display().to_string();
        let socket = self.socket();
        let mut args = vec!["inspect", "-o", format, "--pin-dir", &pins];
        if tls {
            args.extend(["--socket", &socket]);
        }
        self.blixt(&args)
    }

    /// [`Self::inspect`] as JSON.
    pub fn inspect_json(&self, tls: bool) -> serde_json::Value {
        serde_json::from_str(&self.inspect("json", tls)).unwrap()
    }

    /// The first VIP of the family.
    pub fn vip(&self, v6: bool) -> IpAddr {
        vip(&self.lab, v6)
    }
}
