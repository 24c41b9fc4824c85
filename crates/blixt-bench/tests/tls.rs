//! Suite 6 at tiny size: both systems (and the no-proxy ceiling) complete real TLS handshakes
//! through the namespace lab, every connection lands on the backend its server name routes
//! to (checked by the certificate received and the answer, inside the harness), Blixt's own
//! counters account for them, and the report section and plots are written. No timing is
//! asserted.

use blixt_bench::results::{Machine, Results, SCHEMA};
use blixt_bench::suite::PlotDir;
use blixt_bench::tls::{self, systems::System, Sizes};
use blixt_bench::Mode;

#[test]
fn tiny_tls_run_reaches_the_right_backends_through_both_systems() {
    blixt_bench::require_root();
    assert!(
        tls::systems::haproxy_available(),
        "haproxy is not installed (`make deps` installs it)"
    );
    let sizes = Sizes::for_mode(Mode::Tiny);
    let (rounds, findings) = tls::measure(Mode::Tiny, &sizes).expect("tiny TLS run");
    assert!(findings.is_empty(), "{findings:?}");
    for system in System::ALL {
        let r = rounds
            .iter()
            .find(|r| r.system == system)
            .unwrap_or_else(|| panic!("no round of {system:?}"));
        // the harness already failed the run on a wrong backend or an error; check it did
        // not get here with an empty round
        assert_eq!(r.load.wrong_backend, 0);
        assert_eq!(r.load.errors, 0, "{:?}", r.load.error_samples);
        assert!(r.load.completed > 0, "{system:?}: no connection measured");
        assert!(
            r.load.per_backend.iter().all(|&n| n > 0),
            "{system:?}: {:?}",
            r.load.per_backend
        );
        match system {
            System::Blixt => {
                let c = r.counters.as_ref().expect("Blixt's counters");
                let verified: u64 = r.load.per_backend.iter().sum();
                assert!(c.forwarded >= verified, "{c:?} vs {verified}");
                assert_eq!(c.backends.len(), tls::BACKENDS, "{c:?}");
            }
            _ => assert!(r.counters.is_none()),
        }
    }

    let machine = Machine::detect();
    let metrics = tls::metrics(&rounds, &sizes, &machine);
    let c = sizes.concurrency[0];
    let conn = metrics
        .iter()
        .find(|m| m.name == format!("tls.conn_per_s.c{c}"))
        .expect("conn/s metric");
    for key in ["blixt", "haproxy", "direct"] {
        assert!(conn.systems.contains_key(key), "{key}: {conn:?}");
    }
    assert!(conn.goal.is_some(), "the goal is judged on conn/s");
    assert!(metrics.iter().any(
        |m| m.name == format!("tls.lb_cpu_s_per_10k.c{c}") && m.systems.contains_key("haproxy")
    ));

    let dir = std::env::temp_dir().join(format!("blixt-bench-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = Results {
        schema: SCHEMA,
        mode: Mode::Tiny.name().into(),
        finished_unix: 0,
        elapsed_s: 0.0,
        machine,
        sizes: Default::default(),
        metrics,
        programs: Vec::new(),
        profiles: Vec::new(),
        findings,
        earlier: Vec::new(),
    };
    let plots = PlotDir {
        dir: &dir,
        link_prefix: "bench",
    };
    let section = tls::section(&results, &plots)
        .expect("section")
        .expect("a section for a run with TLS metrics");
    assert!(section.markdown.starts_with("## Suite 6: TLS passthrough"));
    assert_eq!(section.goals.len(), sizes.concurrency.len());
    assert!(section.goals.iter().all(|g| g.met.is_some()));
    for png in ["tls_conn_per_s.png", "tls_handshake_latency.png"] {
        let len = std::fs::metadata(dir.join(png)).map_or(0, |m| m.len());
        assert!(len > 1000, "{png}: {len} bytes");
        assert!(section.markdown.contains(&format!("bench/{png}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
