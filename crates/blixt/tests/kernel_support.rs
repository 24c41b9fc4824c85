//! What a user sees on a kernel without something the dataplane needs: `blixt agent` exits at
//! once with a message naming the capability, what needs it and the kernel it takes, never a
//! verifier dump. Capabilities are forced off with `BLIXT_FORCE_FALLBACK`, so this runs the
//! same on any kernel.

use std::process::{Command, Output};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (loading BPF): run as root, as `make test` does");
    }
}

/// `blixt agent` on the loopback of a network namespace of its own, with nothing pinned,
/// `BLIXT_FORCE_FALLBACK=forced` and `extra` arguments, stopped after `secs` seconds (exit
/// status 124) unless it exits by itself.
fn agent_for(secs: u32, forced: &str, extra: &[&str]) -> Output {
    require_root();
    let dir = std::env::temp_dir().join(format!("blixt-kernel-support-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("snapshot.json");
    std::fs::write(&snapshot, r#"{"generation":1,"frontends":[]}"#).unwrap();
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .args(["unshare", "--net", "--"])
        .arg(env!("CARGO_BIN_EXE_blixt"))
        .args(["agent", "--snapshot"])
        .arg(&snapshot)
        .args(["-i", "lo", "--pin-dir", "none", "--metrics-address", "none"])
        .args(extra)
        .env("BLIXT_FORCE_FALLBACK", forced)
        .output()
        .expect("running blixt agent");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A run that must end by itself (a refusal); a timeout turns into a failure.
fn agent(forced: &str, extra: &[&str]) -> Output {
    agent_for(20, forced, extra)
}

/// The log without its colours (ANSI escape sequences).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn refused(out: &Output) -> String {
    let stderr = plain(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "blixt agent must refuse at once (124 = still running after 20 s): {stderr}"
    );
    assert!(
        !stderr.contains("Verifier output") && !stderr.contains("processed "),
        "no verifier dump: {stderr}"
    );
    stderr
}

#[test]
fn a_missing_capability_without_fallback_is_refused_by_name() {
    let err = refused(&agent("lru_hash", &[]));
    for want in [
        "lacks",
        "lru_hash",
        "conntrack",
        "needs Linux 4.10 or newer",
        "forced off",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn xdp_requested_without_xdp_is_refused_and_auto_is_not() {
    let err = refused(&agent("xdp_fib_lookup", &["--attach", "xdp"]));
    assert!(err.contains("xdp_fib_lookup"), "{err}");
    assert!(err.contains("attach: xdp"), "{err}");

    // auto runs the load balancer at TC instead, and says why; it keeps running until stopped
    let out = agent_for(3, "xdp_fib_lookup", &[]);
    let log = plain(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(124),
        "still running after 3 s: {log}"
    );
    assert!(log.contains("hook=\"tc\""), "{log}");
    assert!(
        log.contains("fallback xdp_fib_lookup: the load balancer runs at TC ingress"),
        "{log}"
    );
    assert!(log.contains("mode=Tc"), "lo got TC: {log}");
}

#[test]
fn an_unknown_forced_capability_lists_the_valid_names() {
    let err = refused(&agent("xdp_adjust_meat", &[]));
    assert!(err.contains("BLIXT_FORCE_FALLBACK"), "{err}");
    assert!(err.contains("xdp_adjust_meat"), "{err}");
    assert!(err.contains("xdp_adjust_meta"), "the valid names: {err}");
}
