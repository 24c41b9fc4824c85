//! The translator's input, and the read-only views the rules work on.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use blixt_gateway_api::{Gateway, GatewayClass, ReferenceGrant, TcpRoute, TlsRoute, UdpRoute};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::config::IpNet;
use crate::snapshot::Protocol;

/// Everything the translator reads. Filled by a provider (manifest files in standalone mode,
/// watches in Kubernetes); the translator never fetches anything itself. Order does not
/// matter; when two objects share a namespace and name, the first one counts.
///
/// Objects are shared (`Arc`), not owned: a provider that keeps its own copy (kube-rs
/// reflector stores hand out `Arc<K>`, the standalone file cache keeps each file's objects)
/// fills an index by copying pointers. At 100,000 endpoints a deep copy per translation pass
/// was a second copy of every object in the controller's memory.
///
/// Besides the objects, the index holds what a provider observes each pass and the
/// translator reads as it finds it: the AddressPools (expanded) and the addresses load
/// balancers gave delegating Gateways. Settings that do not change with the cluster are in
/// [`TranslatorConfig`](super::TranslatorConfig).
#[derive(Debug, Clone, Default)]
pub struct ObjectIndex {
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub tcp_routes: Vec<Arc<TcpRoute>>,
    pub udp_routes: Vec<Arc<UdpRoute>>,
    pub tls_routes: Vec<Arc<TlsRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub namespaces: Vec<Arc<Namespace>>,
    /// Named address pools (Blixt's `AddressPool` objects, group
    /// [`PARAMETERS_GROUP`](super::PARAMETERS_GROUP), kind
    /// [`ADDRESS_POOL_KIND`](super::ADDRESS_POOL_KIND)), by name, their entries expanded: a
    /// GatewayClass whose `parametersRef` names one allocates its Gateways' addresses from it
    /// instead of the configured default pool. A missing pool makes the class
    /// `Accepted=False/InvalidParameters`.
    pub address_pools: BTreeMap<String, ExpandedAddressPool>,
    /// What the load balancer assigned to each delegating Gateway: the
    /// `status.loadBalancer.ingress` IPs of its Service, in order. Filled by the controller;
    /// the translator only reads it.
    pub delegated_addresses: BTreeMap<ObjectKey, Vec<IpAddr>>,
    /// Addresses the network already uses, which no Gateway may take whatever its class
    /// allows, each with what it is (`node worker-1 (InternalIP)`, `the node's router`, ...):
    /// taking one would make every agent answer ARP/NDP for it and intercept its traffic.
    /// Filled by the provider from what it observes (Kubernetes: Node addresses and the API
    /// server's endpoints; standalone: the NodeConfig's node addresses and
    /// `reservedAddresses`); the translator only reads it.
    pub reserved_addresses: BTreeMap<IpAddr, String>,
}

/// One AddressPool, as the translator reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpandedAddressPool {
    /// Every address of the pool's entries, in order.
    pub addresses: Vec<IpAddr>,
    /// `delegateToLoadBalancer`: the classes' Gateways get their addresses from a Service of
    /// type LoadBalancer (see [`Translation::delegations`](super::Translation::delegations)).
    pub delegate_to_load_balancer: bool,
    /// `staticAddressRanges`: where static `spec.addresses` of the classes' Gateways may lie
    /// besides the pool's own addresses. Empty (the default): in the pool only.
    pub static_address_ranges: Vec<IpNet>,
}

/// The objects of one kind of an [`ObjectIndex`], borrowed.
pub(crate) fn refs<K>(objects: &[Arc<K>]) -> impl Iterator<Item = &K> {
    objects.iter().map(|o| &**o)
}

/// Namespace and name of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object's metadata (namespace `default` when it names none).
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey::new(namespace_of(meta), meta.name.clone().unwrap_or_default())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Namespace of an object, `default` when unset (as `kubectl apply` would put it).
pub(crate) fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// The age order Gateway API uses to break ties: creation time, then namespace/name. Objects
/// without a creation time (hand-written manifests) sort after those with one.
pub(crate) fn age_key(meta: &ObjectMeta) -> (bool, Option<Timestamp>, String, String) {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created,
        namespace_of(meta).to_string(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Kinds of route Blixt implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RouteKind {
    Tcp,
    Udp,
    Tls,
}

impl RouteKind {
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Udp => "UDPRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "TCPRoute" => Some(RouteKind::Tcp),
            "UDPRoute" => Some(RouteKind::Udp),
            "TLSRoute" => Some(RouteKind::Tls),
            _ => None,
        }
    }

    /// Transport the route's backends are reached over.
    pub fn transport(self) -> Protocol {
        match self {
            RouteKind::Udp => Protocol::Udp,
            RouteKind::Tcp | RouteKind::Tls => Protocol::Tcp,
        }
    }
}

/// A parentRef as written (defaults not yet applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParentRefView {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// A backendRef as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendRefView {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// One entry of a route's existing `status.parents`.
#[derive(Debug, Clone)]
pub(crate) struct PreviousParent {
    pub parent_ref: ParentRefView,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// TCPRoute, UDPRoute and TLSRoute have the same shape in v1 (TLS adds hostnames); the rules
/// work on this common view.
#[derive(Debug, Clone)]
pub(crate) struct RouteView<'a> {
    pub kind: RouteKind,
    pub key: ObjectKey,
    pub meta: &'a ObjectMeta,
    pub generation: i64,
    pub parent_refs: Vec<ParentRefView>,
    pub hostnames: Vec<String>,
    pub rules: Vec<Vec<BackendRefView>>,
    pub previous: Vec<PreviousParent>,
}

macro_rules! route_view {
    ($route:expr, $kind:expr, $hostnames:expr) => {{
        let r = $route;
        RouteView {
            kind: $kind,
            key: ObjectKey::of(&r.metadata),
            meta: &r.metadata,
            generation: r.metadata.generation.unwrap_or(0),
            parent_refs: r
                .spec
                .parent_refs
                .iter()
                .flatten()
                .map(|p| ParentRefView {
                    group: p.group.clone(),
                    kind: p.kind.clone(),
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                })
                .collect(),
            hostnames: $hostnames,
            rules: r
                .spec
                .rules
                .iter()
                .map(|rule| {
                    rule.backend_refs
                        .iter()
                        .map(|b| BackendRefView {
                            group: b.group.clone(),
                            kind: b.kind.clone(),
                            namespace: b.namespace.clone(),
                            name: b.name.clone(),
                            port: b.port,
                            weight: b.weight,
                        })
                        .collect()
                })
                .collect(),
            previous: r
                .status
                .iter()
                .flat_map(|s| s.parents.iter())
                .map(|p| PreviousParent {
                    parent_ref: ParentRefView {
                        group: p.parent_ref.group.clone(),
                        kind: p.parent_ref.kind.clone(),
                        namespace: p.parent_ref.namespace.clone(),
                        name: p.parent_ref.name.clone(),
                        section_name: p.parent_ref.section_name.clone(),
                        port: p.parent_ref.port,
                    },
                    controller_name: p.controller_name.clone(),
                    conditions: p.conditions.clone(),
                })
                .collect(),
        }
    }};
}

impl<'a> RouteView<'a> {
    pub fn tcp(r: &'a TcpRoute) -> Self {
        route_view!(r, RouteKind::Tcp, Vec::new())
    }
    pub fn udp(r: &'a UdpRoute) -> Self {
        route_view!(r, RouteKind::Udp, Vec::new())
    }
    pub fn tls(r: &'a TlsRoute) -> Self {
        route_view!(r, RouteKind::Tls, r.spec.hostnames.clone())
    }
}

/// Indexes over the namespaced objects backends and grants are looked up in.
#[derive(Debug)]
pub(crate) struct Lookup<'a> {
    /// namespace → name → Service
    services: HashMap<&'a str, HashMap<&'a str, &'a Service>>,
    /// namespace → Service name → slices
    slices: HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>,
    namespaces: HashMap<&'a str, &'a Namespace>,
    grants: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
}

/// The label EndpointSlices carry to name their Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl<'a> Lookup<'a> {
    pub fn new(objects: &'a ObjectIndex) -> Self {
        let mut services: HashMap<_, HashMap<_, _>> = HashMap::new();
        for s in refs(&objects.services) {
            services
                .entry(namespace_of(&s.metadata))
                .or_default()
                .entry(s.metadata.name.as_deref().unwrap_or(""))
                .or_insert(s);
        }
        let mut slices: HashMap<_, HashMap<_, Vec<_>>> = HashMap::new();
        for s in refs(&objects.endpoint_slices) {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry(namespace_of(&s.metadata))
                    .or_default()
                    .entry(svc.as_str())
                    .or_default()
                    .push(s);
            }
        }
        // Slice order decides nothing (backends are sorted later) but keep it stable anyway.
        for v in slices.values_mut().flat_map(|m| m.values_mut()) {
            v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        let mut namespaces = HashMap::new();
        for n in refs(&objects.namespaces) {
            namespaces
                .entry(n.metadata.name.as_deref().unwrap_or(""))
                .or_insert(n);
        }
        let mut grants: HashMap<_, Vec<_>> = HashMap::new();
        for g in refs(&objects.reference_grants) {
            grants.entry(namespace_of(&g.metadata)).or_default().push(g);
        }
        Lookup {
            services,
            slices,
            namespaces,
            grants,
        }
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(namespace)?.get(name).copied()
    }

    pub fn endpoint_slices(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.slices
            .get(namespace)
            .and_then(|m| m.get(service))
            .map_or(&[], |v| v.as_slice())
    }

    /// Labels of a namespace. The API server labels every namespace with
    /// `kubernetes.io/metadata.name`; that label is supplied here even when the Namespace
    /// object is absent (standalone mode), so selectors on it work everywhere.
    pub fn namespace_labels(&self, namespace: &str) -> std::collections::BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        labels
            .entry("kubernetes.io/metadata.name".to_string())
            .or_insert_with(|| namespace.to_string());
        labels
    }

    /// Whether a ReferenceGrant in `to_namespace` lets objects of `from_group`/`from_kind` in
    /// `from_namespace` refer to the `to_group`/`to_kind` object named `to_name`.
    /// `from` entries are OR-ed, `to` entries are OR-ed; a `to` without a name covers every
    /// object of that kind.
    pub fn grant_permits(
        &self,
        (from_group, from_kind, from_namespace): (&str, &str, &str),
        (to_group, to_kind, to_namespace, to_name): (&str, &str, &str, &str),
    ) -> bool {
        self.grants.get(to_namespace).is_some_and(|grants| {
            grants.iter().any(|g| {
                g.spec.from.iter().any(|f| {
                    f.group == from_group && f.kind == from_kind && f.namespace == from_namespace
                }) && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == to_name)
                })
            })
        })
    }
}
