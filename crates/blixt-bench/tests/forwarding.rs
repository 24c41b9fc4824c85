//! Suite 2 at tiny size: every system (Blixt, nftables, iptables, and iptables-legacy where it
//! works) must have forwarded the generator's packets to the backends' sinks, rewritten to the
//! backend port, in every traffic pattern. The run itself fails when a system forwarded nothing
//! or (with many flows) left a backend without packets; this test checks what it recorded. No
//! timing is asserted: tiny numbers mean nothing.

use blixt_bench::forwarding::{self, SCENARIOS};
use blixt_bench::results::Machine;
use blixt_bench::Mode;

#[test]
fn tiny_run_forwards_through_every_system() {
    // needs root; panics with a message saying so otherwise
    let out = forwarding::run(Mode::Tiny, &Machine::detect()).expect("tiny forwarding run");
    for sc in SCENARIOS {
        let name = format!("forwarding.{}.pps", sc.id);
        let m = out
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"));
        for sys in ["blixt", "blixt_tc", "nftables", "iptables"] {
            let v = m
                .system(sys)
                .unwrap_or_else(|| panic!("{name}: no value for {sys}"));
            assert!(v.median > 0.0, "{name}: {sys} forwarded nothing");
        }
    }
    let g = out
        .metrics
        .iter()
        .find(|m| m.name == "forwarding.generator.pps")
        .expect("generator metric");
    assert!(g.median > 0.0 && g.system("rx_xdp_drop").is_some_and(|v| v.median > 0.0));
    // the counters of every system were read back and reported
    for sys in ["blixt", "blixt_tc", "nftables", "iptables"] {
        let prefix = format!("forwarding: {sys}: ");
        assert!(
            out.findings
                .iter()
                .any(|f| f.starts_with(&prefix) && f.contains("counters")),
            "no counter finding for {sys}: {:#?}",
            out.findings
        );
    }
}
