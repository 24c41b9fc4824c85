//! The harness against the real control plane it starts. Needs the binaries from
//! `tests/k8s/build.sh`; without them every test fails and says so.

use std::collections::BTreeSet;
use std::time::Duration;

use blixt_k8s_harness::{eventually, mark_pod_ready, shared, test_pod};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery;
use kube::Client;

async fn dynamic_api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
    let (resource, _) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {kind}: {e}"));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn object(yaml: &str) -> DynamicObject {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test manifest: {e}\n{yaml}"))
}

#[tokio::test]
async fn api_server_reports_the_pinned_version_and_serves_gateway_api() {
    let cluster = shared();
    let client = cluster.client();
    let version = client
        .apiserver_version()
        .await
        .expect("GET /version on the test API server");
    assert_eq!(
        version.git_version,
        blixt_k8s_harness::kubernetes_version(),
        "the build script's ldflags set /version"
    );
    let minor = blixt_k8s_harness::kubernetes_version().split('.').nth(1);
    assert_eq!(version.major, "1", "{version:?}");
    assert_eq!(Some(version.minor.as_str()), minor, "{version:?}");
    assert_eq!(version.git_tree_state, "clean", "{version:?}");

    let installed: BTreeSet<&str> = cluster
        .gateway_api_crds()
        .iter()
        .map(String::as_str)
        .collect();
    for crd in [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "tcproutes.gateway.networking.k8s.io",
        "udproutes.gateway.networking.k8s.io",
        "tlsroutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ] {
        assert!(
            installed.contains(crd),
            "{crd} not installed: {installed:?}"
        );
    }
    for kind in [
        "GatewayClass",
        "Gateway",
        "TCPRoute",
        "UDPRoute",
        "TLSRoute",
        "ReferenceGrant",
    ] {
        dynamic_api(&client, kind, None).await;
    }
}

#[tokio::test]
async fn gateway_api_objects_round_trip_as_dynamic_objects() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    // GatewayClasses are cluster-scoped: name it after the namespace so tests do not collide.
    let class_name = format!("{}-class", ns.name());

    let classes = dynamic_api(&client, "GatewayClass", None).await;
    let class = object(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: {class_name}
spec:
  controllerName: blixt.dev/test-controller
  description: created by the harness test
"#
    ));
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("creating a GatewayClass");

    let gateways = dynamic_api(&client, "Gateway", Some(ns.name())).await;
    let gateway = object(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  gatewayClassName: {class_name}
  listeners:
  - name: tcp
    protocol: TCP
    port: 8080
    allowedRoutes:
      kinds:
      - kind: TCPRoute
"#
    ));
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("creating a Gateway");

    let read_class = classes
        .get(&class_name)
        .await
        .expect("reading the GatewayClass");
    assert_eq!(
        read_class.data["spec"]["controllerName"],
        "blixt.dev/test-controller"
    );
    let read_gateway = gateways.get("edge").await.expect("reading the Gateway");
    assert_eq!(
        read_gateway.data["spec"]["gatewayClassName"],
        class_name.as_str()
    );
    let listener = &read_gateway.data["spec"]["listeners"][0];
    assert_eq!(listener["protocol"], "TCP", "{listener}");
    assert_eq!(listener["port"], 8080, "{listener}");
    // The CRD's defaults were applied by the server (allowedRoutes.namespaces.from = Same).
    assert_eq!(
        listener["allowedRoutes"]["namespaces"]["from"], "Same",
        "{listener}"
    );
    // CRD validation is live: a listener port out of range is refused.
    let mut bad = gateway.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["listeners"][0]["port"] = 70000.into();
    let refused = gateways.create(&PostParams::default(), &bad).await;
    assert!(refused.is_err(), "port 70000 accepted: {refused:?}");

    classes
        .delete(&class_name, &DeleteParams::default())
        .await
        .expect("deleting the GatewayClass");
}

#[tokio::test]
async fn endpointslice_controller_follows_pod_readiness() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());

    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "echo" },
        "spec": {
            "selector": { "app": "echo" },
            "ports": [{ "name": "tcp", "protocol": "TCP", "port": 80, "targetPort": 8080 }],
        },
    }))
    .expect("a valid Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("creating Service echo");

    // Documentation addresses (RFC 5737): stored, never contacted.
    let backends = [("echo-a", "192.0.2.10"), ("echo-b", "192.0.2.11")];
    for (name, _) in backends {
        let pod = test_pod(name, &[("app", "echo")], cluster.node_name(), 8080);
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    }
    for (name, ip) in backends {
        mark_pod_ready(&client, ns.name(), name, ip, true).await;
    }

    let by_service = ListParams::default().labels("kubernetes.io/service-name=echo");
    let endpoints = || {
        let slices = slices.clone();
        let by_service = by_service.clone();
        async move {
            let list = slices
                .list(&by_service)
                .await
                .expect("listing EndpointSlices");
            let mut seen = BTreeSet::new();
            for slice in list {
                assert_eq!(slice.address_type, "IPv4");
                let port = slice
                    .ports
                    .as_ref()
                    .and_then(|p| p.first())
                    .and_then(|p| p.port);
                for endpoint in slice.endpoints.into_iter().flatten() {
                    let ready = endpoint
                        .conditions
                        .as_ref()
                        .and_then(|c| c.ready)
                        .unwrap_or(false);
                    for address in endpoint.addresses {
                        seen.insert((address, port, ready));
                    }
                }
            }
            seen
        }
    };

    let want: BTreeSet<_> = backends
        .iter()
        .map(|(_, ip)| (ip.to_string(), Some(8080), true))
        .collect();
    eventually(
        "EndpointSlice holds both ready pods",
        Duration::from_secs(30),
        || {
            let want = want.clone();
            let endpoints = endpoints();
            async move { (endpoints.await == want).then_some(()) }
        },
    )
    .await;

    // A pod turning unready stays in the slice, not ready.
    mark_pod_ready(&client, ns.name(), "echo-b", "192.0.2.11", false).await;
    let want: BTreeSet<_> = [
        ("192.0.2.10".to_owned(), Some(8080), true),
        ("192.0.2.11".to_owned(), Some(8080), false),
    ]
    .into();
    eventually(
        "echo-b is listed not ready",
        Duration::from_secs(30),
        || {
            let want = want.clone();
            let endpoints = endpoints();
            async move { (endpoints.await == want).then_some(()) }
        },
    )
    .await;

    // A deleted pod leaves the slice.
    pods.delete("echo-a", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleting pod echo-a");
    let want: BTreeSet<_> = [("192.0.2.11".to_owned(), Some(8080), false)].into();
    eventually("echo-a leaves the slice", Duration::from_secs(30), || {
        let want = want.clone();
        let endpoints = endpoints();
        async move { (endpoints.await == want).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn service_account_clients_are_authorized_by_rbac() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let admin = cluster.client();
    let as_reader = cluster.client_as_service_account(ns.name(), "reader");
    let pods: Api<Pod> = Api::namespaced(as_reader, ns.name());

    let denied = pods.list(&ListParams::default()).await;
    match denied {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("a service account without roles listed pods: {other:?}"),
    }

    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }],
    }))
    .expect("a valid Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "pod-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }],
    }))
    .expect("a valid RoleBinding");
    Api::<Role>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &role)
        .await
        .expect("creating Role pod-reader");
    Api::<RoleBinding>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating RoleBinding pod-reader");

    eventually(
        "the bound service account lists pods",
        Duration::from_secs(10),
        || {
            let pods = pods.clone();
            async move { pods.list(&ListParams::default()).await.ok() }
        },
    )
    .await;
    // Still nothing beyond the role.
    let services: Api<Service> = Api::namespaced(
        cluster.client_as_service_account(ns.name(), "reader"),
        ns.name(),
    );
    assert!(services.list(&ListParams::default()).await.is_err());

    // The same identity through a kubeconfig, as a child process would load it.
    let path = cluster.kubeconfig_as_service_account(ns.name(), "reader");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("loading the kubeconfig");
    let from_file: Api<Pod> = Api::namespaced(
        Client::try_from(config).expect("client from kubeconfig"),
        ns.name(),
    );
    from_file
        .list(&ListParams::default())
        .await
        .expect("listing pods through the service-account kubeconfig");
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_pass_token_review() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let admin = cluster.client();
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "agent" },
    }))
    .expect("a valid ServiceAccount");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &account)
        .await
        .expect("creating ServiceAccount agent");

    let token = cluster
        .service_account_token(ns.name(), "agent", &["blixt-controller"])
        .await;
    let review: TokenReview = serde_json::from_value(serde_json::json!({
        "spec": { "token": token, "audiences": ["blixt-controller"] },
    }))
    .expect("a valid TokenReview");
    let reviewed = Api::<TokenReview>::all(admin)
        .create(&PostParams::default(), &review)
        .await
        .expect("creating a TokenReview");
    let status = reviewed.status.expect("TokenReview has a status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("an authenticated user");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:agent", ns.name()).as_str())
    );

    // A token for the API server's own audience authenticates requests; RBAC still applies.
    let token = cluster.service_account_token(ns.name(), "agent", &[]).await;
    let as_agent = cluster.client_with_token(&token);
    as_agent
        .apiserver_version()
        .await
        .expect("GET /version with a service-account token");
    let pods: Api<Pod> = Api::namespaced(as_agent, ns.name());
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("a service account without roles listed pods: {other:?}"),
    }
}

#[tokio::test]
async fn temporary_namespaces_are_deleted_on_drop() {
    let cluster = shared();
    let client = cluster.client();
    let namespaces: Api<Namespace> = Api::all(client);
    let name = {
        let ns = cluster.temp_namespace().await;
        namespaces
            .get(ns.name())
            .await
            .expect("the temporary namespace exists");
        ns.name().to_owned()
    };
    eventually("the namespace is deleted", Duration::from_secs(60), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move {
            match namespaces.get_opt(&name).await.expect("reading namespace") {
                None => Some(()),
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => Some(()),
                Some(_) => None,
            }
        }
    })
    .await;
}

#[test]
fn admin_kubeconfig_works_for_child_processes() {
    let cluster = shared();
    let text = std::fs::read_to_string(cluster.kubeconfig_path()).expect("reading kubeconfig");
    assert!(text.contains(cluster.server_url()), "{text}");
    assert!(cluster.server_url().starts_with("https://127.0.0.1:"));
}
