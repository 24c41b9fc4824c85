//! Suite 3 at tiny size: every system (Blixt, kube-proxy's iptables and nftables modes,
//! HAProxy) is set up on the lab's lb node and serves real requests. The suite itself stops
//! with an error when a round's traffic did not go through the system under test; this test
//! checks the proof it recorded. No timing is asserted.

use blixt_bench::end_to_end;
use blixt_bench::results::{Machine, Results};
use blixt_bench::suite::PlotDir;
use blixt_bench::Mode;

const SYSTEMS: [&str; 5] = ["blixt", "blixt_tc", "iptables", "nftables", "haproxy"];

#[test]
fn every_system_serves_through_its_own_path() {
    blixt_bench::require_root();
    let machine = Machine::detect();
    let out = end_to_end::run(Mode::Tiny, &machine).expect("suite 3 at tiny size");
    let metric = |name: &str| {
        out.metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    };
    for sys in SYSTEMS {
        let served = metric("e2e.short.conn_per_s").system(sys);
        assert!(served.is_some_and(|v| v.min > 0.0), "{sys}: {served:?}");
        // the system's own counters saw the connections the client completed
        let counted = metric("e2e.check.lb_counted_share").system(sys).unwrap();
        assert!(counted.min > 0.9, "{sys}: counted share {counted:?}");
        // all three backends served
        let share = metric("e2e.check.min_backend_share").system(sys).unwrap();
        assert!(share.min > 0.0, "{sys}: smallest backend share {share:?}");
        let fwd = metric("e2e.check.kernel_forwarded_per_conn")
            .system(sys)
            .unwrap();
        match sys {
            // netfilter peers ride the kernel's forwarding path
            "iptables" | "nftables" => assert!(fwd.min >= 1.0, "{sys}: {fwd:?}"),
            // XDP redirects and HAProxy's local sockets bypass it
            _ => assert!(fwd.max < 0.1, "{sys}: {fwd:?}"),
        }
    }
    let udp = metric("e2e.udp.rr_per_s");
    assert!(udp.system("haproxy").is_none(), "HAProxy has no UDP");
    assert!(udp.system("nftables").is_some_and(|v| v.min > 0.0));

    let dir = std::env::temp_dir().join(format!("blixt-bench-e2e-{}", std::process::id()));
    let results = Results {
        schema: blixt_bench::results::SCHEMA,
        mode: "tiny".into(),
        finished_unix: 0,
        elapsed_s: 0.0,
        machine,
        sizes: out
            .sizes
            .iter()
            .map(|(k, v)| (format!("e2e.{k}"), *v))
            .collect(),
        metrics: out.metrics,
        programs: Vec::new(),
        profiles: Vec::new(),
        findings: out.findings,
        earlier: Vec::new(),
    };
    let plots = PlotDir {
        dir: &dir,
        link_prefix: "bench",
    };
    let section = end_to_end::section(&results, &plots)
        .expect("section")
        .expect("a section when measured");
    assert!(section.markdown.starts_with("## Suite 3: end to end"));
    assert_eq!(section.goals.len(), 2);
    assert!(section.goals.iter().all(|g| g.met.is_some()));
    for png in ["e2e_rates.png", "e2e_latency.png", "e2e_cpu.png"] {
        let len = std::fs::metadata(dir.join(png)).map_or(0, |m| m.len());
        assert!(len > 1000, "{png}: {len} bytes");
        assert!(section.markdown.contains(&format!("bench/{png}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
