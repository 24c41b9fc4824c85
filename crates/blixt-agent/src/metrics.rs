//! Prometheus metrics: the dataplane's per-CPU counters (read from the maps at scrape time,
//! labelled with frontend and backend names) and the agent's own (snapshot generation, apply
//! latency, refused snapshots).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::reconciler::Reconciler;

type Labels = Vec<(String, String)>;

/// Metrics the agent keeps between scrapes.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    pub generation: Gauge,
    pub applies: Counter,
    pub refused: Counter,
    pub apply_seconds: Histogram,
    pub conntrack_entries: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("blixt");
        let generation = Gauge::default();
        let applies = Counter::default();
        let refused = Counter::default();
        // 50 µs .. ~1.6 s
        let apply_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let conntrack_entries = Gauge::default();
        registry.register(
            "snapshot_generation",
            "Generation of the snapshot the dataplane serves",
            generation.clone(),
        );
        registry.register("snapshot_applies", "Snapshots applied", applies.clone());
        registry.register(
            "snapshot_refused",
            "Snapshots refused (the previous one kept serving)",
            refused.clone(),
        );
        registry.register(
            "snapshot_apply_seconds",
            "Time to apply a snapshot to the BPF maps",
            apply_seconds.clone(),
        );
        registry.register(
            "conntrack_entries",
            "Conntrack entries (both directions) at the last sweep",
            conntrack_entries.clone(),
        );
        AgentMetrics {
            registry,
            generation,
            applies,
            refused,
            apply_seconds,
            conntrack_entries,
        }
    }
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

/// The whole exposition: dataplane counters read now, then the agent's metrics.
pub fn render(rec: &Reconciler, agent: &AgentMetrics) -> String {
    let mut registry = Registry::with_prefix("blixt");
    let fe_flows = counter_family(
        &mut registry,
        "frontend_new_flows",
        "New flows per frontend",
    );
    let fe_rejects = counter_family(
        &mut registry,
        "frontend_rejects",
        "Flows rejected per frontend (no valid backend, or the invalid-backend share)",
    );
    let be_packets = counter_family(&mut registry, "backend_packets", "Packets per backend");
    let be_bytes = counter_family(&mut registry, "backend_bytes", "Bytes per backend");
    let be_flows = counter_family(&mut registry, "backend_new_flows", "New flows per backend");
    let events = counter_family(
        &mut registry,
        "dataplane_events",
        "Drops, rejects and other dataplane events by reason",
    );
    for fe in rec.view() {
        let base = vec![
            ("frontend".to_string(), fe.name.clone()),
            ("vip".to_string(), fe.key.vip.to_string()),
            ("port".to_string(), fe.key.port.to_string()),
            ("protocol".to_string(), fe.key.protocol.to_string()),
        ];
        if let Ok(c) = rec.frontend_counters(fe.id) {
            fe_flows.get_or_create(&base).inc_by(c.new_flows);
            fe_rejects.get_or_create(&base).inc_by(c.rejects);
        }
        for (addr, id, state, _) in &fe.backends {
            let mut labels = base.clone();
            labels.push(("backend".to_string(), addr.to_string()));
            labels.push(("state".to_string(), format!("{state:?}").to_lowercase()));
            if let Ok(c) = rec.backend_counters(*id) {
                be_packets.get_or_create(&labels).inc_by(c.packets);
                be_bytes.get_or_create(&labels).inc_by(c.bytes);
                be_flows.get_or_create(&labels).inc_by(c.new_flows);
            }
        }
    }
    dataplane_gauges(&mut registry, rec.dataplane_ref());
    if let Ok(g) = rec.global_counters() {
        for (name, v) in blixt_bpf::shared::STAT_NAMES.iter().zip(g) {
            events
                .get_or_create(&vec![("reason".to_string(), name.to_string())])
                .inc_by(v);
        }
    }
    let mut out = String::new();
    let _ = encode(&mut out, &registry);
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    let _ = encode(&mut out, &agent.registry);
    out
}

/// What the kernel offers and what the dataplane made of it, as info-style gauges (value 1, or
/// 0/1 per capability).
fn dataplane_gauges(registry: &mut Registry, dp: &blixt_bpf::Dataplane) {
    let gauge_family = |registry: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge>::default();
        registry.register(name, help, f.clone());
        f
    };
    let label = |k: &str, v: &str| (k.to_string(), v.to_string());
    let caps = dp.capabilities();
    let plan = dp.plan();
    gauge_family(
        registry,
        "dataplane_info",
        "The dataplane: kernel release, requested attach mode, default hook (value 1)",
    )
    .get_or_create(&vec![
        label("kernel", &caps.kernel_release),
        label("attach", plan.requested.as_str()),
        label("hook", plan.hook.as_str()),
    ])
    .set(1);
    let capability = gauge_family(
        registry,
        "dataplane_capability",
        "Kernel capabilities the dataplane can use (1) or not (0: missing or forced off)",
    );
    for (c, present) in caps.iter() {
        capability
            .get_or_create(&vec![label("capability", c.name())])
            .set(i64::from(present));
    }
    let fallback = gauge_family(
        registry,
        "dataplane_fallback",
        "Fallbacks active because a capability is missing (value 1)",
    );
    for f in &plan.fallbacks {
        fallback
            .get_or_create(&vec![label("capability", f.capability.name())])
            .set(1);
    }
    let iface = gauge_family(
        registry,
        "dataplane_interface",
        "Interfaces the load balancer is attached to, by mode (value 1)",
    );
    for (name, mode) in dp.attached() {
        iface
            .get_or_create(&vec![
                label("interface", name),
                label("mode", mode.as_str()),
            ])
            .set(1);
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `addr` from a background thread.
pub fn serve(
    addr: SocketAddr,
    rec: Arc<Mutex<Reconciler>>,
    agent: Arc<AgentMetrics>,
) -> std::io::Result<SocketAddr> {
    serve_with(addr, move || match rec.lock() {
        Ok(r) => render(&r, &agent),
        Err(_) => String::from("# agent state unavailable\n"),
    })
}

/// Serves `GET /metrics` (whatever `render` returns, OpenMetrics text) and `GET /healthz` on
/// `addr` from a background thread: the one small HTTP endpoint the agent, `blixt run` (which
/// adds TLS families) and the controller share.
pub fn serve_with(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    info!(%local, "metrics at http://{local}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/metrics" => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        render(),
                    ),
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = conn.write_all(resp.as_bytes()) {
                    warn!("metrics: writing the response: {e}");
                }
            }
        })?;
    Ok(local)
}
