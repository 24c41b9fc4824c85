//! The controller's side: publishes snapshots to every subscribed agent and records their acks.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use blixt_core::generation::Generation;
use blixt_core::snapshot::{Snapshot, SnapshotError};
use blixt_core::tls::TlsFrontend;
use blixt_proto::pb;
use blixt_proto::pb::snapshot_service_server::SnapshotServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::auth::{AccessPolicy, AuthRequest, Authenticator, Identity};
use crate::owners;
use crate::tls::{tls_incoming, ServerTls, TlsError};

/// The published generation and what is derived from it once for every subscriber.
#[derive(Debug)]
struct Current {
    generation: Arc<Generation>,
    /// Converted once per generation, not once per subscriber (`announce` is set by each
    /// subscriber for its node).
    wire: pb::SnapshotUpdate,
    /// [`Generation::announced`]: the VIPs the agents announce, split among them.
    vips: BTreeSet<IpAddr>,
}

/// The last ack of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    pub generation: u64,
    pub ok: bool,
    /// Why the node could not apply `generation` (it serves its previous one).
    pub error: Option<String>,
    pub last_seen: SystemTime,
}

/// What the server knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The last ack, successful or not.
    pub last_ack: Option<AckRecord>,
    /// The newest generation the node acked as applied.
    pub applied: Option<u64>,
    /// Open subscriptions (more than one while a restarted agent's old stream drains).
    pub subscriptions: usize,
    pub agent_version: String,
    /// The identity the node last authenticated as, for logs and `blixt inspect`.
    pub identity: String,
    /// Last subscription, ack or disconnection.
    pub last_seen: SystemTime,
}

/// Whether a generation is programmed on the nodes that should program it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgrammedState {
    /// Every expected node serves this generation or a newer one.
    Programmed { nodes: Vec<String> },
    /// Some node refused or failed to apply it (and serves an older one); it will not
    /// converge before the next generation.
    Failed {
        /// node -> (generation it failed on, error)
        errors: BTreeMap<String, (u64, String)>,
    },
    /// Waiting for these nodes' acks (empty when any node would do and none has acked).
    Pending { waiting: Vec<String> },
}

impl ProgrammedState {
    pub fn is_programmed(&self) -> bool {
        matches!(self, ProgrammedState::Programmed { .. })
    }
}

/// Why [`SnapshotServer::publish`] refused a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("generation {offered} is not newer than the published generation {current}")]
    NotNewer { current: u64, offered: u64 },
    #[error("invalid snapshot: {0}")]
    Invalid(#[source] SnapshotError),
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

struct Inner {
    current: watch::Sender<Option<Arc<Current>>>,
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
    /// Nodes with an open subscription: the candidates for owning VIPs.
    live: watch::Sender<BTreeSet<String>>,
    keepalive: Mutex<Keepalive>,
    changes: watch::Sender<()>,
    authenticator: Arc<dyn Authenticator>,
    policy: AccessPolicy,
}

/// HTTP/2 pings from the server: an agent that does not answer one within `timeout` is
/// dropped, its subscription ends and its VIPs move to other agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The snapshot distributor of the controller. Cheap to clone; every clone is the same
/// server.
///
/// Every subscriber gets the same snapshot; what differs is the set of VIPs it announces
/// (`SnapshotUpdate.announce`): each VIP has one owner among the subscribed nodes (see
/// [`owners`](crate::owners)), and an agent's stream carries a new update whenever its share
/// changes (a node subscribed or went away), with the same generation when only the share
/// changed.
///
/// Subscribers get the current snapshot when they connect and then every newer generation;
/// one that reads slowly skips to the newest (a `watch` channel: never a backlog). Before the
/// first [`publish`](Self::publish), and after [`withdraw`](Self::withdraw), subscriptions are
/// answered `UNAVAILABLE`, so agents retry (and reach the leader through the Service).
#[derive(Clone)]
pub struct SnapshotServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SnapshotServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotServer")
            .field("generation", &self.current_generation())
            .field("authenticator", &self.inner.authenticator)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Checks a node name the way Kubernetes does (an RFC 1123 subdomain).
pub(crate) fn check_node_name(field: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: {name:?} is not a node name (lowercase RFC 1123 subdomain)"
        )))
    }
}

impl SnapshotServer {
    pub fn new(authenticator: Arc<dyn Authenticator>, policy: AccessPolicy) -> Self {
        SnapshotServer {
            inner: Arc::new(Inner {
                current: watch::Sender::new(None),
                nodes: Mutex::new(BTreeMap::new()),
                live: watch::Sender::new(BTreeSet::new()),
                keepalive: Mutex::new(Keepalive::default()),
                changes: watch::Sender::new(()),
                authenticator,
                policy,
            }),
        }
    }

    /// Makes `snapshot` (with its generation) and the TLS frontends current, every VIP
    /// announced: [`publish_generation`](Self::publish_generation) of them.
    pub fn publish(&self, snapshot: Snapshot, tls: Vec<TlsFrontend>) -> Result<(), PublishError> {
        self.publish_generation(Generation {
            snapshot,
            tls,
            announce: None,
        })
    }

    /// Makes `generation` current. Generation numbers must increase; across controller
    /// restarts and leader changes too if acks are to compare (seed the counter from the clock,
    /// for instance). Its [`announce`](Generation::announce) set, when given, leaves out VIPs
    /// no agent announces (ARP/NDP) because something else does: the addresses a LoadBalancer
    /// Service got for a delegating Gateway. The VIPs announced are split among the subscribed
    /// agents.
    pub fn publish_generation(&self, generation: Generation) -> Result<(), PublishError> {
        generation
            .snapshot
            .validate()
            .map_err(PublishError::Invalid)?;
        let number = generation.number();
        let published = Arc::new(Current {
            vips: generation.announced(),
            wire: pb::SnapshotUpdate::from_core(&generation.snapshot, &generation.tls),
            generation: Arc::new(generation),
        });
        let mut refused = None;
        self.inner.current.send_if_modified(|cur| match cur {
            Some(c) if c.generation.number() >= number => {
                refused = Some(c.generation.number());
                false
            }
            _ => {
                *cur = Some(published);
                true
            }
        });
        if let Some(current) = refused {
            return Err(PublishError::NotNewer {
                current,
                offered: number,
            });
        }
        debug!(generation = number, "snapshot published");
        Ok(())
    }

    /// Stops serving (leadership lost): open subscriptions end with `UNAVAILABLE` and new ones
    /// are refused until the next [`publish`](Self::publish). Agents keep what they applied.
    pub fn withdraw(&self) {
        self.inner.current.send_replace(None);
    }

    /// The published generation, if any.
    pub fn current_generation(&self) -> Option<u64> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .map(|p| p.generation.number())
    }

    /// The published generation, if any.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .map(|p| p.generation.clone())
    }

    /// The owner of every VIP of the published snapshot among the subscribed nodes (empty
    /// before the first publish; VIPs are missing while no node is subscribed).
    pub fn vip_owners(&self) -> BTreeMap<IpAddr, String> {
        let current = self.inner.current.borrow();
        let Some(p) = current.as_ref() else {
            return BTreeMap::new();
        };
        owners::owners(&p.vips, &self.inner.live.borrow())
    }

    /// Changes whenever the set of subscribed nodes changes (and so, maybe, VIP owners).
    pub fn live_nodes(&self) -> watch::Receiver<BTreeSet<String>> {
        self.inner.live.subscribe()
    }

    /// Sets the HTTP/2 keepalive of [`serve`](Self::serve) (for servers started after).
    pub fn set_keepalive(&self, keepalive: Keepalive) {
        *self
            .inner
            .keepalive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keepalive;
    }

    /// The last ack of every node that acked.
    pub fn acks(&self) -> BTreeMap<String, AckRecord> {
        self.lock_nodes()
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.last_ack.clone()?)))
            .collect()
    }

    /// Every node seen since this server started (or since [`forget_node`](Self::forget_node)).
    pub fn nodes(&self) -> BTreeMap<String, NodeStatus> {
        self.lock_nodes().clone()
    }

    /// Drops what is known of a node (its Node object was deleted).
    pub fn forget_node(&self, node: &str) {
        let mut nodes = self.lock_nodes();
        if nodes.remove(node).is_some() {
            self.update_live(&nodes);
            drop(nodes);
            self.inner.changes.send_replace(());
        }
    }

    /// Changes whenever a node subscribes, disconnects or acks: the status writer waits on it
    /// to re-evaluate [`programmed`](Self::programmed).
    pub fn changes(&self) -> watch::Receiver<()> {
        self.inner.changes.subscribe()
    }

    /// Whether `generation` is programmed on every node of `expected_nodes`; with no expected
    /// node, whether at least one node programmed it (the "no agent has acknowledged" rule).
    /// A node programmed a generation when it acked it, or a newer one, as applied.
    pub fn programmed<I, S>(&self, generation: u64, expected_nodes: I) -> ProgrammedState
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = self.lock_nodes();
        let mut expected: Vec<String> = expected_nodes
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        let any = expected.is_empty();
        if any {
            expected = nodes.keys().cloned().collect();
        }
        let mut done = Vec::new();
        let mut waiting = Vec::new();
        let mut errors = BTreeMap::new();
        for node in expected {
            let status = nodes.get(&node);
            if status
                .and_then(|s| s.applied)
                .is_some_and(|a| a >= generation)
            {
                done.push(node);
                continue;
            }
            match status.and_then(|s| s.last_ack.as_ref()) {
                Some(ack) if !ack.ok && ack.generation >= generation => {
                    let error = ack.error.clone().unwrap_or_default();
                    errors.insert(node, (ack.generation, error));
                }
                _ => waiting.push(node),
            }
        }
        if any {
            return if !done.is_empty() {
                ProgrammedState::Programmed { nodes: done }
            } else if !errors.is_empty() {
                ProgrammedState::Failed { errors }
            } else {
                ProgrammedState::Pending {
                    waiting: Vec::new(),
                }
            };
        }
        if !errors.is_empty() {
            ProgrammedState::Failed { errors }
        } else if !waiting.is_empty() {
            ProgrammedState::Pending { waiting }
        } else {
            ProgrammedState::Programmed { nodes: done }
        }
    }

    /// The gRPC service, to add to a tonic server of one's own. Cancelling `stop` ends every
    /// open subscription; do it when shutting that server down, or its graceful shutdown waits
    /// for streams that never end.
    pub fn service(&self, stop: CancellationToken) -> SnapshotServiceServer<SnapshotService> {
        SnapshotServiceServer::new(SnapshotService {
            server: self.clone(),
            stop,
        })
    }

    /// Serves on `listener` until `shutdown` completes: TLS when `tls` is given (required for
    /// client certificates, and to keep bearer tokens off the wire), plaintext otherwise.
    /// Open subscriptions end at shutdown so agents reconnect elsewhere.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<&ServerTls>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let stop = CancellationToken::new();
        let addr = listener.local_addr().ok();
        let keepalive = *self
            .inner
            .keepalive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut builder = tonic::transport::Server::builder()
            // Finds agents that vanished without closing (node down, partition), so that their
            // VIPs move to agents that are still there.
            .http2_keepalive_interval(Some(keepalive.interval))
            .http2_keepalive_timeout(Some(keepalive.timeout))
            .tcp_nodelay(true);
        let router = builder.add_service(self.service(stop.clone()));
        let signal = {
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        };
        info!(?addr, tls = tls.is_some(), "snapshot server listening");
        let result = match tls {
            Some(tls) => {
                let incoming = tls_incoming(listener, tls.server_config()?, stop.clone());
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => {
                let incoming = TcpListenerStream::new(listener);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        stop.cancel();
        Ok(result?)
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeStatus>> {
        // A panic while holding this lock leaves consistent data (plain inserts): keep going.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn authorize<T>(&self, req: &Request<T>, node_name: &str) -> Result<Identity, Status> {
        let certs = req.peer_certs();
        let auth = AuthRequest {
            metadata: req.metadata(),
            peer_certs: certs
                .as_deref()
                .map(Vec::as_slice)
                .filter(|c| !c.is_empty()),
            remote_addr: req.remote_addr(),
        };
        let identity = match self.inner.authenticator.authenticate(&auth).await {
            Ok(id) => id,
            Err(status) => {
                // Agents retry with backoff, so this stays readable even when misconfigured.
                info!(peer = ?auth.remote_addr, code = ?status.code(),
                      "snapshot server refused a caller: {}", status.message());
                return Err(status);
            }
        };
        check_node_name("node_name", node_name)?;
        if let Err(status) = self.inner.policy.check(&identity, node_name) {
            info!(peer = ?auth.remote_addr, "snapshot server denied: {}", status.message());
            return Err(status);
        }
        Ok(identity)
    }

    fn connected(&self, node: &str, identity: &Identity, agent_version: &str) {
        let now = SystemTime::now();
        let mut nodes = self.lock_nodes();
        let s = nodes.entry(node.to_owned()).or_insert_with(|| NodeStatus {
            last_ack: None,
            applied: None,
            subscriptions: 0,
            agent_version: String::new(),
            identity: String::new(),
            last_seen: now,
        });
        s.subscriptions += 1;
        s.agent_version = agent_version.to_owned();
        s.identity = identity.to_string();
        s.last_seen = now;
        self.update_live(&nodes);
        drop(nodes);
        self.inner.changes.send_replace(());
    }

    fn disconnected(&self, node: &str) {
        let mut nodes = self.lock_nodes();
        if let Some(s) = nodes.get_mut(node) {
            s.subscriptions = s.subscriptions.saturating_sub(1);
            s.last_seen = SystemTime::now();
        }
        self.update_live(&nodes);
        drop(nodes);
        self.inner.changes.send_replace(());
    }

    /// Recomputes the subscribed nodes; called with the nodes lock held, so updates to the
    /// live set happen in the order of the changes that caused them.
    fn update_live(&self, nodes: &BTreeMap<String, NodeStatus>) {
        let live: BTreeSet<String> = nodes
            .iter()
            .filter(|(_, s)| s.subscriptions > 0)
            .map(|(n, _)| n.clone())
            .collect();
        self.inner.live.send_if_modified(|cur| {
            if *cur == live {
                return false;
            }
            info!(nodes = ?live, "subscribed agents changed; VIP owners follow");
            *cur = live;
            true
        });
    }

    fn record_ack(&self, ack: &pb::AckRequest, identity: &Identity) {
        let now = SystemTime::now();
        let mut nodes = self.lock_nodes();
        let s = nodes
            .entry(ack.node_name.clone())
            .or_insert_with(|| NodeStatus {
                last_ack: None,
                applied: None,
                subscriptions: 0,
                agent_version: String::new(),
                identity: identity.to_string(),
                last_seen: now,
            });
        s.last_ack = Some(AckRecord {
            generation: ack.generation,
            ok: ack.ok,
            error: (!ack.ok).then(|| ack.error.clone()),
            last_seen: now,
        });
        if ack.ok {
            // The agent applies whatever the server sends, so its newest ack is what it
            // serves, even when lower (a controller restarted with a lower counter).
            s.applied = Some(ack.generation);
        }
        s.last_seen = now;
        drop(nodes);
        self.inner.changes.send_replace(());
    }
}

/// Longest ack error kept: it ends up in status conditions, which have their own limits.
const MAX_ACK_ERROR: usize = 2048;

/// Cuts `s` to at most `max` bytes, on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// The tonic service of a [`SnapshotServer`] (see [`SnapshotServer::service`]).
#[derive(Debug, Clone)]
pub struct SnapshotService {
    server: SnapshotServer,
    stop: CancellationToken,
}

/// Ends a subscription's bookkeeping when its stream goes away, however it ends.
struct Subscription {
    server: SnapshotServer,
    node: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        debug!(node = %self.node, "agent unsubscribed");
        self.server.disconnected(&self.node);
    }
}

#[tonic::async_trait]
impl pb::snapshot_service_server::SnapshotService for SnapshotService {
    type SubscribeStream = ReceiverStream<Result<pb::SnapshotUpdate, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let identity = self
            .server
            .authorize(&req, &req.get_ref().node_name)
            .await?;
        let sub = req.into_inner();
        let mut rx = self.server.inner.current.subscribe();
        if rx.borrow_and_update().is_none() {
            return Err(Status::unavailable(
                "no snapshot to serve (this controller is not the leader, or has not translated yet)",
            ));
        }
        rx.mark_changed();
        info!(node = %sub.node_name, %identity, agent_version = %sub.agent_version,
              last_generation = sub.last_generation, "agent subscribed");
        self.server
            .connected(&sub.node_name, &identity, &sub.agent_version);
        // After `connected`: this node is in the live set from the first message on.
        let mut live = self.server.inner.live.subscribe();
        let node = sub.node_name.clone();
        let guard = Subscription {
            server: self.server.clone(),
            node: sub.node_name,
        };
        // One message in flight at most: while the agent reads slowly, the watch channel keeps
        // only the newest generation, which is the next one sent.
        let (tx, out) = mpsc::channel(1);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // What this stream sent last: nothing is resent while neither changes.
            let mut sent: Option<(u64, BTreeSet<IpAddr>)> = None;
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    changed = live.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    () = stop.cancelled() => {
                        let _ = tx.try_send(Err(Status::unavailable("snapshot server shutting down")));
                        break;
                    }
                }
                let msg = match &*rx.borrow_and_update() {
                    Some(p) => {
                        let mine = owners::announced_by(&node, &p.vips, &live.borrow_and_update());
                        let this = (p.generation.number(), mine);
                        if sent.as_ref() == Some(&this) {
                            continue;
                        }
                        let mut wire = p.wire.clone();
                        wire.announce = Some(pb::Announce::from_core(&this.1));
                        debug!(%node, generation = this.0, announce = ?this.1, "sending");
                        sent = Some(this);
                        Ok(wire)
                    }
                    None => Err(Status::unavailable(
                        "snapshot server withdrew (leadership lost); reconnect",
                    )),
                };
                let last = msg.is_err();
                tokio::select! {
                    sent = tx.send(msg) => if sent.is_err() { break },
                    () = stop.cancelled() => break,
                }
                if last {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let identity = self
            .server
            .authorize(&req, &req.get_ref().node_name)
            .await?;
        let mut ack = req.into_inner();
        // An ack counts for its generation and every older one, so one for a generation this
        // server never published would make `programmed` lie.
        if let Some(current) = self.server.current_generation() {
            if ack.generation > current {
                return Err(Status::invalid_argument(format!(
                    "generation: {} was never published (current is {current})",
                    ack.generation
                )));
            }
        }
        truncate(&mut ack.error, MAX_ACK_ERROR);
        if ack.ok {
            debug!(node = %ack.node_name, generation = ack.generation, "agent applied");
        } else {
            info!(node = %ack.node_name, generation = ack.generation, error = %ack.error,
                  "agent could not apply the snapshot");
        }
        self.server.record_ack(&ack, &identity);
        Ok(Response::new(pb::AckResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_on_char_boundary() {
        let mut s = "ééé".to_string();
        truncate(&mut s, 3);
        assert_eq!(s, "é…");
        let mut s = "short".to_string();
        truncate(&mut s, 10);
        assert_eq!(s, "short");
    }

    #[test]
    fn node_names() {
        for ok in ["a", "node-1", "ip-10-0-0-1.eu-west-1.compute.internal"] {
            assert!(check_node_name("n", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Node", "-a", "a-", "a..b", "a_b", &"a".repeat(64)] {
            let err = check_node_name("node_name", bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(err.message().starts_with("node_name: "));
        }
    }
}
