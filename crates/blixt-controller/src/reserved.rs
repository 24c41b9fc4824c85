//! The addresses no Gateway may take, as the controller observes them
//! ([`ObjectIndex::reserved_addresses`]): every Node's addresses, and the Kubernetes API
//! server's (the endpoints and Service addresses of `default/kubernetes`). A Gateway on one
//! of them would make every agent answer ARP/NDP for it and intercept its traffic.
//!
//! The router's address is not in the Kubernetes API: keep it out of the AddressPools and
//! their `staticAddressRanges` (docs/security.md).
//!
//! [`ObjectIndex::reserved_addresses`]: blixt_core::translator::ObjectIndex::reserved_addresses

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use blixt_core::translator::ObjectIndex;
use k8s_openapi::api::core::v1::Node;

/// Namespace and name of the Service (and its EndpointSlices' `kubernetes.io/service-name`)
/// the API server maintains for itself.
const API_SERVER_SERVICE: (&str, &str) = ("default", "kubernetes");
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The reserved addresses of `nodes` and of the API server in `objects`, each with what it is.
pub fn reserved_addresses(nodes: &[Arc<Node>], objects: &ObjectIndex) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        for a in n.status.iter().flat_map(|s| s.addresses.iter().flatten()) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                out.entry(ip)
                    .or_insert_with(|| format!("the {} of node {name}", a.type_));
            }
        }
    }
    let (ns, name) = API_SERVER_SERVICE;
    let in_default = |m: &kube::api::ObjectMeta| m.namespace.as_deref() == Some(ns);
    for s in &objects.endpoint_slices {
        let of_api = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_some_and(|v| v == name);
        if !in_default(&s.metadata) || !of_api {
            continue;
        }
        for ip in s
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.iter())
        {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                out.entry(ip)
                    .or_insert_with(|| "an address of the Kubernetes API server".to_string());
            }
        }
    }
    for s in &objects.services {
        if !in_default(&s.metadata) || s.metadata.name.as_deref() != Some(name) {
            continue;
        }
        for ip in s.spec.iter().flat_map(|s| s.cluster_ips.iter().flatten()) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                out.entry(ip)
                    .or_insert_with(|| "the Kubernetes API server's Service address".to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus, Service, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

    #[test]
    fn node_and_api_server_addresses_are_reserved() {
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        node.status = Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.0.2.1".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "n1".into(),
                },
                NodeAddress {
                    type_: "ExternalIP".into(),
                    address: "2001:db8::1".into(),
                },
            ]),
            ..Default::default()
        });
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["192.0.2.5".into()],
                ..Default::default()
            }]),
            ..Default::default()
        };
        slice.metadata.namespace = Some("default".into());
        slice.metadata.name = Some("kubernetes".into());
        slice.metadata.labels = Some([(SERVICE_NAME_LABEL.into(), "kubernetes".into())].into());
        let mut other = slice.clone();
        other.metadata.namespace = Some("tenant".into());
        other.endpoints.as_mut().unwrap()[0].addresses = vec!["192.0.2.6".into()];
        let mut svc = Service {
            spec: Some(ServiceSpec {
                cluster_ips: Some(vec!["10.96.0.1".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        svc.metadata.namespace = Some("default".into());
        svc.metadata.name = Some("kubernetes".into());
        let objects = ObjectIndex {
            endpoint_slices: vec![Arc::new(slice), Arc::new(other)],
            services: vec![Arc::new(svc)],
            ..ObjectIndex::default()
        };
        let got = reserved_addresses(&[Arc::new(node)], &objects);
        let got: Vec<(String, &str)> = got
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "10.96.0.1".to_string(),
                    "the Kubernetes API server's Service address"
                ),
                ("192.0.2.1".to_string(), "the InternalIP of node n1"),
                (
                    "192.0.2.5".to_string(),
                    "an address of the Kubernetes API server"
                ),
                ("2001:db8::1".to_string(), "the ExternalIP of node n1"),
            ]
        );
    }
}
