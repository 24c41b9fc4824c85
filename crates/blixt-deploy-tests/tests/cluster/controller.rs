//! The real controller (`blixt_controller::start`, what `blixt controller` runs) under the
//! chart's ServiceAccount: its client impersonates `<fullname>-controller`, so every watch,
//! status write, finalizer patch, Lease update and TokenReview it makes is authorized by the
//! chart's RBAC and admission policy, not by an admin. A missing permission shows up as a
//! status that never appears.

use std::time::Duration;

use blixt_controller::agents::TokenReviewVerifier;
use blixt_deploy_tests::{
    apply_all, delete_cluster_scoped, dynamic_api, eventually, parse, unique_fullname, HelmRender,
    Mode,
};
use blixt_k8s_harness::shared;
use blixt_stream::TokenVerifier as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;

const FINALIZER: &str = "gateway-exists-finalizer.gateway.networking.k8s.io";

fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test]
async fn the_controller_runs_under_the_charts_service_account() {
    let cluster = shared();
    let admin = cluster.client();
    let ns = cluster.temp_namespace().await;
    let fullname = unique_fullname(ns.name());
    // A controllerName of this test's own, so the controller leaves other tests' classes alone.
    let controller_name = format!("blixt.dev/deploy-test-{}", ns.name());
    let objects = HelmRender::new(ns.name())
        .set("fullnameOverride", &fullname)
        .set("gatewayClass.name", &fullname)
        .set("gatewayClass.controllerName", &controller_name)
        .set("addressPool.create", "true")
        .set("addressPool.name", &fullname)
        .set("addressPool.addresses", "{192.0.2.200-192.0.2.203}")
        .render();
    apply_all(&admin, &objects, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("installing the chart: {e:#}"));

    let as_controller =
        cluster.client_as_service_account(ns.name(), &format!("{fullname}-controller"));
    let running = crate::common::controller_as_service_account(
        cluster,
        ns.name(),
        &fullname,
        &controller_name,
    )
    .await;

    // Its Lease, in its namespace, held by this replica.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), ns.name());
    eventually(
        "the controller holds its Lease",
        Duration::from_secs(20),
        || async {
            let lease = leases
                .get_opt("blixt-controller")
                .await
                .map_err(|e| e.to_string())?;
            let holder = lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            (holder == format!("{fullname}-controller-0") && running.leadership.is_leader())
                .then_some(())
                .ok_or(holder)
        },
    )
    .await;

    // A Gateway and a TCPRoute of its class, as their owners would create them.
    let manifests = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: echo, namespace: {ns} }}
spec:
  ports: [{{ name: tcp, port: 7000, protocol: TCP }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: gw, namespace: {ns} }}
spec:
  gatewayClassName: {fullname}
  listeners: [{{ name: tcp, protocol: TCP, port: 5000 }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {{ name: echo, namespace: {ns} }}
spec:
  parentRefs: [{{ name: gw }}]
  rules: [{{ backendRefs: [{{ name: echo, port: 7000 }}] }}]
"#,
        ns = ns.name()
    );
    apply_all(&admin, &parse(&manifests), Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    let gvk = |kind: &str| GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
    let classes = dynamic_api(&admin, &gvk("GatewayClass"), None)
        .await
        .expect("GatewayClass API");
    let gateways = dynamic_api(&admin, &gvk("Gateway"), Some(ns.name()))
        .await
        .expect("Gateway API");
    let routes = dynamic_api(&admin, &gvk("TCPRoute"), Some(ns.name()))
        .await
        .expect("TCPRoute API");

    // The class: accepted (status by server-side apply, the AddressPool read through
    // parametersRef) and finalized while a Gateway uses it (a patch the admission policy lets
    // through because only finalizers change).
    let class: DynamicObject = eventually(
        "the GatewayClass is Accepted and carries the finalizer",
        Duration::from_secs(30),
        || async {
            let class = classes.get(&fullname).await.map_err(|e| e.to_string())?;
            let accepted = condition(&class.data["status"]["conditions"], "Accepted")
                .is_some_and(|c| c["status"] == "True");
            let finalized = class
                .metadata
                .finalizers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|f| f == FINALIZER);
            (accepted && finalized)
                .then_some(class.clone())
                .ok_or_else(|| {
                    format!("{:?} {:?}", class.data["status"], class.metadata.finalizers)
                })
        },
    )
    .await;
    assert!(
        class
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.subresource.as_deref() == Some("status")),
        "status written through the status subresource"
    );

    // The Gateway: statuses written, an address from the chart's AddressPool.
    eventually(
        "the Gateway has its status and a pool address",
        Duration::from_secs(30),
        || async {
            let gateway = gateways.get("gw").await.map_err(|e| e.to_string())?;
            let status = &gateway.data["status"];
            let accepted =
                condition(&status["conditions"], "Accepted").is_some_and(|c| c["status"] == "True");
            let address = status["addresses"][0]["value"].as_str().unwrap_or_default();
            (accepted && address.starts_with("192.0.2.20"))
                .then_some(())
                .ok_or_else(|| format!("{status}"))
        },
    )
    .await;

    // The route: its parent status.
    eventually(
        "the TCPRoute has a parent status",
        Duration::from_secs(30),
        || async {
            let route = routes.get("echo").await.map_err(|e| e.to_string())?;
            let parents = &route.data["status"]["parents"];
            parents[0]["controllerName"]
                .as_str()
                .is_some_and(|c| c == controller_name)
                .then_some(())
                .ok_or_else(|| format!("{parents}"))
        },
    )
    .await;

    // An agent's projected token, checked the way the snapshot server checks it, with the
    // controller's client.
    let agent_account = format!("{fullname}-agent");
    let token = cluster
        .service_account_token(ns.name(), &agent_account, &["blixt-controller"])
        .await;
    let identity = TokenReviewVerifier::new(as_controller.clone())
        .verify(&token)
        .await
        .unwrap_or_else(|e| panic!("the controller verifies an agent token: {e:?}"));
    assert_eq!(
        identity.username,
        format!("system:serviceaccount:{}:{agent_account}", ns.name())
    );

    // Deleting the Gateway lets the controller drop the finalizer (a patch again), so the
    // class can go.
    gateways
        .delete("gw", &Default::default())
        .await
        .expect("deleting the Gateway");
    eventually(
        "the finalizer is removed once no Gateway uses the class",
        Duration::from_secs(30),
        || async {
            let class = classes.get(&fullname).await.map_err(|e| e.to_string())?;
            let finalizers = class.metadata.finalizers.unwrap_or_default();
            (!finalizers.iter().any(|f| f == FINALIZER))
                .then_some(())
                .ok_or_else(|| format!("{finalizers:?}"))
        },
    )
    .await;

    delete_cluster_scoped(&admin, &objects).await;
}
