//! Helpers of the tests that run `blixt controller` against the real API server and agents
//! in network namespaces: guards that clean up, a free port, the root check.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};

pub const BLIXT: &str = env!("CARGO_BIN_EXE_blixt");

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (BPF, network namespaces): run as root, as `make test` does");
    }
}

/// A veth from the host namespace into a lab namespace, removed on drop.
pub struct HostLink(pub String);

impl HostLink {
    /// Creates the veth `host_if` in the host namespace, with the address `host_cidr` and up,
    /// and its peer `peer_if` in the namespace `netns` (down, no address).
    pub fn create(host_if: &str, peer_if: &str, netns: &str, host_cidr: &str) -> HostLink {
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", netns,
        ]);
        let link = HostLink(host_if.to_owned());
        ip(&["addr", "add", host_cidr, "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        link
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A `blixt controller` process, killed on drop.
pub struct Controller(pub Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed on drop.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
