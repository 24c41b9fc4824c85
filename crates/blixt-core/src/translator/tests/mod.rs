//! Fixture tests: objects in (YAML, as a user would write them), exact Snapshot, SNI tables
//! and statuses out. One module per area of the rules.

mod address_policy;
mod addresses;
mod backends;
mod delegation;
mod gateway_class;
mod listeners;
mod phases;
mod routes;
mod tls;

use std::fmt::Write as _;

use blixt_gateway_api::gateways::GatewayStatusListeners;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::snapshot::{Backend, BackendAddr, BackendState};

/// The GatewayClass every fixture uses unless it brings its own.
pub(super) const CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt, generation: 1}
spec: {controllerName: blixt.dev/gateway-controller}
"#;

/// Reads multi-document YAML into an object index.
pub(super) fn objects(yaml: &str) -> ObjectIndex {
    let mut o = ObjectIndex::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).expect("valid YAML");
        if v.is_null() {
            continue;
        }
        let kind = v["kind"]
            .as_str()
            .expect("every document has a kind")
            .to_string();
        match kind.as_str() {
            "GatewayClass" => o.gateway_classes.push(parse(&v)),
            "Gateway" => o.gateways.push(parse(&v)),
            "TCPRoute" => o.tcp_routes.push(parse(&v)),
            "UDPRoute" => o.udp_routes.push(parse(&v)),
            "TLSRoute" => o.tls_routes.push(parse(&v)),
            "ReferenceGrant" => o.reference_grants.push(parse(&v)),
            "Service" => o.services.push(parse(&v)),
            "EndpointSlice" => o.endpoint_slices.push(parse(&v)),
            "Namespace" => o.namespaces.push(parse(&v)),
            other => panic!("fixture kind {other} is not an input of the translator"),
        }
    }
    o
}

use serde::Deserialize as _;

fn parse<T: serde::de::DeserializeOwned>(v: &serde_yaml::Value) -> std::sync::Arc<T> {
    std::sync::Arc::new(
        serde_yaml::from_value(v.clone())
            .unwrap_or_else(|e| panic!("{e}\n{}", serde_yaml::to_string(v).unwrap())),
    )
}

/// The time every fixture translates at.
pub(super) fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

/// A config with a small dual-stack pool.
pub(super) fn config() -> TranslatorConfig {
    TranslatorConfig {
        address_pool: vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ],
        ..TranslatorConfig::default()
    }
}

/// An IPv4-only config: one address per Gateway keeps frontend lists short.
pub(super) fn config_v4() -> TranslatorConfig {
    TranslatorConfig {
        address_pool: vec![
            "192.0.2.10".parse().unwrap(),
            "192.0.2.11".parse().unwrap(),
            "192.0.2.12".parse().unwrap(),
        ],
        ..TranslatorConfig::default()
    }
}

/// [`config_v4`] with static addresses allowed in `ranges` besides the pool.
pub(super) fn static_ranges(ranges: &[&str]) -> TranslatorConfig {
    TranslatorConfig {
        static_address_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        ..config_v4()
    }
}

pub(super) fn run(yaml: &str) -> Translation {
    run_with(yaml, &config_v4())
}

pub(super) fn run_with(yaml: &str, config: &TranslatorConfig) -> Translation {
    run_index(&objects(yaml), config)
}

/// Translates an index a test filled beyond its YAML (observed pools and addresses).
pub(super) fn run_index(objects: &ObjectIndex, config: &TranslatorConfig) -> Translation {
    let t = translate(objects, config, &now());
    t.snapshot
        .validate()
        .expect("the translator only produces valid snapshots");
    t
}

/// (type, status, reason) of each condition, in order.
pub(super) fn summary(conds: &[Condition]) -> Vec<(String, String, String)> {
    conds
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

pub(super) fn expect(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

pub(super) fn gateway_conds(
    t: &Translation,
    ns: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let s = t
        .statuses
        .gateways
        .get(&ObjectKey::new(ns, name))
        .unwrap_or_else(|| panic!("no status for Gateway {ns}/{name}"));
    summary(s.conditions.as_deref().unwrap_or_default())
}

pub(super) fn listener<'t>(
    t: &'t Translation,
    ns: &str,
    gw: &str,
    name: &str,
) -> &'t GatewayStatusListeners {
    t.statuses.gateways[&ObjectKey::new(ns, gw)]
        .listeners
        .iter()
        .flatten()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name} in Gateway {ns}/{gw}"))
}

pub(super) fn listener_conds(
    t: &Translation,
    ns: &str,
    gw: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    summary(&listener(t, ns, gw, name).conditions)
}

/// Kinds in a listener's supportedKinds.
pub(super) fn supported_kinds(t: &Translation, ns: &str, gw: &str, name: &str) -> Vec<String> {
    listener(t, ns, gw, name)
        .supported_kinds
        .iter()
        .flatten()
        .map(|k| {
            assert_eq!(k.group.as_deref(), Some(blixt_gateway_api::GROUP));
            k.kind.clone()
        })
        .collect()
}

pub(super) fn attached(t: &Translation, ns: &str, gw: &str, name: &str) -> i32 {
    listener(t, ns, gw, name).attached_routes
}

/// A route parent status entry, flattened for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parent {
    /// `group/kind ns/name section port`
    pub parent_ref: String,
    pub controller: String,
    pub conditions: Vec<(String, String, String)>,
}

macro_rules! parents_of {
    ($status:expr) => {
        $status
            .parents
            .iter()
            .map(|p| Parent {
                parent_ref: format!(
                    "{}/{} {}/{} {} {}",
                    p.parent_ref.group.as_deref().unwrap_or("<none>"),
                    p.parent_ref.kind.as_deref().unwrap_or("<none>"),
                    p.parent_ref.namespace.as_deref().unwrap_or("<none>"),
                    p.parent_ref.name,
                    p.parent_ref.section_name.as_deref().unwrap_or("-"),
                    p.parent_ref.port.map_or("-".to_string(), |p| p.to_string()),
                ),
                controller: p.controller_name.clone(),
                conditions: summary(&p.conditions),
            })
            .collect::<Vec<_>>()
    };
}

pub(super) fn route_parents(t: &Translation, kind: &str, ns: &str, name: &str) -> Vec<Parent> {
    let key = ObjectKey::new(ns, name);
    let missing = format!("no status for {kind} {ns}/{name}");
    match kind {
        "TCPRoute" => parents_of!(t.statuses.tcp_routes.get(&key).expect(&missing)),
        "UDPRoute" => parents_of!(t.statuses.udp_routes.get(&key).expect(&missing)),
        "TLSRoute" => parents_of!(t.statuses.tls_routes.get(&key).expect(&missing)),
        other => panic!("unknown route kind {other}"),
    }
}

/// Conditions of the single parent entry of a route.
pub(super) fn route_conds(
    t: &Translation,
    kind: &str,
    ns: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let p = route_parents(t, kind, ns, name);
    assert_eq!(
        p.len(),
        1,
        "{kind} {ns}/{name} has {} parent entries: {p:?}",
        p.len()
    );
    assert_eq!(p[0].controller, CONTROLLER_NAME);
    p[0].conditions.clone()
}

pub(super) const ACCEPTED_TRUE: (&str, &str, &str) = ("Accepted", "True", "Accepted");
pub(super) const RESOLVED_TRUE: (&str, &str, &str) = ("ResolvedRefs", "True", "ResolvedRefs");
pub(super) const PROGRAMMED_TRUE: (&str, &str, &str) = ("Programmed", "True", "Programmed");
pub(super) const NO_CONFLICTS: (&str, &str, &str) = ("Conflicted", "False", "NoConflicts");
/// The conditions of a healthy listener.
pub(super) const LISTENER_OK: [(&str, &str, &str); 4] =
    [ACCEPTED_TRUE, PROGRAMMED_TRUE, RESOLVED_TRUE, NO_CONFLICTS];

pub(super) fn be(addr: &str, port: u16, weight: u32) -> Backend {
    Backend {
        addr: BackendAddr {
            addr: addr.parse().unwrap(),
            port,
        },
        weight,
        state: BackendState::Active,
    }
}

pub(super) fn fe(
    name: &str,
    vip: &str,
    port: u16,
    protocol: Protocol,
    backends: Vec<Backend>,
    reject_weight: u32,
) -> Frontend {
    Frontend {
        name: name.into(),
        key: FrontendKey {
            vip: vip.parse().unwrap(),
            port,
            protocol,
        },
        backends,
        reject_weight,
    }
}

/// A Gateway with the given listeners (YAML list items, indented by 2).
pub(super) fn gateway(ns: &str, name: &str, listeners: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}, generation: 3}}\nspec:\n  gatewayClassName: blixt\n  listeners:\n{listeners}\n"
    )
}

/// A Service with one port and a ready EndpointSlice holding `addrs`.
pub(super) fn service(
    ns: &str,
    name: &str,
    port: u16,
    protocol: &str,
    target: u16,
    addrs: &[&str],
) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: p, port: {port}, protocol: {protocol}, targetPort: {target}}}\n"
    );
    for (family, list) in [
        (
            "IPv4",
            addrs
                .iter()
                .filter(|a| !a.contains(':'))
                .collect::<Vec<_>>(),
        ),
        (
            "IPv6",
            addrs.iter().filter(|a| a.contains(':')).collect::<Vec<_>>(),
        ),
    ] {
        if list.is_empty() {
            continue;
        }
        write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nports:\n- {{name: p, port: {target}, protocol: {protocol}}}\nendpoints:\n",
            family.to_lowercase()
        )
        .unwrap();
        for a in list {
            writeln!(y, "- addresses: [\"{a}\"]\n  conditions: {{ready: true}}").unwrap();
        }
    }
    y
}

/// A route of `kind` with one parentRef line (flow mapping) and backendRefs (flow mappings).
pub(super) fn route(kind: &str, ns: &str, name: &str, parent: &str, backends: &[&str]) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}, generation: 2}}\nspec:\n  parentRefs: [{parent}]\n  rules:\n  - backendRefs: [{}]\n",
        backends.join(", ")
    )
}

/// A TLSRoute with hostnames.
pub(super) fn tls_route(
    ns: &str,
    name: &str,
    parent: &str,
    hostnames: &[&str],
    backends: &[&str],
) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: {ns}, generation: 2}}\nspec:\n  parentRefs: [{parent}]\n  hostnames: [{}]\n  rules:\n  - backendRefs: [{}]\n",
        hostnames.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", "),
        backends.join(", ")
    )
}

#[test]
fn translating_twice_is_stable() {
    let yaml = [
        CLASS.to_string(),
        gateway("infra", "gw", "  - {name: tcp, protocol: TCP, port: 9000}"),
        route(
            "TCPRoute",
            "infra",
            "r",
            "{name: gw}",
            &["{name: svc, port: 80}"],
        ),
        service("infra", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
    ]
    .concat();
    let a = run(&yaml);
    let b = run(&yaml);
    assert_eq!(a, b);
}

/// The Gateway a frontend or SNI table name shows: the translator names them
/// `namespace/gateway/listener[+listener…]` (for people; callers read [`Owners`]).
fn owning_gateway(frontend_name: &str) -> Option<ObjectKey> {
    let mut parts = frontend_name.splitn(3, '/');
    let (namespace, gateway, _listeners) = (parts.next()?, parts.next()?, parts.next()?);
    Some(ObjectKey::new(namespace, gateway))
}

#[test]
fn every_frontend_and_sni_table_names_its_gateway() {
    let yaml = [
        CLASS.to_string(),
        gateway(
            "infra",
            "gw",
            "  - {name: tcp, protocol: TCP, port: 9000}\n  - {name: udp, protocol: UDP, port: 9001}",
        ),
        gateway(
            "edge",
            "tls-gw",
            "  - {name: a, protocol: TLS, port: 443, hostname: a.example.com, tls: {mode: Passthrough}}\n  - {name: b, protocol: TLS, port: 443, hostname: b.example.com, tls: {mode: Passthrough}}",
        ),
        route("TCPRoute", "infra", "r", "{name: gw}", &["{name: svc, port: 80}"]),
        service("infra", "svc", 80, "TCP", 8080, &["10.0.0.1"]),
    ]
    .concat();
    let t = run(&yaml);
    let owners: Vec<_> = t
        .snapshot
        .frontends
        .iter()
        .map(|f| &f.name)
        .chain(t.tls.iter().map(|t| &t.name))
        .map(|name| owning_gateway(name).map(|k| k.to_string()))
        .collect();
    let want = |s: &str| Some(s.to_string());
    assert_eq!(
        owners,
        [want("infra/gw"), want("infra/gw"), want("edge/tls-gw")]
    );
    for key in owners.into_iter().flatten() {
        assert!(t.statuses.gateways.keys().any(|k| k.to_string() == key));
    }
    assert_eq!(owning_gateway("infra/gw"), None);
    // the owner map callers read says the same
    assert_eq!(t.owners.frontends.len(), t.snapshot.frontends.len());
    assert_eq!(t.owners.tls.len(), t.tls.len());
    for f in &t.snapshot.frontends {
        assert_eq!(t.owners.of_frontend(f), owning_gateway(&f.name).as_ref());
    }
    for s in &t.tls {
        assert_eq!(t.owners.of_tls(s), owning_gateway(&s.name).as_ref());
    }
}
