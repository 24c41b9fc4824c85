//! Blixt's Kubernetes controller: the kube provider (watchers into the object index), the
//! translator loop, the status writer (leader only) and leader election. The translation is
//! the same pure function standalone mode uses; Kubernetes is only another way of filling the
//! object index.

pub mod agents;
pub mod crd;
pub mod delegation;
pub mod index;
pub mod leader;
pub mod programmed;
pub mod publish;
pub mod reserved;
pub mod status;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blixt_core::generation::Generation;
use blixt_core::snapshot::Snapshot;
use blixt_core::translator::{translate, Delegation, Owners, Statuses, TranslatorConfig};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::delegation::ServiceWriter;
use crate::index::{KubeIndex, Wakeups};
use crate::leader::{Leadership, LeaseConfig};
use crate::programmed::{ChangedIn, ProgrammedGate};
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
        let version = blixt_gateway_api::BUNDLE_VERSION;
        bail!(
            "Gateway API CRDs missing: {}. Install the {version} standard channel: \
             kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{version}/standard-install.yaml",
            missing.join(", ")
        );
    }
    Ok(())
}

/// How long a status-only update waits before it is translated (a change to anything else
/// comes first; see [`Wakeups`]).
const STATUS_ONLY_DELAY: Duration = Duration::from_secs(1);
/// How long a programmed Gateway stays `Programmed=True` while agents apply a newer
/// generation of its part (see [`programmed`]): agents apply a route change in tens of
/// milliseconds, so only a stalled or absent agent shows as `Pending`.
const PROGRAMMED_GRACE: Duration = Duration::from_secs(1);

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

/// A running controller's handles.
#[derive(Debug, Clone)]
pub struct Running {
    pub leadership: Leadership,
    /// Every new generation for the agents (its number increases only when the snapshot, the
    /// SNI tables or the VIPs announced change). Its `announce` leaves out the VIPs a load
    /// balancer announces (delegated Gateways).
    pub snapshots: watch::Receiver<Generation>,
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
    let wake = Arc::new(Wakeups::default());
    let index = KubeIndex::start(&client, wake.clone(), pools_installed);
    index
        .ready()
        .await
        .context("initial list of the watched kinds")?;
    info!("object index ready");
    let leadership = leader::spawn(client.clone(), opts.lease.clone());
    let (snap_tx, snap_rx) = watch::channel(Generation::default());
    let (status_tx, status_rx) = watch::channel(Statuses::default());
    let running = Running {
        leadership: leadership.clone(),
        snapshots: snap_rx,
        statuses: status_rx,
    };
    let (work_tx, work_rx) = watch::channel(None);
    tokio::spawn(write_statuses(
        client,
        index.clone(),
        opts.clone(),
        leadership,
        work_rx,
        status_tx,
    ));
    tokio::spawn(async move {
        // generations keep increasing across restarts and leader changes: seeded from the clock
        let mut generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let mut changed_in = ChangedIn::default();
        let mut previous_delegations = Vec::new();
        // The Gateway owning each part, and the VIPs agents must not announce (a load balancer
        // announces them: delegated Gateways), of the last published generation.
        let mut previous_owners = Owners::default();
        let mut previous_not_announced = BTreeSet::new();
        let mut first = true;
        loop {
            let pass_started = Instant::now();
            let mut objects = index.objects();
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            // what is observed besides the objects: the pools, the load balancers' answers,
            // and the addresses the cluster's network already uses
            let (pools, problems) = crd::observe(&index.address_pools());
            for p in &problems {
                warn!("{p}");
            }
            objects.address_pools = pools;
            objects.delegated_addresses = delegation::addresses_from_services(&objects.services);
            objects.reserved_addresses = reserved::reserved_addresses(&index.nodes(), &objects);
            let t = translate(&objects, &opts.translator, &now);
            let not_announced: BTreeSet<IpAddr> = t
                .delegations
                .iter()
                .flat_map(|d| d.addresses.iter().copied())
                .collect();
            let new_generation = {
                let current = snap_tx.borrow();
                first
                    || t.snapshot.frontends != current.snapshot.frontends
                    || t.tls != current.tls
                    || not_announced != previous_not_announced
            };
            if new_generation {
                generation += 1;
                let mut next = Generation {
                    snapshot: Snapshot {
                        generation,
                        ..t.snapshot
                    },
                    tls: t.tls,
                    announce: None,
                };
                next.announce = Some(&next.announced() - &not_announced);
                let previous = snap_tx.borrow().clone();
                changed_in.observe(
                    (!first).then_some((
                        &previous,
                        &previous_owners,
                        previous_delegations.as_slice(),
                    )),
                    (&next, &t.owners, &t.delegations),
                );
                first = false;
                previous_owners = t.owners;
                previous_not_announced = not_announced;
                snap_tx.send_replace(next);
                info!(generation, "new snapshot");
            }
            previous_delegations.clone_from(&t.delegations);
            // statuses are written by their own task: a slow API server never holds up the
            // next snapshot
            work_tx.send_replace(Some(Arc::new(StatusWork {
                statuses: t.statuses,
                delegations: t.delegations,
                changed_in: changed_in.clone(),
            })));
            // A change is translated at once after a quiet spell; changes soon after a pass
            // wait until `debounce` after its start and go together. A status-only update
            // (mostly the echo of this controller's own writes) waits longer, unless a change
            // comes meanwhile: echoes must not hold up changes.
            tokio::select! {
                _ = wake.changed.notified() => {}
                _ = wake.status_changed.notified() => {
                    tokio::select! {
                        _ = wake.changed.notified() => {}
                        _ = tokio::time::sleep(STATUS_ONLY_DELAY) => {}
                    }
                }
            }
            tokio::time::sleep(opts.debounce.saturating_sub(pass_started.elapsed())).await;
        }
    });
    Ok(running)
}

/// What one translation pass hands the status writer.
#[derive(Debug)]
struct StatusWork {
    /// As translated, before the `Programmed` gate.
    statuses: Statuses,
    delegations: Vec<Delegation>,
    changed_in: ChangedIn,
}

/// The status writer: applies the `Programmed` gate to the newest pass's statuses and, while
/// leader, writes what changed. Runs again on each pass, each agent ack, and every two seconds
/// (to notice leadership; a second after failed writes).
async fn write_statuses(
    client: Client,
    index: KubeIndex,
    opts: ControllerOptions,
    leadership: Leadership,
    mut work: watch::Receiver<Option<Arc<StatusWork>>>,
    status_tx: watch::Sender<Statuses>,
) {
    let mut writer = StatusWriter::default();
    let mut services = ServiceWriter::default();
    let mut gate = ProgrammedGate::with_grace(PROGRAMMED_GRACE);
    let mut acks = opts.programmed_gate.as_ref().map(|g| g.changes());
    let mut was_leader = false;
    let mut last_resync = Instant::now();
    loop {
        let current = work.borrow_and_update().clone();
        let mut failed = 0;
        if let Some(current) = current {
            let leader = leadership.is_leader();
            if leader && (!was_leader || last_resync.elapsed() > opts.resync) {
                writer.reset();
                services.reset();
                last_resync = Instant::now();
            }
            was_leader = leader;
            let mut statuses = current.statuses.clone();
            if let Some(server) = &opts.programmed_gate {
                let now = Time(k8s_openapi::jiff::Timestamp::now());
                gate.apply(
                    &mut statuses,
                    &current.changed_in,
                    |generation| server.programmed(generation, Vec::<String>::new()),
                    &now,
                    Instant::now(),
                );
            }
            if leader {
                // the live objects, not the pass's: route writes are guarded by the newest
                // resourceVersion (this writer's own last write included) and keep the
                // newest entries of other controllers
                let objects = index.objects();
                let controller = &opts.translator.controller_name;
                failed = writer.write(&client, &objects, &statuses, controller).await;
                failed += services
                    .write(&client, &objects, &current.delegations, &statuses.gateways)
                    .await;
            }
            status_tx.send_replace(statuses);
        }
        if failed > 0 {
            warn!(failed, "status writes failed; retrying");
        }
        let mut wait = Duration::from_secs(if failed > 0 { 1 } else { 2 });
        if let Some(deadline) = gate.next_deadline(Instant::now()) {
            // a Gateway held Programmed by the grace turns Pending then, unless acked first
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        }
        let acked = async {
            let open = match &mut acks {
                Some(acks) => acks.changed().await.is_ok(),
                None => false,
            };
            if !open {
                // no ack channel (or a closed one) never wakes the writer
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = work.changed() => if r.is_err() { return },
            _ = acked => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
