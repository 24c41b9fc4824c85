//! The kube provider: one reflector per kind the translator reads, filling stores (without the
//! bookkeeping fields the translator never reads, see [`strip_bookkeeping`]); every event
//! (including deletions) wakes the translator loop, updates of a status Blixt writes through
//! [`Wakeups::status_changed`]. `KubeIndex::objects()` hands the stores'
//! objects to the translator's `ObjectIndex` by pointer: the stores hold the only copy.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use blixt_core::translator::ObjectIndex;
use blixt_gateway_api::{Gateway, GatewayClass, ReferenceGrant, TcpRoute, TlsRoute, UdpRoute};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::warn;

use crate::crd::AddressPool;

/// Stores of every kind the translator reads.
#[derive(Clone)]
pub struct KubeIndex {
    gateway_classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    tcp_routes: Store<TcpRoute>,
    udp_routes: Store<UdpRoute>,
    tls_routes: Store<TlsRoute>,
    reference_grants: Store<ReferenceGrant>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    /// Blixt's AddressPools, when their CRD is installed.
    address_pools: Option<Store<AddressPool>>,
    /// Nodes, reduced to their names and addresses ([`node_addresses_only`]).
    nodes: Store<Node>,
}

impl std::fmt::Debug for KubeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeIndex").finish_non_exhaustive()
    }
}

/// Annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the translator never reads and that can be as big as the object itself before
/// it reaches a store: `managedFields` (server-side apply's field ownership: for an
/// EndpointSlice a path per endpoint field) and kubectl's last-applied copy. At 10,000 routes
/// and 100,000 endpoints they were about half of the controller's memory. Status writes use
/// server-side apply, which needs neither.
pub fn strip_bookkeeping<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What wakes the translator loop.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// An object was added, deleted, or changed beyond its status: translate soon.
    pub changed: Notify,
    /// Only the status of an object whose status Blixt writes changed, most often by Blixt's
    /// own writes: the snapshot cannot depend on it in a hurry (Gateway addresses stay
    /// sticky, stale route entries are cleared), so a later pass is enough.
    pub status_changed: Notify,
}

/// What of an object's metadata may matter to the translator, hashed: everything but its
/// status and resourceVersion. The API server bumps `generation` on every spec change of a
/// kind with a status subresource, as all Gateway API kinds have, so an update that keeps
/// this fingerprint changed the status alone.
fn spec_fingerprint<K: Resource>(o: &K) -> u64 {
    let m = o.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &m.uid,
        m.generation,
        &m.labels,
        &m.annotations,
        &m.finalizers,
        m.deletion_timestamp.is_some(),
    )
        .hash(&mut h);
    h.finish()
}

/// Starts a reflector for `K` (all namespaces) that wakes the translator on every event;
/// with `statuses_written`, updates of the status alone wake it through `status_changed`.
fn reflect<K>(client: &Client, wake: Arc<Wakeups>, statuses_written: bool) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let watched = if statuses_written {
        Watched::StatusWritten
    } else {
        Watched::Everything
    };
    reflect_with(client, wake, strip_bookkeeping, watched)
}

/// Which updates of an object wake the translator loop.
enum Watched<K> {
    /// Every event.
    Everything,
    /// An update that keeps [`spec_fingerprint`] changed only the status Blixt writes: it
    /// wakes `status_changed`; the others `changed`.
    StatusWritten,
    /// Only updates that change this fingerprint (of what the translator reads); the others
    /// wake nothing.
    Only(fn(&K) -> u64),
}

/// Starts a reflector for `K` (all namespaces) whose objects are reduced by `modify` before
/// they reach the store, waking the translator as `watched` says.
fn reflect_with<K>(
    client: &Client,
    wake: Arc<Wakeups>,
    modify: fn(&mut K),
    watched: Watched<K>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let watch = watcher(api, watcher::Config::default()).modify(modify);
    let stream = reflector::reflector(writer, watch).default_backoff();
    let fingerprint: Option<fn(&K) -> u64> = match watched {
        Watched::Everything => None,
        Watched::StatusWritten => Some(spec_fingerprint::<K>),
        Watched::Only(f) => Some(f),
    };
    let same_wakes = matches!(watched, Watched::StatusWritten);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        // fingerprint per object
        let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
        while let Some(event) = stream.next().await {
            let same = match (&event, fingerprint) {
                (Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)), Some(fp)) => {
                    let before = seen.insert(ObjectRef::from_obj(o), fp(o));
                    matches!(event, Ok(watcher::Event::Apply(_))) && before == Some(fp(o))
                }
                (Ok(watcher::Event::Delete(o)), _) => {
                    seen.remove(&ObjectRef::from_obj(o));
                    false
                }
                (Ok(watcher::Event::Init), _) => {
                    seen.clear();
                    false
                }
                _ => false,
            };
            match event {
                Ok(_) if same && same_wakes => wake.status_changed.notify_one(),
                Ok(_) if same => {}
                Ok(_) => wake.changed.notify_one(),
                Err(e) => warn!(kind = %K::kind(&K::DynamicType::default()), "watch: {e}"),
            }
        }
    });
    reader
}

/// Keeps of a Node only its name and `status.addresses`: the rest (conditions, images,
/// capacity, heartbeats) is most of its size and changes all the time.
fn node_addresses_only(n: &mut Node) {
    let addresses = n.status.take().and_then(|s| s.addresses);
    n.metadata = kube::api::ObjectMeta {
        name: n.metadata.name.take(),
        uid: n.metadata.uid.take(),
        ..Default::default()
    };
    n.spec = None;
    n.status = Some(NodeStatus {
        addresses,
        ..Default::default()
    });
}

/// What of a Node the translator reads (as reserved addresses): its addresses.
fn node_addresses_fingerprint(n: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let addresses = n.status.as_ref().and_then(|s| s.addresses.as_ref());
    for a in addresses.into_iter().flatten() {
        (&a.type_, &a.address).hash(&mut h);
    }
    h.finish()
}

impl KubeIndex {
    /// Starts watching everything; `wake` is notified on every add, update and delete.
    pub fn start(client: &Client, wake: Arc<Wakeups>, address_pools: bool) -> Self {
        KubeIndex {
            gateway_classes: reflect(client, wake.clone(), true),
            gateways: reflect(client, wake.clone(), true),
            tcp_routes: reflect(client, wake.clone(), true),
            udp_routes: reflect(client, wake.clone(), true),
            tls_routes: reflect(client, wake.clone(), true),
            reference_grants: reflect(client, wake.clone(), false),
            // a Service's status is its load balancer's addresses: delegated Gateways use them
            services: reflect(client, wake.clone(), false),
            endpoint_slices: reflect(client, wake.clone(), false),
            namespaces: reflect(client, wake.clone(), false),
            address_pools: address_pools.then(|| reflect(client, wake.clone(), false)),
            // the Nodes' addresses only: a kubelet's status updates wake nothing
            nodes: reflect_with(
                client,
                wake,
                node_addresses_only,
                Watched::Only(node_addresses_fingerprint),
            ),
        }
    }

    /// Waits until every store has its initial list, so the first translation sees the whole
    /// cluster (and writes no status from a partial view).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.gateway_classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.tcp_routes.wait_until_ready().await?;
        self.udp_routes.wait_until_ready().await?;
        self.tls_routes.wait_until_ready().await?;
        self.reference_grants.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        if let Some(s) = &self.address_pools {
            s.wait_until_ready().await?;
        }
        self.nodes.wait_until_ready().await?;
        Ok(())
    }

    /// The AddressPools (empty when their CRD is not installed).
    pub fn address_pools(&self) -> Vec<AddressPool> {
        self.address_pools
            .as_ref()
            .map(|s| s.state().iter().map(|p| (**p).clone()).collect())
            .unwrap_or_default()
    }

    /// The Nodes (names and addresses only).
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// The current objects, as the translator takes them: pointers into the stores, no copies
    /// (a store replaces an object on update, so these stay as they were for this pass).
    pub fn objects(&self) -> ObjectIndex {
        fn all<K: Resource + Clone>(s: &Store<K>) -> Vec<Arc<K>>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            s.state()
        }
        ObjectIndex {
            gateway_classes: all(&self.gateway_classes),
            gateways: all(&self.gateways),
            tcp_routes: all(&self.tcp_routes),
            udp_routes: all(&self.udp_routes),
            tls_routes: all(&self.tls_routes),
            reference_grants: all(&self.reference_grants),
            services: all(&self.services),
            endpoint_slices: all(&self.endpoint_slices),
            namespaces: all(&self.namespaces),
            // the observed pools and load balancer addresses: the translator loop fills them in
            ..ObjectIndex::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    #[test]
    fn bookkeeping_is_stripped_and_everything_else_kept() {
        let mut svc = Service::default();
        svc.metadata.name = Some("web".into());
        svc.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        svc.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED.to_string(), "{...}".to_string()),
            ("example.com/keep".to_string(), "yes".to_string()),
        ]));
        strip_bookkeeping(&mut svc);
        assert_eq!(svc.metadata.managed_fields, None);
        assert_eq!(
            svc.metadata.annotations,
            Some(BTreeMap::from([(
                "example.com/keep".to_string(),
                "yes".to_string()
            )]))
        );
        assert_eq!(svc.metadata.name.as_deref(), Some("web"));

        let mut only_last_applied = Service::default();
        only_last_applied.metadata.annotations = Some(BTreeMap::from([(
            LAST_APPLIED.to_string(),
            "{}".to_string(),
        )]));
        strip_bookkeeping(&mut only_last_applied);
        assert_eq!(only_last_applied.metadata.annotations, None);
    }
}
