//! The network-namespace lab: real namespaces, veth pairs and sockets for the dataplane's
//! integration tests, the demo and the benchmarks.
//!
//! - Guards that always clean up, also when a test panics: [`NetNs`] (deleted on drop),
//!   [`Veth`], [`LabProcess`] (killed and reaped on drop), and [`Lab::cleanup_stale`] for
//!   leftovers of a crashed run.
//! - [`Lab::build`]: a client, a load-balancer node (`lb`) and N backends, dual stack; see
//!   [`topology`] for the addressing plan and the veth/XDP notes.
//! - Running code in a namespace: [`NetNs::exec`], [`NetNs::spawn`], and in-process
//!   [`NetNs::run_in`].
//! - [`EchoServer`] (TCP and UDP, answers name the backend and the peer it saw) and the
//!   traffic clients [`tcp_burst`], [`udp_flows`] and [`LongLived`].
//! - With the feature `tls-testing`, [`tls`]: rustls backends with certificates of their own
//!   and a client that tells them apart by the certificate that comes back.
//! - The `blixt-lab` binary exposes the same as subcommands for scripts.
//!
//! ```no_run
//! use std::time::Duration;
//! use blixt_lab::{tcp_burst, EchoConfig, EchoServer, Lab, LabSpec};
//!
//! let lab = Lab::build(LabSpec::with_backends(2))?;
//! let _be0 = EchoServer::start_in(&lab.backend(0).ns, EchoConfig::new("be0", 8080))?;
//! let target = (lab.backend(0).v4(), 8080).into();
//! let report = lab.client.ns.run_in(|| tcp_burst(target, 100, 8, Duration::from_secs(2)))?;
//! assert!(report.all_ok(), "{}", report.summary());
//! # anyhow::Ok(())
//! ```
//!
//! Everything here needs root. Tests call [`require_root`] first so that a run without root
//! fails loudly instead of passing silently.

pub mod addr;
pub mod capture;
pub mod echo;
pub mod netns;
pub mod process;
mod sys;
#[cfg(feature = "tls-testing")]
pub mod tls;
pub mod topology;
pub mod traffic;
pub mod veth;

pub use addr::{Mac, Prefix};
pub use echo::{lab_binary, spawn_echo_process, EchoConfig, EchoReady, EchoReply, EchoServer};
pub use netns::{cleanup_stale, NetNs, DEFAULT_PREFIX};
pub use process::LabProcess;
pub use topology::{Lab, LabInfo, LabSpec, Link, Node, NodeInfo};
pub use traffic::{
    check_lab_target, tcp_burst, udp_flows, ConnResult, FlowResult, LongLived, LongLivedReport,
    Report, UdpOptions,
};
pub use veth::Veth;

/// Whether the process runs as root.
pub fn is_root() -> bool {
    sys::euid() == 0
}

/// Panics unless the process runs as root, with the message tests are expected to show.
///
/// # Panics
/// When not root.
pub fn require_root() {
    assert!(is_root(), "needs root: run as root (make test does)");
}

/// Identity (device, inode) of the calling thread's network namespace; two threads are in
/// the same namespace exactly when these are equal.
pub fn current_netns_id() -> std::io::Result<(u64, u64)> {
    sys::current_netns_identity()
}
