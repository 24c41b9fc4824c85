//! Address delegation, the Kubernetes side: one Service of type LoadBalancer per Gateway of a
//! delegating class ([`blixt_core::translator::Delegation`]), applied by server-side apply and
//! owned by the Gateway (deleted with it by the garbage collector); and the load balancer's
//! answer, `status.loadBalancer.ingress`, read back for the translator
//! ([`addresses_from_services`]). The Services have no selector: nothing routes through
//! kube-proxy; the addresses are only a claim on the network (MetalLB or a cloud announces
//! them), and Blixt's agents load-balance the traffic that reaches the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use blixt_core::snapshot::Protocol;
use blixt_core::translator::{Delegation, ObjectIndex, ObjectKey, GATEWAY_NAME_LABEL};
use blixt_gateway_api::GatewayStatus;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::status::FIELD_MANAGER;

/// Marks the Services this controller manages (with [`GATEWAY_NAME_LABEL`], which other
/// Gateway API implementations put on their Services too).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "blixt-controller";

/// The Gateway a Service was made for, when it is one of ours: the label names it and an
/// ownerReference (controller) points at a Gateway of that name.
fn owning_gateway(svc: &Service) -> Option<ObjectKey> {
    let labels = svc.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let name = labels.get(GATEWAY_NAME_LABEL)?;
    let owned = svc.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "Gateway"
            && o.api_version.starts_with("gateway.networking.k8s.io/")
            && &o.name == name
            && o.controller == Some(true)
    });
    owned.then(|| {
        ObjectKey::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            name.clone(),
        )
    })
}

/// What the load balancer assigned to each delegating Gateway (its key →
/// `status.loadBalancer.ingress[].ip`, in order; hostnames are not addresses and are skipped).
pub fn addresses_from_services(
    services: &[impl std::borrow::Borrow<Service>],
) -> BTreeMap<ObjectKey, Vec<IpAddr>> {
    services
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter_map(|svc: &Service| {
            let gw = owning_gateway(svc)?;
            let ips: Vec<IpAddr> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect();
            Some((gw, ips))
        })
        .collect()
}

/// The Service of `d`, owned by the Gateway with `uid`, as applied.
pub fn desired_service(d: &Delegation, uid: &str) -> Value {
    let ports: Vec<Value> = d
        .ports
        .iter()
        .map(|(protocol, port)| {
            let proto = match protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
            };
            json!({
                "name": format!("{}-{port}", proto.to_lowercase()),
                "protocol": proto,
                "port": port,
                "targetPort": port,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": d.service,
            "namespace": d.gateway.namespace,
            "labels": {
                GATEWAY_NAME_LABEL: d.gateway.name,
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "ownerReferences": [{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": d.gateway.name,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        // No selector: the Service only claims addresses from the load balancer.
        "spec": {
            "type": "LoadBalancer",
            "ports": ports,
        },
    })
}

/// Applies the Services of `delegations` (only those that changed since the last successful
/// write) and deletes ours whose Gateway no longer delegates.
#[derive(Debug, Default)]
pub struct ServiceWriter {
    written: BTreeMap<ObjectKey, Value>,
}

impl ServiceWriter {
    /// Forgets what was written (a new leader rewrites everything once).
    pub fn reset(&mut self) {
        self.written.clear();
    }

    /// Returns how many writes failed (logged; retried at the next call). `ours` are the
    /// Gateways of this controller's classes (the translation's statuses): a Service of another Gateway is never touched,
    /// even with our labels (another Blixt controller, for another class, manages it).
    pub async fn write(
        &mut self,
        client: &Client,
        objects: &ObjectIndex,
        delegations: &[Delegation],
        ours: &BTreeMap<ObjectKey, GatewayStatus>,
    ) -> usize {
        let mut failed = 0;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let present: BTreeSet<ObjectKey> = objects
            .services
            .iter()
            .map(|s| ObjectKey::of(&s.metadata))
            .collect();
        let mut wanted = BTreeMap::new();
        for d in delegations {
            if d.ports.is_empty() {
                // A LoadBalancer Service needs a port; the Gateway has no usable listener.
                continue;
            }
            let key = ObjectKey::new(d.gateway.namespace.clone(), d.service.clone());
            let uid = objects
                .gateways
                .iter()
                .find(|g| {
                    g.metadata.namespace.as_deref() == Some(&d.gateway.namespace)
                        && g.metadata.name.as_deref() == Some(&d.gateway.name)
                })
                .and_then(|g| g.metadata.uid.clone());
            let Some(uid) = uid else { continue };
            let body = desired_service(d, &uid);
            wanted.insert(key.clone(), ());
            // Skip only what was written and is still there: a Service deleted behind our back
            // is applied again. Right after a write the watch may not show it yet; one more
            // server-side apply of the same body is harmless.
            if present.contains(&key) && self.written.get(&key) == Some(&body) {
                continue;
            }
            let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
            match api.patch(&key.name, &apply, &Patch::Apply(&body)).await {
                Ok(_) => {
                    info!(service = %key, gateway = %d.gateway, "LoadBalancer Service applied");
                    self.written.insert(key, body);
                }
                Err(e) => {
                    failed += 1;
                    warn!(service = %key, gateway = %d.gateway,
                          "applying the LoadBalancer Service of a delegating Gateway: {e}");
                }
            }
        }
        // Ours, for a Gateway of our classes that no longer delegates (a deleted Gateway's
        // Service goes with it: garbage collection; another class's is not ours to delete).
        for svc in &objects.services {
            let Some(gw) = owning_gateway(svc) else {
                continue;
            };
            let key = ObjectKey::new(
                gw.namespace.clone(),
                svc.metadata.name.clone().unwrap_or_default(),
            );
            if wanted.contains_key(&key) || !ours.contains_key(&gw) {
                continue;
            }
            let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(service = %key, gateway = %gw, "LoadBalancer Service of a Gateway that no longer delegates deleted");
                    self.written.remove(&key);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    failed += 1;
                    warn!(service = %key, "deleting a LoadBalancer Service no longer needed: {e}");
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(labels: Value, owner: &str, ingress: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": "blixt-gw", "namespace": "ns", "labels": labels,
                "ownerReferences": [{"apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway", "name": owner, "uid": "u", "controller": true}],
            },
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
        .unwrap()
    }

    #[test]
    fn only_our_services_count_and_hostnames_are_skipped() {
        let ours = json!({GATEWAY_NAME_LABEL: "gw", MANAGED_BY_LABEL: MANAGED_BY});
        let ingress =
            json!([{"ip": "203.0.113.7"}, {"hostname": "lb.example"}, {"ip": "2001:db8::7"}]);
        let got = addresses_from_services(&[service(ours.clone(), "gw", ingress.clone())]);
        assert_eq!(
            got[&ObjectKey::new("ns", "gw")],
            [
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
        // another implementation's Service with the well-known label
        let theirs = json!({GATEWAY_NAME_LABEL: "gw"});
        assert!(addresses_from_services(&[service(theirs, "gw", ingress.clone())]).is_empty());
        // owned by another Gateway than the label says
        assert!(addresses_from_services(&[service(ours, "other", ingress)]).is_empty());
    }

    #[test]
    fn desired_service_has_no_selector_and_the_listener_ports() {
        let d = Delegation {
            gateway: ObjectKey::new("ns", "gw"),
            service: "blixt-gw".into(),
            ports: vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)],
            addresses: vec![],
        };
        let s = desired_service(&d, "uid-1");
        assert_eq!(s["spec"]["type"], "LoadBalancer");
        assert!(s["spec"].get("selector").is_none());
        assert_eq!(s["spec"]["ports"][1]["protocol"], "UDP");
        assert_eq!(s["spec"]["ports"][1]["name"], "udp-53");
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(s["metadata"]["labels"][GATEWAY_NAME_LABEL], "gw");
    }
}
