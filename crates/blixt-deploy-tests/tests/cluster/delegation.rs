//! Address delegation through the API server, under the chart's ServiceAccount (RBAC and the
//! admission policy in force): a Gateway of a class whose AddressPool has
//! `delegateToLoadBalancer` gets a Service of type LoadBalancer (owned by it, labelled, no
//! selector, the listeners' ports) and stays `Programmed=False/AddressNotAssigned` until the
//! Service has an address; the test then sets `status.loadBalancer.ingress` as MetalLB or a
//! cloud would, and the address becomes the Gateway's (status and snapshot, not announced by
//! agents). Another Blixt controller, for another class, leaves the Service alone. When the
//! pool stops delegating, the controller deletes the Service; when the Gateway goes, the
//! garbage collector takes it.

use std::time::Duration;

use blixt_deploy_tests::{
    apply_all, delete_cluster_scoped, dynamic_api, eventually, parse, unique_fullname, HelmRender,
    Mode,
};
use blixt_k8s_harness::shared;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::core::GroupVersionKind;

/// Waits until Service `name` exists (`true`) or is gone (`false`).
async fn service_present(services: &Api<Service>, name: &str, present: bool, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let found = services.get_opt(name).await.map_err(|e| e.to_string())?;
        (found.is_some() == present)
            .then_some(())
            .ok_or_else(|| format!("Service {name} present: {}", found.is_some()))
    })
    .await;
}

fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test]
async fn a_delegating_pool_gives_gateways_the_load_balancers_address() {
    let cluster = shared();
    let admin = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name().to_owned();
    let fullname = unique_fullname(&n);
    let controller_name = format!("blixt.dev/deploy-test-{n}");
    let objects = HelmRender::new(&n)
        .set("fullnameOverride", &fullname)
        .set("gatewayClass.name", &fullname)
        .set("gatewayClass.controllerName", &controller_name)
        .set("addressPool.create", "true")
        .set("addressPool.name", &fullname)
        .set("addressPool.delegateToLoadBalancer", "true")
        .render();
    apply_all(&admin, &objects, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("installing the chart: {e:#}"));

    let running =
        crate::common::controller_as_service_account(cluster, &n, &fullname, &controller_name)
            .await;

    let gateway = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: gw, namespace: {n} }}
spec:
  gatewayClassName: {fullname}
  listeners:
  - {{ name: tcp, protocol: TCP, port: 80 }}
  - {{ name: dns, protocol: UDP, port: 53 }}
"#
    );
    apply_all(&admin, &parse(&gateway), Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway");
    let gateways = dynamic_api(&admin, &gvk, Some(&n))
        .await
        .expect("Gateway API");
    let uid = gateways.get("gw").await.unwrap().metadata.uid.unwrap();
    let services: Api<Service> = Api::namespaced(admin.clone(), &n);

    // The Service, as the controller applied it, and the Gateway waiting for its address.
    let svc = eventually(
        "the controller created the Gateway's LoadBalancer Service",
        Duration::from_secs(60),
        || async {
            match services
                .get_opt("blixt-gw")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(svc) => Ok(svc),
                // say what the controller thinks of the Gateway, for a failure's message
                None => Err(format!(
                    "no Service blixt-gw; Gateway status: {}",
                    gateways
                        .get("gw")
                        .await
                        .map(|g| g.data["status"].to_string())
                        .unwrap_or_else(|e| e.to_string())
                )),
            }
        },
    )
    .await;
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert!(spec.selector.is_none(), "{spec:?}");
    let ports: Vec<(String, i32)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.protocol.clone().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(ports, [("TCP".to_string(), 80), ("UDP".to_string(), 53)]);
    let labels = svc.metadata.labels.clone().unwrap();
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "gw");
    let owner = &svc.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Gateway", uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));

    // Another Blixt controller, for another class, with every right (the admin's): the Service
    // is not its to delete, nor to change. Two passes of its loop as the leader of its Lease
    // (its ServiceWriter runs before it publishes statuses), then the Service is unchanged.
    let other = crate::common::controller_as_admin(
        cluster,
        &n,
        "blixt-other-class",
        &format!("{controller_name}-other"),
    )
    .await;
    eventually(
        "the other controller leads its Lease",
        Duration::from_secs(30),
        || async {
            other
                .leadership
                .is_leader()
                .then_some(())
                .ok_or_else(|| "not the leader yet".to_string())
        },
    )
    .await;
    let mut passes = other.statuses.clone();
    for _ in 0..2 {
        passes.mark_unchanged();
        tokio::time::timeout(Duration::from_secs(30), passes.changed())
            .await
            .expect("the other controller's loop runs")
            .expect("the other controller is running");
    }
    let after = services
        .get("blixt-gw")
        .await
        .expect("the Service is still there");
    assert_eq!(
        (&after.metadata.uid, &after.spec, &after.metadata.labels),
        (&svc.metadata.uid, &svc.spec, &svc.metadata.labels),
        "another class's controller deleted or changed the Service"
    );
    eventually(
        "Programmed=False/AddressNotAssigned while the Service has no address",
        Duration::from_secs(30),
        || async {
            let gw = gateways.get("gw").await.map_err(|e| e.to_string())?;
            let status = &gw.data["status"];
            condition(&status["conditions"], "Programmed")
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "AddressNotAssigned")
                .then_some(())
                .ok_or_else(|| format!("{status}"))
        },
    )
    .await;

    // The load balancer answers (the test plays MetalLB).
    services
        .patch_status(
            "blixt-gw",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}
            })),
        )
        .await
        .expect("setting the Service's load balancer status");

    eventually(
        "the Gateway is programmed on the load balancer's address",
        Duration::from_secs(30),
        || async {
            let gw = gateways.get("gw").await.map_err(|e| e.to_string())?;
            let status = &gw.data["status"];
            let programmed = condition(&status["conditions"], "Programmed")
                .is_some_and(|c| c["status"] == "True");
            let svc = services
                .get("blixt-gw")
                .await
                .map_err(|e| e.to_string())?;
            (programmed && status["addresses"][0]["value"] == "198.51.100.9")
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "Gateway status {status}; Service status {:?} resourceVersion {:?} uid {:?}",
                        svc.status, svc.metadata.resource_version, svc.metadata.uid
                    )
                })
        },
    )
    .await;
    let published = running.snapshots.borrow().clone();
    assert!(
        published
            .snapshot
            .frontends
            .iter()
            .any(|f| f.key.vip.to_string() == "198.51.100.9" && f.key.port == 80),
        "{published:?}"
    );
    // the load balancer announces it: left out of what agents announce
    assert!(!published
        .announced()
        .contains(&"198.51.100.9".parse().unwrap()));

    // The pool stops delegating: the controller deletes the Service (RBAC delete, allowed by
    // the admission policy for its labelled Services) and allocates from the pool.
    let pools = dynamic_api(
        &admin,
        &GroupVersionKind::gvk("blixt.dev", "v1alpha1", "AddressPool"),
        None,
    )
    .await
    .expect("AddressPool API");
    pools
        .patch(
            &fullname,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"delegateToLoadBalancer": false, "addresses": ["192.0.2.230"]}
            })),
        )
        .await
        .expect("turning delegation off");
    eventually(
        "the Service is deleted and the Gateway takes a pool address",
        Duration::from_secs(30),
        || async {
            let gone = services
                .get_opt("blixt-gw")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            let gw = gateways.get("gw").await.map_err(|e| e.to_string())?;
            let address = gw.data["status"]["addresses"][0]["value"].clone();
            (gone && address == "192.0.2.230")
                .then_some(())
                .ok_or_else(|| format!("Service gone: {gone}, address {address}"))
        },
    )
    .await;

    // Delegating again, then the Gateway deleted: the garbage collector removes its Service.
    pools
        .patch(
            &fullname,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"delegateToLoadBalancer": true, "addresses": []}
            })),
        )
        .await
        .expect("turning delegation on");
    service_present(&services, "blixt-gw", true, "the Service is back").await;
    gateways
        .delete("gw", &Default::default())
        .await
        .expect("deleting the Gateway");
    service_present(
        &services,
        "blixt-gw",
        false,
        "the Service goes with its Gateway",
    )
    .await;

    delete_cluster_scoped(&admin, &objects).await;
}
