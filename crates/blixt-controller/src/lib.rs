//! Blixt's Kubernetes controller: the kube provider (watchers into the object index), the
//! translator loop, the status writer (leader only) and leader election. The translation is
//! the same pure function standalone mode uses; Kubernetes is only another way of filling the
//! object index.

pub mod agents;
pub mod crd;
pub mod delegation;
pub mod index;
pub mod leader;
pub mod status;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blixt_core::snapshot::Snapshot;
use blixt_core::tls::TlsFrontend;
use blixt_core::translator::{translate, Statuses, TranslatorConfig};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::delegation::ServiceWriter;
use crate::index::KubeIndex;
use crate::leader::{Leadership, LeaseConfig};
use crate::status::StatusWriter;

/// The CRDs the controller watches; startup fails with an install hint when one is missing.
pub const REQUIRED_CRDS: &[&str] = &[
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "tcproutes.gateway.networking.k8s.io",
    "udproutes.gateway.networking.k8s.io",
    "tlsroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
];

/// Checks the Gateway API CRDs are installed and serve v1.
pub async fn check_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in REQUIRED_CRDS {
        match api.get_opt(name).await.context("reading CRDs")? {
            Some(crd) if crd.spec.versions.iter().any(|v| v.name == "v1" && v.served) => {}
            Some(_) => missing.push(format!("{name} (installed, but v1 not served)")),
            None => missing.push(name.to_string()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "Gateway API CRDs missing: {}. Install the v1.6.1 standard channel: \
             kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml",
            missing.join(", ")
        );
    }
    Ok(())
}

/// What the translator loop publishes for snapshot distribution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub snapshot: Snapshot,
    pub tls: Vec<TlsFrontend>,
    /// VIPs agents must not announce: a load balancer announces them (delegated Gateways).
    pub not_announced: BTreeSet<IpAddr>,
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub translator: TranslatorConfig,
    pub lease: LeaseConfig,
    /// Least time between the starts of two translation passes. A change after a quiet spell
    /// is translated at once; changes that arrive while a pass runs or soon after it (they
    /// often come in bursts) wait until this long after that pass began and are translated
    /// together.
    pub debounce: Duration,
    /// Everything is rewritten this often, repairing statuses others changed.
    pub resync: Duration,
    /// The snapshot stream, when agents are served: a Gateway is `Programmed=True` only once an
    /// agent has acknowledged the generation that carries it (`False/Pending` until then).
    pub programmed_gate: Option<blixt_stream::SnapshotServer>,
}

/// Turns `Programmed=True` of every Gateway into `False/Pending` (or `False/Invalid` naming the
/// agents' errors) while no agent has applied `generation`.
fn gate_programmed(
    statuses: &mut Statuses,
    state: &blixt_stream::ProgrammedState,
    generation: u64,
) {
    use blixt_stream::ProgrammedState;
    let (reason, message) = match state {
        ProgrammedState::Programmed { .. } => return,
        ProgrammedState::Pending { .. } => (
            "Pending",
            format!("waiting for an agent to program generation {generation}"),
        ),
        ProgrammedState::Failed { errors } => (
            "Invalid",
            format!(
                "agents failed to program generation {generation}: {}",
                errors
                    .iter()
                    .map(|(n, (_, e))| format!("{n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    };
    for status in statuses.gateways.values_mut() {
        for c in status.conditions.iter_mut().flatten() {
            if c.type_ == "Programmed" && c.status == "True" {
                c.status = "False".into();
                c.reason = reason.into();
                c.message = message.clone();
            }
        }
    }
}

/// A running controller's handles.
#[derive(Debug, Clone)]
pub struct Running {
    pub leadership: Leadership,
    /// Every new snapshot (generation increases only when the snapshot changes).
    pub snapshots: watch::Receiver<Published>,
    /// The statuses of the latest translation.
    pub statuses: watch::Receiver<Statuses>,
}

/// Starts watching, electing and translating. Runs until the process ends.
pub async fn start(client: Client, opts: ControllerOptions) -> Result<Running> {
    check_crds(&client).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pools_installed = crds.get_opt("addresspools.blixt.dev").await?.is_some();
    if !pools_installed {
        warn!("the AddressPool CRD (addresspools.blixt.dev) is not installed: GatewayClasses with a parametersRef will be InvalidParameters; install deploy/helm/blixt/crds");
    }
    let changed = Arc::new(Notify::new());
    let index = KubeIndex::start(&client, changed.clone(), pools_installed);
    index
        .ready()
        .await
        .context("initial list of the watched kinds")?;
    info!("object index ready");
    let leadership = leader::spawn(client.clone(), opts.lease.clone());
    let (snap_tx, snap_rx) = watch::channel(Published::default());
    let (status_tx, status_rx) = watch::channel(Statuses::default());
    let running = Running {
        leadership: leadership.clone(),
        snapshots: snap_rx,
        statuses: status_rx,
    };
    tokio::spawn(async move {
        let mut writer = StatusWriter::default();
        let mut services = ServiceWriter::default();
        // generations keep increasing across restarts and leader changes: seeded from the clock
        let mut generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let mut first = true;
        let mut acks = opts.programmed_gate.as_ref().map(|g| g.changes());
        let mut was_leader = false;
        let mut last_resync = Instant::now();
        loop {
            let pass_started = Instant::now();
            let objects = index.objects();
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let pool_objects = index.address_pools();
            let (pools, problems) = crd::expand(&pool_objects);
            for p in &problems {
                warn!("{p}");
            }
            let mut config = opts.translator.clone();
            config.address_pools.extend(pools);
            config.delegated_pools = crd::delegating(&pool_objects);
            config.delegated_addresses = delegation::addresses_from_services(&objects.services);
            let t = translate(&objects, &config, &now);
            let not_announced: BTreeSet<IpAddr> = t
                .delegations
                .iter()
                .flat_map(|d| d.addresses.iter().copied())
                .collect();
            let published = Published {
                snapshot: Snapshot {
                    generation,
                    ..t.snapshot.clone()
                },
                tls: t.tls.clone(),
                not_announced: not_announced.clone(),
            };
            if published.snapshot.frontends != snap_tx.borrow().snapshot.frontends
                || published.tls != snap_tx.borrow().tls
                || published.not_announced != snap_tx.borrow().not_announced
                || first
            {
                first = false;
                generation += 1;
                snap_tx.send_replace(Published {
                    snapshot: Snapshot {
                        generation,
                        ..t.snapshot
                    },
                    tls: t.tls,
                    not_announced,
                });
                info!(generation, "new snapshot");
            }
            let leader = leadership.is_leader();
            if leader && (!was_leader || last_resync.elapsed() > opts.resync) {
                writer.reset();
                services.reset();
                last_resync = Instant::now();
            }
            was_leader = leader;
            let mut statuses = t.statuses;
            if let Some(gate) = &opts.programmed_gate {
                let generation = snap_tx.borrow().snapshot.generation;
                let state = gate.programmed(generation, Vec::<String>::new());
                gate_programmed(&mut statuses, &state, generation);
            }
            let mut failed = 0;
            if leader {
                failed = writer
                    .write(
                        &client,
                        &objects,
                        &statuses,
                        &opts.translator.controller_name,
                    )
                    .await;
                failed += services
                    .write(&client, &objects, &t.delegations, &statuses.gateways)
                    .await;
            }
            status_tx.send_replace(statuses);
            // wait for a change (or retry soon after failed writes / to notice leadership)
            let wait = if failed > 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(2)
            };
            match &mut acks {
                Some(acks) => {
                    tokio::select! {
                        _ = tokio::time::timeout(wait, changed.notified()) => {}
                        _ = acks.changed() => {}
                    }
                }
                None => {
                    let _ = tokio::time::timeout(wait, changed.notified()).await;
                }
            }
            tokio::time::sleep(opts.debounce.saturating_sub(pass_started.elapsed())).await;
            if failed > 0 {
                warn!(failed, "status writes failed; retrying");
            }
        }
    });
    Ok(running)
}
