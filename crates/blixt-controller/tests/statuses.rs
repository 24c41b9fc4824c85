//! The controller against a real kube-apiserver (tests/k8s): objects created through the API,
//! statuses observed through the API. Each test has its own namespace and its own
//! controllerName, so the controllers of concurrent tests never touch each other's classes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use blixt_controller::leader::LeaseConfig;
use blixt_controller::{start, ControllerOptions, Running};
use blixt_core::translator::{TranslatorConfig, GATEWAY_EXISTS_FINALIZER};
use blixt_gateway_api::{Gateway, GatewayClass, TcpRoute};
use blixt_k8s_harness::{apply, mark_pod_ready, parse_documents, shared, test_pod, TempNamespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not true after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A controller for this test's namespace (its own controllerName and Lease).
async fn controller(ns: &TempNamespace, pool: &[&str]) -> (Running, String) {
    controller_with(ns, pool, &[]).await
}

/// [`controller`], with static addresses allowed in `static_ranges` besides the pool.
async fn controller_with(
    ns: &TempNamespace,
    pool: &[&str],
    static_ranges: &[&str],
) -> (Running, String) {
    let cluster = shared();
    let controller_name = format!("blixt.dev/test-{}", ns.name());
    let opts = ControllerOptions {
        translator: TranslatorConfig {
            controller_name: controller_name.clone(),
            address_pool: pool.iter().map(|a| a.parse().unwrap()).collect(),
            static_address_ranges: static_ranges.iter().map(|a| a.parse().unwrap()).collect(),
            ..TranslatorConfig::default()
        },
        lease: LeaseConfig {
            namespace: ns.name().to_string(),
            name: "blixt-controller".into(),
            identity: format!("{}-a", ns.name()),
            lease_duration: Duration::from_secs(6),
            renew_every: Duration::from_secs(1),
        },
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        programmed_gate: None,
    };
    let running = start(cluster.client(), opts)
        .await
        .expect("controller starts");
    (running, controller_name)
}

async fn apply_yaml(client: &Client, yaml: &str) {
    for obj in parse_documents(yaml).expect("test manifest") {
        apply(client, &obj).await.expect("apply");
    }
}

fn cond<'a>(
    conds: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> Option<(&'a str, &'a str)> {
    conds
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

fn class_yaml(name: &str, controller: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\nspec: {{controllerName: {controller}}}\n")
}

fn service_yaml(ns: &str, name: &str, addrs: &[&str]) -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: p, port: 8080, protocol: TCP, targetPort: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-x\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for a in addrs {
        y.push_str(&format!(
            "- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"
        ));
    }
    y
}

#[tokio::test]
async fn class_gateway_and_route_statuses_through_the_api_server() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name();
    let (running, controller_name) = controller(&ns, &["192.0.2.10"]).await;
    let class = format!("{n}-blixt");
    let other_class = format!("{n}-other");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    apply_yaml(
        &client,
        &class_yaml(&other_class, "example.com/someone-else"),
    )
    .await;
    apply_yaml(
        &client,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{name: tcp, protocol: TCP, port: 80}}\n  - {{name: web, protocol: HTTP, port: 8080}}\n"
        ),
    )
    .await;
    apply_yaml(&client, &service_yaml(n, "app", &["10.1.0.1", "10.1.0.2"])).await;
    apply_yaml(
        &client,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: r, namespace: {n}}}\nspec:\n  parentRefs: [{{name: gw, sectionName: tcp}}]\n  rules:\n  - backendRefs: [{{name: app, port: 8080}}, {{name: missing, port: 8080}}]\n"
        ),
    )
    .await;

    let classes: Api<GatewayClass> = Api::all(client.clone());
    let gc = eventually("GatewayClass accepted", || async {
        let gc = classes.get(&class).await.ok()?;
        let c = gc.status.as_ref()?.conditions.as_ref()?;
        (cond(c, "Accepted") == Some(("True", "Accepted"))).then_some(gc)
    })
    .await;
    let features: Vec<String> = gc
        .status
        .unwrap()
        .supported_features
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let mut sorted = features.clone();
    sorted.sort();
    assert_eq!(features, sorted, "supportedFeatures sorted");
    assert!(features.contains(&"TCPRoute".to_string()));
    eventually("finalizer while a Gateway uses the class", || async {
        let gc = classes.get(&class).await.ok()?;
        gc.metadata
            .finalizers?
            .contains(&GATEWAY_EXISTS_FINALIZER.to_string())
            .then_some(())
    })
    .await;

    let gws: Api<Gateway> = Api::namespaced(client.clone(), n);
    let gw = eventually("Gateway programmed with the pool address", || async {
        let gw = gws.get("gw").await.ok()?;
        let st = gw.status.clone()?;
        let c = st.conditions.as_ref()?;
        let routes_seen = st
            .listeners
            .as_ref()?
            .iter()
            .any(|l| l.name == "tcp" && l.attached_routes == 1);
        (cond(c, "Programmed") == Some(("True", "Programmed"))
            && routes_seen
            && st
                .addresses
                .as_ref()?
                .iter()
                .any(|a| a.value == "192.0.2.10"))
        .then_some(gw)
    })
    .await;
    let st = gw.status.unwrap();
    assert_eq!(
        cond(st.conditions.as_ref().unwrap(), "Accepted"),
        Some(("True", "ListenersNotValid")),
        "one listener is HTTP"
    );
    for c in st.conditions.as_ref().unwrap() {
        assert_eq!(c.observed_generation, gw.metadata.generation, "{c:?}");
    }
    let listeners = st.listeners.unwrap();
    let tcp = listeners.iter().find(|l| l.name == "tcp").unwrap();
    assert_eq!(tcp.attached_routes, 1);
    let web = listeners.iter().find(|l| l.name == "web").unwrap();
    assert_eq!(
        cond(&web.conditions, "Accepted"),
        Some(("False", "UnsupportedProtocol"))
    );

    let routes: Api<TcpRoute> = Api::namespaced(client.clone(), n);
    let r = eventually("TCPRoute status", || async {
        let r = routes.get("r").await.ok()?;
        (!r.status.as_ref()?.parents.is_empty()).then_some(r)
    })
    .await;
    let parent = &r.status.unwrap().parents[0];
    assert_eq!(parent.controller_name, controller_name);
    assert_eq!(
        parent.parent_ref.group.as_deref(),
        Some("gateway.networking.k8s.io")
    );
    assert_eq!(parent.parent_ref.kind.as_deref(), Some("Gateway"));
    assert_eq!(parent.parent_ref.namespace.as_deref(), Some(n));
    assert_eq!(
        cond(&parent.conditions, "Accepted"),
        Some(("True", "Accepted"))
    );
    assert_eq!(
        cond(&parent.conditions, "ResolvedRefs"),
        Some(("False", "BackendNotFound"))
    );

    // the snapshot carries the route: two backends, the missing Service's share rejected
    let mut snaps = running.snapshots.clone();
    let fe = eventually("snapshot frontend", || {
        let s = snaps.borrow_and_update().clone();
        async move {
            s.snapshot
                .frontends
                .into_iter()
                .find(|f| f.name == format!("{n}/gw/tcp"))
        }
    })
    .await;
    assert_eq!(fe.backends.len(), 2);
    // the missing Service's weight (1 of 2) is rejected: half of the new flows
    let served: u32 = fe.backends.iter().map(|b| b.weight).sum();
    assert_eq!(fe.reject_weight, served, "{fe:?}");

    // another controller's class is left alone
    let other = classes.get(&other_class).await.unwrap();
    assert!(
        other
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .all(|c| c.reason != "Accepted" || c.status != "True"),
        "status written for someone else's class"
    );

    // generation bump: observedGeneration follows
    let mut gc = classes.get(&class).await.unwrap();
    gc.spec.description = Some("changed".into());
    classes
        .replace(&class, &PostParams::default(), &gc)
        .await
        .unwrap();
    eventually(
        "observedGeneration follows the class's generation",
        || async {
            let gc = classes.get(&class).await.ok()?;
            let c = gc.status.as_ref()?.conditions.as_ref()?;
            c.iter()
                .all(|c| c.observed_generation == gc.metadata.generation)
                .then_some(())
        },
    )
    .await;

    // deleting the Gateway releases the class's finalizer
    gws.delete("gw", &DeleteParams::default()).await.unwrap();
    eventually(
        "finalizer removed once no Gateway uses the class",
        || async {
            let gc = classes.get(&class).await.ok()?;
            (!gc.metadata
                .finalizers
                .unwrap_or_default()
                .contains(&GATEWAY_EXISTS_FINALIZER.to_string()))
            .then_some(())
        },
    )
    .await;
    classes
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    classes
        .delete(&other_class, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn reference_grant_grants_and_its_deletion_revokes() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let backend_ns = cluster.temp_namespace().await;
    let (n, b) = (ns.name(), backend_ns.name());
    let (running, controller_name) = controller(&ns, &["192.0.2.20"]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: tcp, protocol: TCP, port: 80}}]\n")).await;
    apply_yaml(&client, &service_yaml(b, "app", &["10.2.0.1"])).await;
    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: r, namespace: {n}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: app, namespace: {b}, port: 8080}}]\n")).await;

    let routes: Api<TcpRoute> = Api::namespaced(client.clone(), n);
    let resolved = |want: (&'static str, &'static str)| {
        let routes = routes.clone();
        async move {
            let r = routes.get("r").await.ok()?;
            let p = r.status?.parents.into_iter().next()?;
            (cond(&p.conditions, "ResolvedRefs") == Some(want)).then_some(())
        }
    };
    eventually("RefNotPermitted without a grant", || {
        resolved(("False", "RefNotPermitted"))
    })
    .await;

    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: allow, namespace: {b}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: {n}}}]\n  to: [{{group: \"\", kind: Service}}]\n")).await;
    eventually("granted", || resolved(("True", "ResolvedRefs"))).await;
    let mut snaps = running.snapshots.clone();
    eventually("traffic allowed: a backend in the snapshot", || {
        let s = snaps.borrow_and_update().clone();
        async move {
            s.snapshot
                .frontends
                .iter()
                .any(|f| f.name == format!("{n}/gw/tcp") && f.backends.len() == 1)
                .then_some(())
        }
    })
    .await;

    let grants: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        b,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "ReferenceGrant"),
            "referencegrants",
        ),
    );
    grants
        .delete("allow", &DeleteParams::default())
        .await
        .unwrap();
    eventually("revoked", || resolved(("False", "RefNotPermitted"))).await;
    eventually("traffic stops: no backend in the snapshot", || {
        let s = snaps.borrow_and_update().clone();
        async move {
            s.snapshot
                .frontends
                .iter()
                .any(|f| f.name == format!("{n}/gw/tcp") && f.backends.is_empty())
                .then_some(())
        }
    })
    .await;
    Api::<GatewayClass>::all(client)
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn endpoint_slice_controller_changes_reach_the_snapshot() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name();
    let (running, controller_name) = controller(&ns, &["192.0.2.30"]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: tcp, protocol: TCP, port: 80}}]\n")).await;
    // a Service with a selector: the real EndpointSlice controller fills its slices from Pods
    apply_yaml(&client, &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: {n}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: p, port: 8080, protocol: TCP, targetPort: 8080}}]\n")).await;
    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: r, namespace: {n}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: app, port: 8080}}]\n")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), n);
    for (i, ip) in ["10.3.0.1", "10.3.0.2"].iter().enumerate() {
        let name = format!("web-{i}");
        pods.create(
            &PostParams::default(),
            &test_pod(&name, &[("app", "web")], cluster.node_name(), 8080),
        )
        .await
        .unwrap();
        mark_pod_ready(&client, n, &name, ip, true).await;
    }
    let mut snaps = running.snapshots.clone();
    let mut backends = |want: BTreeSet<&'static str>| {
        let s = snaps.borrow_and_update().clone();
        let fe_name = format!("{n}/gw/tcp");
        async move {
            let fe = s
                .snapshot
                .frontends
                .into_iter()
                .find(|f| f.name == fe_name)?;
            let got: BTreeSet<String> = fe
                .backends
                .iter()
                .filter(|b| b.weight > 0 && b.state == blixt_core::snapshot::BackendState::Active)
                .map(|b| b.addr.addr.to_string())
                .collect();
            (got == want.iter().map(|s| s.to_string()).collect()).then_some(())
        }
    };
    eventually("both ready pods", || {
        backends(["10.3.0.1", "10.3.0.2"].into())
    })
    .await;
    mark_pod_ready(&client, n, "web-1", "10.3.0.2", false).await;
    eventually("unready pod leaves new flows", || {
        backends(["10.3.0.1"].into())
    })
    .await;
    let p = pods
        .create(
            &PostParams::default(),
            &test_pod("web-2", &[("app", "web")], cluster.node_name(), 8080),
        )
        .await;
    p.unwrap();
    mark_pod_ready(&client, n, "web-2", "10.3.0.3", true).await;
    eventually("new pod joins", || {
        backends(["10.3.0.1", "10.3.0.3"].into())
    })
    .await;
    // a pod being deleted (no kubelet confirms it, so it stays Terminating while Ready): the
    // EndpointSlice controller marks it serving+terminating, and it drains
    pods.delete(
        "web-0",
        &DeleteParams {
            grace_period_seconds: Some(300),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let fe_name = format!("{n}/gw/tcp");
    eventually("terminating pod drains: kept, no new flows", || {
        let s = running.snapshots.borrow().clone();
        let fe_name = fe_name.clone();
        async move {
            let fe = s
                .snapshot
                .frontends
                .into_iter()
                .find(|f| f.name == fe_name)?;
            let state = |a: &str| {
                fe.backends
                    .iter()
                    .find(|b| b.addr.addr.to_string() == a)
                    .map(|b| b.state)
            };
            (state("10.3.0.1")? == blixt_core::snapshot::BackendState::Terminating
                && state("10.3.0.3")? == blixt_core::snapshot::BackendState::Active)
                .then_some(())
        }
    })
    .await;
    Api::<GatewayClass>::all(client)
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
}

/// Reads a route's single parent conditions as (type, status, reason).
async fn route_conditions(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<Vec<(String, String, String)>> {
    let routes: Api<TcpRoute> = Api::namespaced(client.clone(), ns);
    let r = routes.get(name).await.ok()?;
    let p = r.status?.parents.into_iter().next()?;
    Some(
        p.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn listener_and_attachment_rules_through_the_api_server() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let other = cluster.temp_namespace().await;
    let (n, o) = (ns.name(), other.name());
    let (_running, controller_name) = controller(&ns, &["192.0.2.40"]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    // TCP and TLS listeners on one port conflict (both TCP; identical listeners the CRD
    // refuses itself); a UDP one on that port does not; `sel` admits routes
    // from namespaces labelled team=blue only
    apply_yaml(&client, &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{name: a, protocol: TCP, port: 7000}}\n  - {{name: b, protocol: TLS, port: 7000, hostname: x.example.com, tls: {{mode: Passthrough}}}}\n  - {{name: u, protocol: UDP, port: 7000}}\n  - name: sel\n    protocol: TCP\n    port: 7100\n    allowedRoutes:\n      namespaces:\n        from: Selector\n        selector: {{matchLabels: {{team: blue}}}}\n  - {{name: p1, protocol: TCP, port: 7200}}\n")).await;
    apply_yaml(&client, &service_yaml(n, "app", &["10.4.0.1"])).await;
    apply_yaml(&client, &service_yaml(o, "app", &["10.4.0.2"])).await;
    let route = |ns: &str, name: &str, parent: &str, backend: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{parent}]\n  rules:\n  - backendRefs: [{backend}]\n")
    };
    let gw_ref = format!("{{name: gw, namespace: {n}");
    // parentRef by port only, by section and port that disagree, to a missing section
    apply_yaml(
        &client,
        &route(
            n,
            "by-port",
            &format!("{gw_ref}, port: 7200}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    apply_yaml(
        &client,
        &route(
            n,
            "mismatch",
            &format!("{gw_ref}, sectionName: p1, port: 7100}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    apply_yaml(
        &client,
        &route(
            n,
            "no-section",
            &format!("{gw_ref}, sectionName: nope}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    // a route in another namespace not selected by `sel`, then selected
    apply_yaml(
        &client,
        &route(
            o,
            "foreign",
            &format!("{gw_ref}, sectionName: sel}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    // an unknown backend kind
    apply_yaml(
        &client,
        &route(
            n,
            "odd-kind",
            &format!("{gw_ref}, sectionName: p1}}"),
            "{group: example.com, kind: Bucket, name: x}",
        ),
    )
    .await;

    let want = |t: &str, st: &str, r: &str| (t.to_string(), st.to_string(), r.to_string());
    let expect = |name: &'static str, ns: String, conds: Vec<(String, String, String)>| {
        let client = client.clone();
        async move {
            let what = format!("{name}: {conds:?}");
            eventually(&what, || {
                let (client, ns, conds) = (client.clone(), ns.clone(), conds.clone());
                async move {
                    let got = route_conditions(&client, &ns, name).await;
                    if got.as_ref() != Some(&conds) {
                        eprintln!("{name}: {got:?}");
                    }
                    (got? == conds).then_some(())
                }
            })
            .await
        }
    };
    expect(
        "by-port",
        n.to_string(),
        vec![
            want("Accepted", "True", "Accepted"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    expect(
        "mismatch",
        n.to_string(),
        vec![
            want("Accepted", "False", "NoMatchingParent"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    expect(
        "no-section",
        n.to_string(),
        vec![
            want("Accepted", "False", "NoMatchingParent"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    expect(
        "foreign",
        o.to_string(),
        vec![
            want("Accepted", "False", "NotAllowedByListeners"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    expect(
        "odd-kind",
        n.to_string(),
        vec![
            want("Accepted", "True", "Accepted"),
            want("ResolvedRefs", "False", "InvalidKind"),
        ],
    )
    .await;

    // listener conflicts
    let gws: Api<Gateway> = Api::namespaced(client.clone(), n);
    eventually(
        "conflicted TCP/TLS listeners, UDP on the same port fine",
        || async {
            let ls = gws.get("gw").await.ok()?.status?.listeners?;
            let c = |name: &str| {
                ls.iter().find(|l| l.name == name).and_then(|l| {
                    cond(&l.conditions, "Conflicted").map(|(s, r)| (s.to_string(), r.to_string()))
                })
            };
            (c("a")? == ("True".into(), "ProtocolConflict".into())
                && c("b")? == ("True".into(), "ProtocolConflict".into())
                && c("u")?.0 == "False")
                .then_some(())
        },
    )
    .await;

    // labelling the other namespace admits its route
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {"team": "blue"}}});
    nss.patch(
        o,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    expect(
        "foreign",
        o.to_string(),
        vec![
            want("Accepted", "True", "Accepted"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;

    // oldest route wins on a listener; both are Accepted. creationTimestamp has second
    // resolution and ties go to namespace/name: keep a second between the routes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_yaml(
        &client,
        &route(
            n,
            "older",
            &format!("{gw_ref}, sectionName: sel}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has second resolution
    apply_yaml(
        &client,
        &route(
            n,
            "newer",
            &format!("{gw_ref}, sectionName: sel}}"),
            "{name: app, port: 8080}",
        ),
    )
    .await;
    // `sel` does not admit routes of gw's own namespace: label it too
    let patch = serde_json::json!({"metadata": {"labels": {"team": "blue"}}});
    nss.patch(
        n,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    expect(
        "newer",
        n.to_string(),
        vec![
            want("Accepted", "True", "Accepted"),
            want("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    let mut snaps = _running.snapshots.clone();
    eventually("only the oldest route's backends carry traffic", || {
        let s = snaps.borrow_and_update().clone();
        let fe_name = format!("{n}/gw/sel");
        async move {
            let fe = s
                .snapshot
                .frontends
                .into_iter()
                .find(|f| f.name == fe_name)?;
            // the foreign route (created first) is the oldest: its backend, 10.4.0.2, serves
            let addrs: Vec<String> = fe
                .backends
                .iter()
                .map(|b| b.addr.addr.to_string())
                .collect();
            if addrs != ["10.4.0.2"] {
                eprintln!("sel frontend: {fe:?}");
            }
            (addrs == ["10.4.0.2"]).then_some(())
        }
    })
    .await;
    Api::<GatewayClass>::all(client)
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_routes_through_the_api_server() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name();
    let (running, controller_name) = controller(&ns, &["192.0.2.60"]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    apply_yaml(
        &client,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{name: tls, protocol: TLS, port: 443, hostname: \"*.example.com\", tls: {{mode: Passthrough}}}}\n  - {{name: term, protocol: TLS, port: 8443, tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}}}\n"
        ),
    )
    .await;
    let mut svc = service_yaml(n, "app", &["10.5.0.1"]);
    svc = svc.replace("port: 8080", "port: 8443");
    apply_yaml(&client, &svc).await;
    let tls_route = |name: &str, host: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n  parentRefs: [{{name: gw, sectionName: tls}}]\n  hostnames: [\"{host}\"]\n  rules:\n  - backendRefs: [{{name: app, port: 8443}}]\n")
    };
    apply_yaml(&client, &tls_route("a", "a.example.com")).await;
    apply_yaml(&client, &tls_route("other", "a.example.org")).await;

    let routes: Api<blixt_gateway_api::TlsRoute> = Api::namespaced(client.clone(), n);
    let accepted = |name: &'static str, want: (&'static str, &'static str)| {
        let routes = routes.clone();
        async move {
            let r = routes.get(name).await.ok()?;
            let p = r.status?.parents.into_iter().next()?;
            (cond(&p.conditions, "Accepted") == Some(want)).then_some(())
        }
    };
    eventually("a.example.com accepted", || {
        accepted("a", ("True", "Accepted"))
    })
    .await;
    eventually("a.example.org does not intersect *.example.com", || {
        accepted("other", ("False", "NoMatchingListenerHostname"))
    })
    .await;
    let gws: Api<Gateway> = Api::namespaced(client.clone(), n);
    eventually("Terminate listener is not supported", || async {
        let ls = gws.get("gw").await.ok()?.status?.listeners?;
        let term = ls.iter().find(|l| l.name == "term")?;
        (cond(&term.conditions, "Accepted") == Some(("False", "UnsupportedValue"))
            && term.supported_kinds.as_ref().is_none_or(|k| k.is_empty()))
        .then_some(())
    })
    .await;
    // the SNI table goes out with the snapshot
    let route = eventually("SNI table published", || {
        let s = running.snapshots.borrow().clone();
        async move {
            s.tls
                .into_iter()
                .flat_map(|f| f.routes)
                .find(|r| r.hostname == "a.example.com")
        }
    })
    .await;
    assert_eq!(route.backends.len(), 1);
    assert_eq!(route.backends[0].addr.addr.to_string(), "10.5.0.1");
    Api::<GatewayClass>::all(client)
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn foreign_gateway_and_listener_conditions_are_preserved() {
    // gateway-preserve-foreign-conditions (v1.7.0): a condition of a type Blixt does not own,
    // seeded on the Gateway and on a listener with a status update, survives Blixt's status
    // writes after a generation bump, unchanged.
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    const FOREIGN: &str = "conformance.gateway.networking.k8s.io/StaleCondition";

    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name();
    let (_running, controller_name) = controller(&ns, &["192.0.2.10"]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    let gateway = |from: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n  listeners:\n  - {{name: tcp, protocol: TCP, port: 80, allowedRoutes: {{namespaces: {{from: {from}}}}}}}\n"
        )
    };
    apply_yaml(&client, &gateway("Same")).await;

    let gws: Api<Gateway> = Api::namespaced(client.clone(), n);
    eventually("Gateway and listener status written", || async {
        let st = gws.get("gw").await.ok()?.status?;
        (cond(st.conditions.as_deref()?, "Programmed").is_some()
            && st.listeners?.iter().any(|l| l.name == "tcp"))
        .then_some(())
    })
    .await;

    // Seed with a read-modify-write status update, as another controller would.
    let mut gw = gws.get("gw").await.unwrap();
    let foreign = Condition {
        type_: FOREIGN.into(),
        status: "True".into(),
        reason: "Seeded".into(),
        message: String::new(),
        observed_generation: gw.metadata.generation,
        last_transition_time: Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ),
    };
    let st = gw.status.as_mut().unwrap();
    st.conditions.get_or_insert_default().push(foreign.clone());
    st.listeners
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l.name == "tcp")
        .unwrap()
        .conditions
        .push(foreign.clone());
    let seeded = gws
        .replace_status("gw", &PostParams::default(), &gw)
        .await
        .expect("status update");
    let first_generation = seeded.metadata.generation.unwrap();

    // Bump the generation: Blixt rewrites its conditions for the new one.
    apply_yaml(&client, &gateway("All")).await;
    let gw = eventually("conditions of the new generation", || async {
        let gw = gws.get("gw").await.ok()?;
        let generation = gw.metadata.generation?;
        let st = gw.status.as_ref()?;
        let ours = |conds: &[Condition]| {
            conds
                .iter()
                .filter(|c| c.type_ != FOREIGN)
                .all(|c| c.observed_generation == Some(generation))
        };
        (generation > first_generation
            && ours(st.conditions.as_deref()?)
            && st.listeners.as_ref()?.iter().all(|l| ours(&l.conditions)))
        .then_some(gw)
    })
    .await;
    let st = gw.status.unwrap();
    let find = |conds: &[Condition]| conds.iter().find(|c| c.type_ == FOREIGN).cloned();
    assert_eq!(
        find(st.conditions.as_deref().unwrap()),
        Some(foreign.clone()),
        "Gateway condition kept as seeded"
    );
    let tcp = st
        .listeners
        .unwrap()
        .into_iter()
        .find(|l| l.name == "tcp")
        .unwrap();
    assert_eq!(
        find(&tcp.conditions),
        Some(foreign),
        "listener condition kept as seeded"
    );
    assert_eq!(
        cond(&tcp.conditions, "Accepted"),
        Some(("True", "Accepted"))
    );
    Api::<GatewayClass>::all(client)
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
}

/// Issue 19, item 1 through the API server: tenants' Gateways try an older Gateway's pool
/// address, an address outside the allowed ranges, a Node's address, the API server's Service
/// address and loopback. None is assigned: each is `Programmed=False/AddressNotUsable` (never
/// `Programmed=True`), the older Gateway keeps its address, and none of them reaches the
/// snapshot (no frontend, so no agent programs or announces it).
#[tokio::test]
async fn hostile_static_addresses_are_refused_through_the_api_server() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name();
    // the Node: an address in the range the admin allowed for static addresses
    let node_name = format!("{n}-node");
    let node_ip = "192.0.2.1";
    blixt_k8s_harness::create_node(&client, &node_name, node_ip.parse().unwrap())
        .await
        .expect("node");
    let api_server: String = {
        let svcs: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), "default");
        let svc = svcs
            .get("kubernetes")
            .await
            .expect("the kubernetes Service");
        svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
    };
    let allowed_api = format!("{api_server}/32");
    let (running, controller_name) =
        controller_with(&ns, &["192.0.2.10"], &["192.0.2.0/24", &allowed_api]).await;
    let class = format!("{n}-blixt");
    apply_yaml(&client, &class_yaml(&class, &controller_name)).await;
    let gateway = |name: &str, address: Option<&str>| {
        let addresses = address.map_or(String::new(), |a| {
            format!("  addresses: [{{type: IPAddress, value: \"{a}\"}}]\n")
        });
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n  gatewayClassName: {class}\n{addresses}  listeners: [{{name: tcp, protocol: TCP, port: 80}}]\n")
    };
    let gws: Api<Gateway> = Api::namespaced(client.clone(), n);
    let status_of = |name: &str| {
        let gws = gws.clone();
        let name = name.to_string();
        async move {
            let g = gws.get(&name).await.ok()?;
            let st = g.status?;
            let programmed = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Programmed")?
                .clone();
            let addresses: Vec<String> = st
                .addresses
                .into_iter()
                .flatten()
                .map(|a| a.value)
                .collect();
            Some((programmed, addresses))
        }
    };
    apply_yaml(&client, &gateway("victim", None)).await;
    eventually("the victim programmed on the pool address", || async {
        let (p, a) = status_of("victim").await?;
        (p.status == "True" && a == ["192.0.2.10"]).then_some(())
    })
    .await;

    let hostile = [
        ("thief", "192.0.2.10"),
        ("outside", "203.0.113.9"),
        ("on-node", node_ip),
        ("on-api-server", api_server.as_str()),
        ("loopback", "127.0.0.1"),
    ];
    for (name, ip) in hostile {
        apply_yaml(&client, &gateway(name, Some(ip))).await;
    }
    let mut assigned = 0;
    for (name, ip) in hostile {
        let (p, a) = eventually(&format!("{name} refused"), || async {
            let (p, a) = status_of(name).await?;
            (p.observed_generation.is_some() && p.reason != "Pending").then_some((p, a))
        })
        .await;
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "AddressNotUsable"),
            "{name}: {}",
            p.message
        );
        assert!(p.message.contains(ip), "{name}: {}", p.message);
        assigned += a.len();
    }
    let snapshot = running.snapshots.borrow().clone();
    let vips: BTreeSet<String> = snapshot
        .snapshot
        .frontends
        .iter()
        .map(|f| f.key.vip.to_string())
        .chain(snapshot.tls.iter().map(|t| t.vip.to_string()))
        .collect();
    for (name, ip) in hostile {
        if name != "thief" {
            assert!(!vips.contains(ip), "{name}: {ip} is in the snapshot");
        }
        assert!(
            !snapshot
                .snapshot
                .frontends
                .iter()
                .any(|f| f.name.starts_with(&format!("{n}/{name}/"))),
            "{name} has a frontend"
        );
    }
    println!(
        "hostile static addresses tried: {}, assigned: {assigned}",
        hostile.len()
    );
    assert_eq!(assigned, 0);
    // the older claim keeps its address
    let (p, a) = status_of("victim").await.unwrap();
    assert_eq!(
        (p.status.as_str(), a),
        ("True", vec!["192.0.2.10".to_string()])
    );
    assert!(vips.contains("192.0.2.10"));
    let on_node = status_of("on-node").await.unwrap().0;
    assert!(
        on_node
            .message
            .contains(&format!("the InternalIP of node {node_name}")),
        "{}",
        on_node.message
    );

    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
}
