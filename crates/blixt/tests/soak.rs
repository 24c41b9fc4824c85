//! Sustained load (issue 17, finding 1 and item 5, short version): `blixt run` with the
//! manifests of examples/standalone on ONE lab that is never rebuilt, wrk's short connections
//! (`Connection: close`, 32 concurrent, the backend closes first as nginx does, so every
//! backend keeps its TIME_WAIT sockets) in back-to-back 5-second windows for 60 s.
//!
//! Fails when a window falls below half the median window, when any connection fails, or when
//! a backend refused a SYN by PAWS against a TIME_WAIT socket (`TcpExtPAWSTimewait`): the
//! mechanism of the collapse (docs/reliability.md, "Sustained load"). Before the fix, closed
//! flows gave up their source ports after 10-20 s (closing timeout 10 s, sweeper every 10 s)
//! while the backends held the 4-tuples in TIME_WAIT for 60 s; another client connection,
//! whose timestamps come from another clock, then got the port and its SYN was refused.

use std::time::{Duration, Instant};

use blixt_bench::end_to_end::backend_http::{BackendOptions, HttpBackend};
use blixt_bench::end_to_end::tcp_counters::TcpCounters;
use blixt_bench::end_to_end::wrk::{Wrk, WrkOptions};

#[path = "common/lab.rs"]
mod lab_support;
#[path = "common/standalone.rs"]
mod standalone_support;

/// The backends' port in examples/standalone/routes.yaml.
const PORT: u16 = 8080;
/// Windows of [`WINDOW`] each: 60 s.
const WINDOWS: usize = 12;
const WINDOW: Duration = Duration::from_secs(5);

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[test]
fn short_connections_sustain_their_rate_for_a_minute_on_one_lab() {
    let wrk = Wrk::new().expect("wrk (make deps installs it)");
    let s = standalone_support::StandaloneRun::start(
        "blixt-soak",
        &["gateway.yaml", "routes.yaml", "backends.yaml", "node.yaml"],
        |lab| {
            lab.backends
                .iter()
                .map(|b| {
                    HttpBackend::start_in(&b.ns, BackendOptions::new(b.name.clone(), PORT))
                        .expect("HTTP backend")
                })
                .collect::<Vec<_>>()
        },
    );
    let target = std::net::SocketAddr::new(s.vip(false), 80);
    let before: Vec<TcpCounters> = s
        .lab
        .backends
        .iter()
        .map(|b| TcpCounters::read(&b.ns).unwrap())
        .collect();
    let mut o = WrkOptions::new(WINDOW).closing();
    o.threads = 1;
    o.connections = 32;
    let t0 = Instant::now();
    let mut rates = Vec::new();
    let mut failed = 0;
    let mut lines = Vec::new();
    for _ in 0..WINDOWS {
        let r = wrk.run(&s.lab.client.ns, target, &o).expect("wrk");
        rates.push(r.rate());
        failed += r.errors();
        lines.push(format!(
            "t={:>3.0}s {:>7.0} conn/s p99 {:.1} ms ({})",
            t0.elapsed().as_secs_f64(),
            r.rate(),
            r.p99_us as f64 / 1e3,
            r.error_summary()
        ));
    }
    let mut moved = TcpCounters::default();
    for (b, was) in s.lab.backends.iter().zip(&before) {
        moved.add(&TcpCounters::read(&b.ns).unwrap().since(was));
    }
    let served: u64 = s.servers.iter().map(|h| h.stats().requests).sum();
    let med = median(&rates);
    let worst = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let report = format!(
        "{}\nmedian {med:.0} conn/s, worst window {worst:.0} ({:.0}%), failed {failed}, \
         served {served}; backends: {:?}",
        lines.join("\n"),
        100.0 * worst / med.max(1.0),
        moved.0
    );
    eprintln!("{report}");
    assert!(med > 100.0, "no sustained traffic at all:\n{report}");
    assert_eq!(failed, 0, "connections failed:\n{report}");
    assert!(
        worst >= med / 2.0,
        "a 5-second window fell below half the median:\n{report}"
    );
    assert_eq!(
        moved.get("TcpExt:PAWSTimewait"),
        0,
        "backends refused SYNs by PAWS against TIME_WAIT (a source port handed to another \
         client connection while the backend still held the tuple):\n{report}"
    );
}
