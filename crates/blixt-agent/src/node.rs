//! The [`Node`]: the one place where a [`Generation`] is applied. Every source (a snapshot
//! file, the standalone manifests, the controller's stream) hands it whole generations; it
//! applies each in one order and reports one result:
//!
//! 1. the VIPs this node announces (ARP/NDP answers: the controller's share, or every VIP);
//! 2. the XDP snapshot, through the [`Reconciler`] (whole or not at all);
//! 3. the VIPs of TLS passthrough listeners, answered like the frontends';
//! 4. gratuitous ARP / unsolicited NA for the VIPs that started being announced here, where
//!    VIPs move between nodes;
//! 5. the TLS passthrough SNI tables ([`TlsService`]): a failure there is logged and shown by
//!    the service, TCP and UDP listeners keep serving;
//! 6. the node's metrics and one log line.
//!
//! A failure in steps 1–3 refuses the generation: the previous one keeps serving what was not
//! yet replaced, and the source reports the error (an ack, a log line).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Result;
use blixt_bpf::Dataplane;
use blixt_core::generation::Generation;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::metrics::{self, AgentMetrics};
use crate::reconciler::{monotonic_ns, ApplyError, ApplyReport, Reconciler};
use crate::runner::{self, AgentOptions};
use crate::tls::{TlsService, TlsStatus};

/// What a node runs besides the XDP dataplane, by where its generations come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeServices {
    /// TLS passthrough listeners (generations from manifests or the controller carry SNI
    /// tables; a snapshot file has none).
    pub tls_passthrough: bool,
    /// Gratuitous ARP / unsolicited NA when this node starts announcing a VIP (with
    /// [`AgentOptions::announce`]): the controller moves VIPs between nodes, and neighbours
    /// that cached the previous owner's MAC must switch at once.
    pub gratuitous_arp: bool,
}

/// A node's dataplane, TLS passthrough, VIP announcement and metrics.
#[derive(Debug)]
pub struct Node {
    rec: Arc<Mutex<Reconciler>>,
    metrics: Arc<AgentMetrics>,
    tls: Option<TlsService>,
    /// Interfaces to send gratuitous ARP / unsolicited NA on (none: not sent).
    garp_interfaces: Vec<String>,
}

impl Node {
    /// Loads (or re-adopts) and attaches the dataplane (see [`runner::start`]); with TLS
    /// passthrough, first removes the local routes of TLS VIPs that a killed earlier process
    /// left behind (the service itself starts with the first TLS listener).
    pub fn start(opts: &AgentOptions, services: NodeServices) -> Result<Node> {
        let rec = runner::start(opts)?;
        if services.tls_passthrough {
            if let Err(e) = blixt_tls::steer::flush_stale_routes() {
                warn!("removing stale local routes of TLS VIPs: {e:#}");
            }
        }
        Ok(Node {
            rec: Arc::new(Mutex::new(rec)),
            metrics: Arc::new(AgentMetrics::default()),
            tls: services.tls_passthrough.then(TlsService::default),
            garp_interfaces: if services.gratuitous_arp && opts.announce {
                opts.interfaces.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// Applies `generation` whole (see the module documentation for the order).
    pub fn apply(&self, generation: &Generation) -> Result<ApplyReport, ApplyError> {
        let number = generation.number();
        let t = Instant::now();
        let (report, started) = match self.apply_dataplane(generation) {
            Ok(applied) => applied,
            Err(e) => {
                self.metrics.refused.inc();
                error!(
                    generation = number,
                    "snapshot refused, previous one keeps serving: {e}"
                );
                return Err(e);
            }
        };
        self.gratuitous(&started);
        if let Some(tls) = &self.tls {
            tls.apply(number, generation.tls.clone());
        }
        let elapsed = t.elapsed();
        self.metrics.apply_seconds.observe(elapsed.as_secs_f64());
        self.metrics.applies.inc();
        self.metrics.generation.set(number as i64);
        info!(?report, elapsed_us = elapsed.as_micros() as u64, "applied");
        Ok(report)
    }

    /// Steps 1–3: announced VIPs, the snapshot, proxied VIPs. Returns the report and the VIPs
    /// that started being announced.
    fn apply_dataplane(
        &self,
        generation: &Generation,
    ) -> Result<(ApplyReport, Vec<IpAddr>), ApplyError> {
        let mut rec = self.reconciler();
        let mut started = rec.set_announced(generation.announce.clone())?;
        let report = rec.apply(&generation.snapshot)?;
        started.extend(&report.announced);
        started.extend(rec.set_proxied_vips(generation.proxied_vips())?);
        Ok((report, started))
    }

    /// Tells the neighbours that `vips` moved here; a failure is logged (they then learn the
    /// new owner when their entries go stale).
    fn gratuitous(&self, vips: &[IpAddr]) {
        match crate::garp::announce(&self.garp_interfaces, vips) {
            Ok(0) => {}
            Ok(frames) => info!(?vips, frames, "announced VIPs now owned by this node"),
            Err(e) => warn!(?vips, "gratuitous ARP / unsolicited NA: {e}"),
        }
    }

    /// Answers ARP/NDP for no VIP: until the controller says which VIPs are this node's
    /// (re-adopted ones may have moved while it was away), and when it leaves (a pinned
    /// dataplane left behind must not answer for VIPs other nodes took over).
    pub fn withdraw_announcements(&self) -> Result<(), ApplyError> {
        self.reconciler()
            .set_announced(Some(BTreeSet::new()))
            .map(drop)
    }

    /// Removes expired conntrack entries and records how many are left.
    pub fn sweep(&self) {
        let swept = self.reconciler().sweep(monotonic_ns());
        match swept {
            Ok(r) => {
                self.metrics
                    .conntrack_entries
                    .set((r.scanned - r.expired) as i64);
                if r.expired > 0 {
                    info!(scanned = r.scanned, expired = r.expired, "conntrack sweep");
                }
            }
            Err(e) => warn!("conntrack sweep: {e}"),
        }
    }

    /// Stops TLS passthrough (steering, local routes, listeners); the XDP dataplane stays.
    pub fn shutdown(&self) {
        if let Some(tls) = &self.tls {
            tls.shutdown();
        }
    }

    /// The reconciler, locked.
    pub fn reconciler(&self) -> MutexGuard<'_, Reconciler> {
        self.rec.lock().expect("reconciler lock")
    }

    /// The reconciler, for readers that outlive a borrow of the node.
    pub fn shared_reconciler(&self) -> Arc<Mutex<Reconciler>> {
        self.rec.clone()
    }

    /// The generation the dataplane serves (re-adopted from pins before the first apply).
    pub fn generation(&self) -> Option<u64> {
        self.reconciler().generation()
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    /// TLS passthrough's SNI tables and counters; `None` while it never had anything to do.
    pub fn tls_status(&self) -> Option<TlsStatus> {
        self.tls.as_ref().and_then(TlsService::status)
    }

    /// What the kernel offers and what the dataplane made of it.
    pub fn dataplane_status(&self) -> DataplaneStatus {
        DataplaneStatus::of(self.reconciler().dataplane_ref())
    }

    /// Serves `GET /metrics` (dataplane counters, the node's metrics, TLS passthrough's
    /// families) and `GET /healthz` on `addr` from a background thread.
    pub fn serve_metrics(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let node = self.clone();
        metrics::serve_with(addr, move || match node.rec.lock() {
            Ok(r) => {
                let mut out = metrics::render(&r, &node.metrics);
                drop(r);
                if let Some(tls) = &node.tls {
                    // one OpenMetrics document: the agent's, then TLS passthrough's
                    if let Some(stripped) = out.strip_suffix("# EOF\n") {
                        out.truncate(stripped.len());
                    }
                    out.push_str(&tls.render_metrics());
                }
                out
            }
            Err(_) => String::from("# agent state unavailable\n"),
        })
    }
}

/// The "dataplane" section of `blixt status`: kernel, attach mode per interface, fallbacks
/// active and why, every capability probed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataplaneStatus {
    pub kernel: String,
    /// auto, xdp or tc, as configured.
    pub attach: String,
    /// Interface name and how the load balancer runs there (xdp-native, xdp-generic, tc).
    pub interfaces: Vec<(String, String)>,
    /// `<capability>: <what runs instead> (<why>)`.
    pub fallbacks: Vec<String>,
    /// `<capability> yes|no (<why not>)`.
    pub capabilities: Vec<String>,
}

impl DataplaneStatus {
    pub fn of(dp: &Dataplane) -> DataplaneStatus {
        DataplaneStatus {
            kernel: dp.capabilities().kernel_release.clone(),
            attach: dp.plan().requested.to_string(),
            interfaces: dp
                .attached()
                .iter()
                .map(|(name, mode)| (name.clone(), mode.as_str().to_string()))
                .collect(),
            fallbacks: dp.plan().fallback_lines(),
            capabilities: dp.capabilities().report_lines(),
        }
    }

    /// The section as `blixt status` prints it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "dataplane: kernel {}, attach {}\n",
            self.kernel, self.attach
        );
        for (name, mode) in &self.interfaces {
            out.push_str(&format!("  interface {name}: {mode}\n"));
        }
        if self.fallbacks.is_empty() {
            out.push_str("  fallbacks: none\n");
        }
        for f in &self.fallbacks {
            out.push_str(&format!("  fallback {f}\n"));
        }
        out
    }
}
