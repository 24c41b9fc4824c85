//! The lab's guards clean up after themselves, also when a test panics. Needs root.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use blixt_lab::{
    current_netns_id, require_root, tcp_burst, EchoConfig, EchoServer, Lab, LabSpec, NetNs, Veth,
    DEFAULT_PREFIX,
};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is a running (not zombie) process, allowing up to a second for a killed one
/// to go: an orphaned grandchild is reaped by init, not by us.
fn pid_running(pid: u32) -> bool {
    for _ in 0..100 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
            .flatten();
        match state {
            None | Some('Z') | Some('X') => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    true
}

fn link_exists(ns: &NetNs, ifname: &str) -> bool {
    ns.ip(&["link", "show", "dev", ifname]).is_ok()
}

#[test]
fn netns_is_deleted_on_drop() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    let name = ns.name().to_string();
    assert!(
        name.len() <= 15,
        "{name} is too long for the lab's naming rule"
    );
    assert!(netns_exists(&name));
    let lo = ns
        .ip(&["-j", "link", "show", "dev", "lo"])
        .expect("ip link");
    assert!(
        lo.contains("\"UP\"") || lo.contains("UNKNOWN"),
        "lo is not up: {lo}"
    );
    drop(ns);
    assert!(!netns_exists(&name), "{name} still exists after drop");
}

#[test]
fn names_are_unique_within_a_process() {
    require_root();
    let a = NetNs::new(DEFAULT_PREFIX).expect("create a");
    let b = NetNs::new(DEFAULT_PREFIX).expect("create b");
    assert_ne!(a.name(), b.name());
    assert!(a.name().contains(&std::process::id().to_string()));
}

#[test]
fn veth_guard_deletes_the_pair() {
    require_root();
    let a = NetNs::new(DEFAULT_PREFIX).expect("create a");
    let b = NetNs::new(DEFAULT_PREFIX).expect("create b");
    let veth = Veth::create(&a, "va", &b, "vb").expect("create veth");
    assert_eq!(veth.a(), (a.name(), "va"));
    assert!(link_exists(&a, "va") && link_exists(&b, "vb"));
    drop(veth);
    assert!(!link_exists(&a, "va"), "va left behind");
    assert!(!link_exists(&b, "vb"), "vb left behind");
}

#[test]
fn lab_process_is_killed_and_reaped_on_drop() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    // Ignores SIGTERM and has a child: the guard must escalate to SIGKILL for the whole group.
    let mut proc = ns
        .spawn(&["sh", "-c", "trap '' TERM; sleep 1000 & echo started; wait"])
        .expect("spawn");
    assert_eq!(
        proc.next_line(Duration::from_secs(5)).expect("start line"),
        "started"
    );
    let pid = proc.id();
    let pids = ns.pids().expect("pids in netns");
    assert!(
        pids.len() >= 2,
        "expected sh and sleep in the netns, got {pids:?}"
    );
    drop(proc);
    assert!(!pid_exists(pid), "the child {pid} was not reaped");
    for p in &pids {
        assert!(
            !pid_running(*p),
            "process {p} (group of {pid}) survived the guard"
        );
    }
}

#[test]
fn lab_process_terminate_reports_exit_status() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    let proc = ns
        .spawn(&["sh", "-c", "echo one; echo two; exit 3"])
        .expect("spawn");
    let (status, lines) = proc.wait_output(Duration::from_secs(5)).expect("wait");
    assert_eq!(status.code(), Some(3));
    assert_eq!(lines, vec!["one".to_string(), "two".to_string()]);
}

#[test]
fn lab_is_cleaned_up_after_a_panic() {
    require_root();
    let seen: Mutex<(Vec<String>, Vec<u32>)> = Mutex::new((Vec::new(), Vec::new()));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::build(LabSpec::with_backends(2)).expect("build lab");
        let _server = EchoServer::start_in(&lab.backend(0).ns, EchoConfig::new("be0", 8080))
            .expect("echo server");
        let mut proc = lab
            .backend(1)
            .ns
            .spawn(&["sh", "-c", "echo up; sleep 1000"])
            .expect("spawn");
        proc.next_line(Duration::from_secs(5))
            .expect("process started");
        {
            let mut seen = seen.lock().unwrap();
            seen.0 = lab.netns_names();
            seen.1.push(proc.id());
        }
        panic!("deliberate failure inside a lab test");
    }));
    let err = result.expect_err("the closure panics");
    assert_eq!(
        err.downcast_ref::<&str>().copied(),
        Some("deliberate failure inside a lab test")
    );
    let (names, pids) = seen.into_inner().unwrap();
    assert_eq!(names.len(), 4, "client, lb and two backends: {names:?}");
    for name in &names {
        assert!(!netns_exists(name), "{name} left behind after a panic");
    }
    for pid in &pids {
        assert!(
            !pid_running(*pid),
            "process {pid} left behind after a panic"
        );
    }
}

#[test]
fn cleanup_stale_removes_only_dead_runs() {
    require_root();
    // A prefix of its own, so no other test's namespaces are in play.
    const PREFIX: &str = "blxst";
    // A pid that certainly belonged to a process that is gone now.
    let mut child = Command::new("true").spawn().expect("spawn true");
    child.wait().expect("wait true");
    let dead = child.id();
    assert!(!pid_exists(dead));
    let stale = format!("{PREFIX}{dead}-0");
    let out = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .expect("ip netns add");
    assert!(out.success());
    // A process left running inside the stale namespace, as after a crash.
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "1000"])
        .spawn()
        .expect("spawn orphan");

    let live = NetNs::new(PREFIX).expect("live netns");
    let removed = Lab::cleanup_stale(PREFIX).expect("cleanup");
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!netns_exists(&stale));
    assert!(
        netns_exists(live.name()),
        "a live process's netns was removed"
    );
    let status = orphan.wait().expect("orphan reaped");
    assert!(
        !status.success(),
        "orphan was killed, not finished: {status}"
    );
}

#[test]
fn run_in_enters_the_namespace_and_threads_inherit_it() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    let outside = current_netns_id().expect("own netns");
    let (inside, from_child, devices) = ns.run_in(|| {
        let inside = current_netns_id().expect("netns inside");
        let from_child = std::thread::spawn(|| current_netns_id().expect("child netns"))
            .join()
            .expect("child thread");
        let devices = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
        (inside, from_child, devices)
    });
    assert_ne!(inside, outside, "run_in did not change namespace");
    assert_eq!(
        from_child, inside,
        "a thread spawned inside did not inherit the namespace"
    );
    let ifaces: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "a fresh namespace has only lo");
    assert_eq!(
        current_netns_id().expect("own netns"),
        outside,
        "caller moved"
    );
}

#[test]
fn run_in_propagates_panics() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    let result = catch_unwind(AssertUnwindSafe(|| ns.run_in(|| panic!("inner panic"))));
    let err = result.expect_err("panic propagates");
    assert_eq!(err.downcast_ref::<&str>().copied(), Some("inner panic"));
}

#[test]
fn run_in_borrows_from_the_caller() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    let mut hits = Vec::new();
    ns.run_in(|| hits.push(current_netns_id().expect("id")));
    assert_eq!(hits.len(), 1);
}

#[test]
fn traffic_from_outside_the_lab_is_refused() {
    require_root();
    let target: SocketAddr = "10.99.0.1:80".parse().unwrap();
    let err = tcp_burst(target, 1, 1, Duration::from_millis(100))
        .expect_err("test traffic from the host namespace must be refused");
    assert!(err.to_string().contains("refusing"), "{err:#}");
}

#[test]
fn sysctls_are_per_namespace() {
    require_root();
    let ns = NetNs::new(DEFAULT_PREFIX).expect("create netns");
    ns.sysctl_set("net.ipv4.ip_forward", "1").expect("set");
    assert_eq!(ns.sysctl_get("net.ipv4.ip_forward").expect("get"), "1");
    let fresh = NetNs::new(DEFAULT_PREFIX).expect("create another");
    assert_eq!(fresh.sysctl_get("net.ipv4.ip_forward").expect("get"), "0");
}
