//! Helpers of the tests that run blixt on the namespace lab (`lab.rs`, `standalone.rs`,
//! `tls_standalone.rs`): the lab with its peers' XDP, echo servers, guards that remove
//! directories, waiting for a generation, and the client's traffic with the checks every
//! test makes of it.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use blixt_lab::process::LabProcess;
use blixt_lab::topology::{Lab, LabSpec};
use blixt_lab::traffic::{self, LongLived, LongLivedReport, Report};
use blixt_lab::{require_root, EchoConfig, EchoServer};

/// The port of the backends' echo servers (TCP and UDP).
pub const ECHO_PORT: u16 = 8080;

/// `<pid>-<n>`, different for every call in every test process: names of directories and
/// pins that tests running at the same time must not share.
pub fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory (a temporary one, or a BPF pin directory) removed with all it holds on drop.
pub struct DirGuard(pub PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lab of `spec`, after checking for root, with the pass-through XDP program on the
/// peers' veth ends (XDP_REDIRECT into a veth needs one there).
pub fn build_lab(spec: LabSpec) -> Lab {
    require_root();
    let lab = Lab::build(spec).expect("building the lab");
    lab.attach_peer_xdp(&blixt_bpf::loader::peer_pass_object().unwrap())
        .expect("XDP on the peers");
    lab
}

/// A TCP and UDP echo server on [`ECHO_PORT`] of every backend, named after it.
pub fn echo_servers(lab: &Lab) -> Vec<EchoServer> {
    lab.backends
        .iter()
        .map(|b| {
            EchoServer::start_in(&b.ns, EchoConfig::new(b.name.clone(), ECHO_PORT))
                .expect("echo server")
        })
        .collect()
}

/// Waits for the line by which `blixt run` or `blixt agent` reports `generation` applied.
pub fn wait_generation(process: &mut LabProcess, generation: u64) {
    let want = format!("\"generation\":{generation}}}");
    process
        .wait_for_line(Duration::from_secs(30), |l| l.contains(&want))
        .unwrap_or_else(|e| panic!("generation {generation} not applied: {e:#}"));
}

/// The first VIP of the family.
pub fn vip(lab: &Lab, v6: bool) -> IpAddr {
    if v6 {
        lab.vip6(1).into()
    } else {
        lab.vip4(1).into()
    }
}

/// `conns` TCP connections to `target` from the client, `concurrency` at a time.
pub fn tcp_burst(
    lab: &Lab,
    target: SocketAddr,
    conns: usize,
    concurrency: usize,
    timeout: Duration,
) -> Report {
    lab.client
        .ns
        .run_in(|| traffic::tcp_burst(target, conns, concurrency, timeout).unwrap())
}

/// [`tcp_burst`] of `conns` connections, 16 at a time, every one of which must succeed.
pub fn tcp_burst_ok(lab: &Lab, target: SocketAddr, conns: usize) -> Report {
    let r = tcp_burst(lab, target, conns, 16, Duration::from_secs(5));
    assert_eq!(r.ok, conns, "{}", r.summary());
    r
}

/// No connection of the burst `r` reached backend `name`; `why` says what keeps it out.
pub fn assert_none_on(r: &Report, name: &str, why: &str) {
    assert!(!r.backends.contains_key(name), "{why}: {:?}", r.backends);
}

/// 100 long-lived connections from the client to each target, each sending every 20 ms,
/// once each has made 3 rounds.
pub fn start_long_lived(lab: &Lab, targets: &[SocketAddr]) -> Vec<LongLived> {
    let long: Vec<LongLived> = lab.client.ns.run_in(|| {
        targets
            .iter()
            .map(|t| {
                LongLived::start(*t, 100, Duration::from_millis(20), Duration::from_secs(3))
                    .unwrap()
            })
            .collect()
    });
    wait_rounds(&long, 3);
    long
}

/// Waits until every connection of each group has made `rounds` rounds.
pub fn wait_rounds(long: &[LongLived], rounds: u64) {
    for l in long {
        l.wait_rounds(rounds, Duration::from_secs(10)).unwrap();
    }
}

/// Stops the connections and checks that none of them broke; the reports, for what else
/// the test checks.
pub fn stop_unbroken(long: Vec<LongLived>) -> Vec<LongLivedReport> {
    long.into_iter()
        .map(|l| {
            let r = l.stop();
            assert_eq!(r.broken, 0, "{}", r.summary());
            r
        })
        .collect()
}

/// Some connections of `r` were on backend `name`.
pub fn assert_some_on(r: &LongLivedReport, name: &str) {
    assert!(
        r.backends.get(name).copied().unwrap_or(0) > 0,
        "some connections were on {name}: {}",
        r.summary()
    );
}

/// No connection of `r` changed backend.
pub fn assert_no_backend_change(r: &LongLivedReport) {
    assert!(
        r.results.iter().all(|c| !c.backend_changed),
        "{}",
        r.summary()
    );
}
