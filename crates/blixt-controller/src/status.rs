//! Writes the translator's statuses to the API server.
//!
//! * GatewayClass and Gateway status: server-side apply with Blixt's field manager. Their
//!   condition lists are maps keyed by type, so the apply owns exactly Blixt's conditions and
//!   leaves other managers' alone.
//! * Route status: `status.parents` is an atomic list shared by every controller of the route,
//!   so Blixt merges its own entries (controllerName = Blixt's) with the others' as read from
//!   the object, and writes the list with a merge patch guarded by the resourceVersion.
//! * The GatewayClass finalizer while Gateways use the class.
//!
//! Only what changed since the last successful write is written.

use std::collections::{BTreeMap, HashMap};

use blixt_core::translator::{ObjectIndex, ObjectKey, Statuses, GATEWAY_EXISTS_FINALIZER};
use blixt_gateway_api::{Gateway, GatewayClass, TcpRoute, TlsRoute, UdpRoute};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tracing::{debug, warn};

/// Blixt's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "blixt-controller";

/// Last written body per object, to skip writes that change nothing. Kept as compact JSON
/// text: a `serde_json::Value` tree per route (a map node per condition field) was about 50 MB
/// of the controller's memory at 10,000 routes, the text a fraction of it.
#[derive(Debug, Default)]
pub struct StatusWriter {
    written: BTreeMap<(&'static str, ObjectKey), String>,
}

fn route_parents_merged(ours: &Value, theirs: &Option<Vec<Value>>, controller: &str) -> Value {
    let mut merged: Vec<Value> = theirs
        .iter()
        .flatten()
        .filter(|p| p["controllerName"] != controller)
        .cloned()
        .collect();
    merged.extend(ours["parents"].as_array().cloned().unwrap_or_default());
    Value::Array(merged)
}

impl StatusWriter {
    /// Writes everything that changed. Errors are logged per object and retried at the next
    /// call (the cache only remembers successful writes); returns how many writes failed.
    pub async fn write(
        &mut self,
        client: &Client,
        objects: &ObjectIndex,
        statuses: &Statuses,
        controller: &str,
    ) -> usize {
        let mut failed = 0;
        let apply = PatchParams::apply(FIELD_MANAGER).force();

        for (name, outcome) in &statuses.gateway_classes {
            let key = ObjectKey::new("", name.clone());
            let body = json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": name},
                "status": outcome.status,
            });
            let api: Api<GatewayClass> = Api::all(client.clone());
            if self.changed("GatewayClass", &key, &body) {
                match api.patch_status(name, &apply, &Patch::Apply(&body)).await {
                    Ok(_) => self.remember("GatewayClass", key.clone(), &body),
                    Err(e) => {
                        failed += 1;
                        warn!(gatewayclass = %name, "writing status: {e}");
                    }
                }
            }
            // the finalizer, read from the live object
            let Some(gc) = objects
                .gateway_classes
                .iter()
                .find(|g| g.metadata.name.as_deref() == Some(name))
            else {
                continue;
            };
            let finalizers = gc.metadata.finalizers.clone().unwrap_or_default();
            let has = finalizers.iter().any(|f| f == GATEWAY_EXISTS_FINALIZER);
            if has != outcome.finalizer {
                let list: Vec<String> = if outcome.finalizer {
                    finalizers
                        .into_iter()
                        .chain([GATEWAY_EXISTS_FINALIZER.to_string()])
                        .collect()
                } else {
                    finalizers
                        .into_iter()
                        .filter(|f| f != GATEWAY_EXISTS_FINALIZER)
                        .collect()
                };
                let patch = json!({"metadata": {
                    "finalizers": list,
                    "resourceVersion": gc.metadata.resource_version,
                }});
                if let Err(e) = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    failed += 1;
                    warn!(gatewayclass = %name, "updating the finalizer: {e}");
                }
            }
        }

        for (key, status) in &statuses.gateways {
            let body = json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": key.name, "namespace": key.namespace},
                "status": status,
            });
            if !self.changed("Gateway", key, &body) {
                continue;
            }
            let api: Api<Gateway> = Api::namespaced(client.clone(), &key.namespace);
            match api
                .patch_status(&key.name, &apply, &Patch::Apply(&body))
                .await
            {
                Ok(_) => self.remember("Gateway", key.clone(), &body),
                Err(e) => {
                    failed += 1;
                    warn!(gateway = %format!("{}/{}", key.namespace, key.name), "writing status: {e}");
                }
            }
        }

        macro_rules! routes {
            ($kind:literal, $ty:ty, $statuses:expr, $objects:expr) => {
                let live_routes: HashMap<(&str, &str), &$ty> = $objects
                    .iter()
                    .filter_map(|r| {
                        let m = &r.metadata;
                        Some(((m.namespace.as_deref()?, m.name.as_deref()?), &**r))
                    })
                    .collect();
                for (key, status) in $statuses {
                    let ours = serde_json::to_value(status).unwrap_or(Value::Null);
                    let Some(live) = live_routes.get(&(key.namespace.as_str(), key.name.as_str()))
                    else {
                        continue;
                    };
                    let theirs: Option<Vec<Value>> = live.status.as_ref().map(|s| {
                        s.parents
                            .iter()
                            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
                            .collect()
                    });
                    let parents = route_parents_merged(&ours, &theirs, controller);
                    let body = json!({"status": {"parents": parents}});
                    if !self.changed($kind, key, &body) {
                        continue;
                    }
                    let current = theirs.map(Value::Array).unwrap_or(Value::Array(vec![]));
                    if current == parents {
                        self.remember($kind, key.clone(), &body);
                        continue;
                    }
                    let mut patch = body.clone();
                    patch["metadata"] =
                        json!({"resourceVersion": live.metadata.resource_version});
                    let api: Api<$ty> = Api::namespaced(client.clone(), &key.namespace);
                    match api
                        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => self.remember($kind, key.clone(), &body),
                        Err(e) => {
                            failed += 1;
                            warn!(route = %format!("{} {}/{}", $kind, key.namespace, key.name), "writing status: {e}");
                        }
                    }
                }
            };
        }
        routes!(
            "TCPRoute",
            TcpRoute,
            &statuses.tcp_routes,
            objects.tcp_routes
        );
        routes!(
            "UDPRoute",
            UdpRoute,
            &statuses.udp_routes,
            objects.udp_routes
        );
        routes!(
            "TLSRoute",
            TlsRoute,
            &statuses.tls_routes,
            objects.tls_routes
        );
        debug!(failed, "statuses written");
        failed
    }

    fn changed(&self, kind: &'static str, key: &ObjectKey, body: &Value) -> bool {
        let text = body.to_string();
        self.written
            .get(&(kind, key.clone()))
            .is_none_or(|written| *written != text)
    }

    fn remember(&mut self, kind: &'static str, key: ObjectKey, body: &Value) {
        self.written.insert((kind, key), body.to_string());
    }

    /// Forgets what was written (a new leader writes everything once).
    pub fn reset(&mut self) {
        self.written.clear();
    }
}
