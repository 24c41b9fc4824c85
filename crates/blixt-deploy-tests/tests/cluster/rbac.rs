//! The controller's and the agent's permissions, exercised as their ServiceAccounts
//! (impersonation: RBAC and admission decide exactly as for the real pods): a matrix of
//! SubjectAccessReviews, then the real calls the controller makes and the ones it must not.

use std::time::Duration;

use blixt_deploy_tests::{
    apply_all, delete_cluster_scoped, dynamic_api, eventually, unique_fullname, HelmRender, Mode,
};
use blixt_k8s_harness::{shared, Cluster, TempNamespace};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::Client;

const GATEWAY_API: &str = "gateway.networking.k8s.io";
const CONTROLLER_FIELD_MANAGER: &str = "blixt-controller";

/// The chart installed in a namespace of its own, under names no other test uses.
struct Install {
    ns: TempNamespace,
    fullname: String,
    objects: Vec<DynamicObject>,
}

impl Install {
    async fn new(cluster: &Cluster, client: &Client, delegation: bool) -> Self {
        let ns = cluster.temp_namespace().await;
        let fullname = unique_fullname(ns.name());
        let objects = HelmRender::new(ns.name())
            .set("fullnameOverride", &fullname)
            .set("gatewayClass.name", &fullname)
            .set(
                "controller.loadBalancerDelegation",
                if delegation { "true" } else { "false" },
            )
            .render();
        apply_all(client, &objects, Mode::Real)
            .await
            .unwrap_or_else(|e| panic!("installing the chart: {e:#}"));
        Self {
            ns,
            fullname,
            objects,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    fn controller_account(&self) -> String {
        format!("{}-controller", self.fullname)
    }

    fn agent_account(&self) -> String {
        format!("{}-agent", self.fullname)
    }

    fn user(&self, account: &str) -> (String, Vec<String>) {
        (
            format!("system:serviceaccount:{}:{account}", self.ns()),
            vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{}", self.ns()),
                "system:authenticated".to_owned(),
            ],
        )
    }

    async fn cleanup(&self, client: &Client) {
        delete_cluster_scoped(client, &self.objects).await;
    }
}

/// One SubjectAccessReview question: verb, group, resource (with `/subresource`), namespace
/// ("" = cluster-wide or all namespaces), name ("" = any).
#[derive(Debug, Clone)]
struct Ask {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespace: String,
    name: &'static str,
}

fn ask(verb: &'static str, group: &'static str, resource: &'static str, namespace: &str) -> Ask {
    Ask {
        verb,
        group,
        resource,
        namespace: namespace.to_owned(),
        name: "",
    }
}

impl Ask {
    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

async fn allowed(client: &Client, user: &(String, Vec<String>), ask: &Ask) -> bool {
    let (resource, subresource) = ask.resource.split_once('/').unwrap_or((ask.resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.0,
            "groups": user.1,
            "resourceAttributes": {
                "verb": ask.verb,
                "group": ask.group,
                "resource": resource,
                "subresource": subresource,
                "namespace": ask.namespace,
                "name": ask.name,
            },
        },
    }))
    .expect("a SubjectAccessReview");
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("creating a SubjectAccessReview")
        .status
        .expect("a status")
        .allowed
}

/// Asks every question and fails with the full list of wrong answers.
async fn check_matrix(client: &Client, who: &(String, Vec<String>), expect: bool, asks: &[Ask]) {
    let mut wrong = Vec::new();
    for ask in asks {
        if allowed(client, who, ask).await != expect {
            wrong.push(format!("{ask:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} should {}be allowed:\n{}",
        who.0,
        if expect { "" } else { "not " },
        wrong.join("\n")
    );
}

#[tokio::test]
async fn controller_may_do_what_it_needs() {
    let cluster = shared();
    let admin = cluster.client();
    let install = Install::new(cluster, &admin, true).await;
    let ns = install.ns();
    let controller = install.user(&install.controller_account());
    let g = GATEWAY_API;

    let mut asks = Vec::new();
    for resource in [
        "gatewayclasses",
        "gateways",
        "tcproutes",
        "udproutes",
        "tlsroutes",
        "referencegrants",
    ] {
        for verb in ["get", "list", "watch"] {
            asks.push(ask(verb, g, resource, ""));
            asks.push(ask(verb, g, resource, "tenant-a"));
        }
    }
    for resource in [
        "gatewayclasses/status",
        "gateways/status",
        "tcproutes/status",
        "udproutes/status",
        "tlsroutes/status",
    ] {
        asks.push(ask("patch", g, resource, "tenant-a"));
    }
    asks.push(ask("patch", g, "gatewayclasses", "").named("blixt"));
    for (group, resource) in [
        ("", "services"),
        ("", "namespaces"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("blixt.dev", "addresspools"),
    ] {
        for verb in ["get", "list", "watch"] {
            asks.push(ask(verb, group, resource, ""));
        }
    }
    asks.push(ask("patch", "blixt.dev", "addresspools/status", "").named("pool"));
    asks.push(ask("create", "authentication.k8s.io", "tokenreviews", ""));
    asks.push(ask("create", "events.k8s.io", "events", "tenant-a"));
    asks.push(ask("patch", "events.k8s.io", "events", "tenant-a"));
    for crd in [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "tcproutes.gateway.networking.k8s.io",
        "udproutes.gateway.networking.k8s.io",
        "tlsroutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
        "addresspools.blixt.dev",
    ] {
        asks.push(
            ask(
                "get",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "",
            )
            .named(crd),
        );
    }
    asks.push(ask("create", "coordination.k8s.io", "leases", ns));
    for verb in ["get", "update", "patch"] {
        asks.push(ask(verb, "coordination.k8s.io", "leases", ns).named("blixt-controller"));
    }
    for verb in ["create", "patch", "delete"] {
        asks.push(ask(verb, "", "services", "tenant-a"));
    }
    asks.push(ask("update", g, "gateways/finalizers", "tenant-a"));

    check_matrix(&admin, &controller, true, &asks).await;
    install.cleanup(&admin).await;
}

#[tokio::test]
async fn controller_may_not_do_more() {
    let cluster = shared();
    let admin = cluster.client();
    let install = Install::new(cluster, &admin, true).await;
    let ns = install.ns();
    let controller = install.user(&install.controller_account());
    let g = GATEWAY_API;

    let mut asks = vec![
        // Gateway API objects belong to their owners: no spec writes, no create, no delete.
        ask("patch", g, "gateways", "tenant-a"),
        ask("update", g, "gateways", "tenant-a"),
        ask("create", g, "gateways", "tenant-a"),
        ask("delete", g, "gateways", "tenant-a"),
        ask("deletecollection", g, "gateways", "tenant-a"),
        ask("update", g, "gateways/status", "tenant-a"),
        ask("patch", g, "tcproutes", "tenant-a"),
        ask("delete", g, "tcproutes", "tenant-a"),
        ask("patch", g, "referencegrants", "tenant-a"),
        ask("patch", g, "referencegrants/status", "tenant-a"),
        ask("patch", g, "httproutes/status", "tenant-a"),
        ask("list", g, "httproutes", ""),
        ask("create", g, "gatewayclasses", ""),
        ask("delete", g, "gatewayclasses", "").named("blixt"),
        ask("update", g, "gatewayclasses", "").named("blixt"),
        // Nothing secret, nothing that runs code.
        ask("get", "", "secrets", ns),
        ask("list", "", "secrets", ""),
        ask("watch", "", "secrets", ns),
        ask("get", "", "configmaps", ns),
        ask("list", "", "pods", ""),
        ask("create", "", "pods", ns),
        ask("create", "", "pods/exec", ns),
        ask("create", "", "serviceaccounts/token", ns),
        ask("create", "apps", "deployments", ns),
        ask("patch", "apps", "daemonsets", ns),
        // Services: only what delegation needs, never their status or a full update.
        ask("update", "", "services", "tenant-a"),
        ask("patch", "", "services/status", "tenant-a"),
        ask("deletecollection", "", "services", "tenant-a"),
        ask("create", "", "endpoints", "tenant-a"),
        ask("patch", "discovery.k8s.io", "endpointslices", "tenant-a"),
        // Cluster objects it only reads.
        ask("patch", "", "nodes", ""),
        ask("patch", "", "nodes/status", ""),
        ask("delete", "", "namespaces", "").named("tenant-a"),
        ask("create", "blixt.dev", "addresspools", ""),
        ask("patch", "blixt.dev", "addresspools", "").named("pool"),
        ask("delete", "blixt.dev", "addresspools", "").named("pool"),
        // CRDs: only its own and the Gateway API's, read-only.
        ask(
            "list",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
        ),
        ask(
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
        )
        .named("httproutes.gateway.networking.k8s.io"),
        ask(
            "patch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
        )
        .named("gateways.gateway.networking.k8s.io"),
        // The Lease: only its own, only in its namespace, never deleted or listed.
        ask("create", "coordination.k8s.io", "leases", "kube-system"),
        ask("update", "coordination.k8s.io", "leases", ns).named("someone-else"),
        ask("get", "coordination.k8s.io", "leases", ns).named("someone-else"),
        ask("delete", "coordination.k8s.io", "leases", ns).named("blixt-controller"),
        ask("list", "coordination.k8s.io", "leases", ns),
        // Events only through events.k8s.io, and never read back.
        ask("create", "", "events", "tenant-a"),
        ask("list", "events.k8s.io", "events", ""),
        // No way to widen its own rights.
        ask("create", "authorization.k8s.io", "subjectaccessreviews", ""),
        ask("impersonate", "", "users", ""),
        ask("impersonate", "", "serviceaccounts", ns),
        ask("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
        ask("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
        ask(
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
        ),
        ask("patch", "rbac.authorization.k8s.io", "roles", ns),
        ask(
            "patch",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "",
        ),
        ask(
            "delete",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
            "",
        ),
    ];
    // The agent: nothing at all.
    let agent = install.user(&install.agent_account());
    check_matrix(&admin, &controller, false, &asks).await;
    asks.extend([
        ask("list", g, "gateways", ""),
        ask("get", "", "nodes", "").named("blixt-test-node"),
        ask("list", "discovery.k8s.io", "endpointslices", ""),
        ask("create", "authentication.k8s.io", "tokenreviews", ""),
        ask("create", "coordination.k8s.io", "leases", ns),
    ]);
    check_matrix(&admin, &agent, false, &asks).await;
    install.cleanup(&admin).await;
}

#[tokio::test]
async fn controller_without_delegation_cannot_write_services() {
    let cluster = shared();
    let admin = cluster.client();
    let install = Install::new(cluster, &admin, false).await;
    let controller = install.user(&install.controller_account());
    check_matrix(
        &admin,
        &controller,
        false,
        &[
            ask("create", "", "services", "tenant-a"),
            ask("patch", "", "services", "tenant-a"),
            ask("delete", "", "services", "tenant-a"),
        ],
    )
    .await;
    check_matrix(
        &admin,
        &controller,
        true,
        &[ask("watch", "", "services", "")],
    )
    .await;
    install.cleanup(&admin).await;
}

fn forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 403)
}

async fn gateway_api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    dynamic_api(
        client,
        &GroupVersionKind::gvk(GATEWAY_API, "v1", kind),
        namespace,
    )
    .await
    .unwrap_or_else(|e| panic!("{kind}: {e:#}"))
}

fn object(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

/// The calls the controller makes, made as its ServiceAccount, and the ones it must not make.
#[tokio::test]
async fn controller_calls_as_its_service_account() {
    let cluster = shared();
    let admin = cluster.client();
    let install = Install::new(cluster, &admin, true).await;
    let ns = install.ns();
    let class = install.fullname.clone();
    let as_controller = cluster.client_as_service_account(ns, &install.controller_account());
    let ssa = PatchParams::apply(CONTROLLER_FIELD_MANAGER).force();

    // Reading the world: every watched kind, cluster-wide (RBAC caches may lag the apply).
    for kind in [
        "GatewayClass",
        "Gateway",
        "TCPRoute",
        "UDPRoute",
        "TLSRoute",
        "ReferenceGrant",
    ] {
        let api = gateway_api(&as_controller, kind, None).await;
        eventually(&format!("list {kind}"), Duration::from_secs(10), || async {
            api.list(&ListParams::default().limit(1))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        // The request (and its authorization) happens here; the stream is not needed.
        let stream = api
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap_or_else(|e| panic!("watch {kind}: {e}"));
        drop(stream);
    }
    Api::<Service>::all(as_controller.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("list Services");

    // A Gateway of its class, created by its owner (the admin here).
    let gateways = gateway_api(&admin, "Gateway", Some(ns)).await;
    gateways
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": { "name": "gw", "namespace": ns },
                "spec": {
                    "gatewayClassName": class,
                    "listeners": [{ "name": "tcp", "protocol": "TCP", "port": 5000 }],
                },
            })),
        )
        .await
        .expect("creating a Gateway");
    let my_gateways = gateway_api(&as_controller, "Gateway", Some(ns)).await;
    let status = object(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "status": { "conditions": [{
            "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]},
    }));
    let written = my_gateways
        .patch_status("gw", &ssa, &Patch::Apply(&status))
        .await
        .expect("the controller writes Gateway status by server-side apply");
    assert_eq!(written.data["status"]["conditions"][0]["type"], "Accepted");
    let spec_change = object(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "spec": { "gatewayClassName": "someone-elses" },
    }));
    let err = my_gateways
        .patch("gw", &ssa, &Patch::Apply(&spec_change))
        .await
        .expect_err("changing a Gateway's spec");
    assert!(forbidden(&err), "{err}");
    let err = my_gateways
        .delete("gw", &DeleteParams::default())
        .await
        .expect_err("deleting a Gateway");
    assert!(forbidden(&err), "{err}");

    // The GatewayClass: status, the finalizer, and nothing else (the admission policy).
    let classes = gateway_api(&as_controller, "GatewayClass", None).await;
    let finalizer = object(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "finalizers": ["gateway-exists-finalizer.gateway.networking.k8s.io"] },
    }));
    let with_finalizer = classes
        .patch(&class, &ssa, &Patch::Apply(&finalizer))
        .await
        .expect("the controller adds its finalizer");
    assert_eq!(
        with_finalizer.metadata.finalizers.as_deref(),
        Some(&["gateway-exists-finalizer.gateway.networking.k8s.io".to_owned()][..])
    );
    let class_status = object(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "status": { "conditions": [{
            "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]},
    }));
    classes
        .patch_status(&class, &ssa, &Patch::Apply(&class_status))
        .await
        .expect("the controller writes GatewayClass status");
    let description =
        serde_json::json!({ "spec": { "description": "rewritten by the controller" } });
    eventually(
        "the admission policy refuses GatewayClass spec changes",
        Duration::from_secs(20),
        || async {
            // A dry run: admission runs, nothing changes should the policy not be active yet.
            let params = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            match classes
                .patch(&class, &params, &Patch::Merge(&description))
                .await
            {
                Err(e) if forbidden(&e) && e.to_string().contains("only the finalizers") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Removing the finalizer (when the last Gateway goes) is allowed too.
    let none = serde_json::json!({ "metadata": { "finalizers": null } });
    classes
        .patch(&class, &PatchParams::default(), &Patch::Merge(&none))
        .await
        .expect("the controller removes its finalizer");

    // Leader election: its own Lease in its own namespace.
    let leases: Api<Lease> = Api::namespaced(as_controller.clone(), ns);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "blixt-controller" },
        "spec": { "holderIdentity": "blixt-controller-0", "leaseDurationSeconds": 15 },
    });
    leases
        .patch("blixt-controller", &ssa, &Patch::Apply(&lease))
        .await
        .expect("the controller creates its Lease (apply creates: create + patch)");
    let mut current = leases.get("blixt-controller").await.expect("get the Lease");
    current.spec.get_or_insert_default().holder_identity = Some("blixt-controller-1".into());
    leases
        .replace("blixt-controller", &PostParams::default(), &current)
        .await
        .expect("the controller renews or takes over its Lease (update)");
    let other = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "someone-elses-lock" },
        "spec": { "holderIdentity": "blixt-controller-0" },
    });
    let err = leases
        .patch("someone-elses-lock", &ssa, &Patch::Apply(&other))
        .await
        .expect_err("another Lease");
    assert!(forbidden(&err), "{err}");
    let err = Api::<Lease>::namespaced(as_controller.clone(), "kube-system")
        .get("kube-controller-manager")
        .await
        .expect_err("a Lease elsewhere");
    assert!(forbidden(&err), "{err}");

    // Authenticating an agent: a projected token for audience blixt-controller passes
    // TokenReview; the same token is worthless against the API server itself.
    let agent_token = cluster
        .service_account_token(ns, &install.agent_account(), &["blixt-controller"])
        .await;
    let review: TokenReview = serde_json::from_value(serde_json::json!({
        "spec": { "token": agent_token, "audiences": ["blixt-controller"] },
    }))
    .expect("a TokenReview");
    let reviewed = Api::<TokenReview>::all(as_controller.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the controller creates TokenReviews")
        .status
        .expect("a status");
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(
        reviewed.user.and_then(|u| u.username).as_deref(),
        Some(format!("system:serviceaccount:{ns}:{}", install.agent_account()).as_str())
    );
    let as_agent_token = cluster.client_with_token(&agent_token);
    let err = Api::<Pod>::namespaced(as_agent_token, ns)
        .list(&ListParams::default())
        .await
        .expect_err("the agent's controller token at the API server");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "the API server does not accept the controller's audience: {err}"
    );

    // No secrets, not even its own TLS key through the API.
    let err = Api::<Secret>::namespaced(as_controller.clone(), ns)
        .get(&format!("{}-controller-tls", install.fullname))
        .await
        .expect_err("reading a Secret");
    assert!(forbidden(&err), "{err}");

    // Events about what it reconciles.
    let events = dynamic_api(
        &as_controller,
        &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        Some(ns),
    )
    .await
    .expect("events API");
    events
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": { "name": "gw.blixt-test", "namespace": ns },
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "reportingController": "blixt.dev/gateway-controller",
                "reportingInstance": "blixt-controller-0",
                "action": "Reconcile",
                "reason": "Programmed",
                "type": "Normal",
                "note": "written by the deploy tests",
                "regarding": {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway",
                    "namespace": ns,
                    "name": "gw",
                },
            })),
        )
        .await
        .expect("the controller emits an Event");

    // Address delegation: its own LoadBalancer Services, nothing else.
    let services: Api<Service> = Api::namespaced(as_controller.clone(), ns);
    let delegated = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "gw-blixt",
            "labels": { "gateway.networking.k8s.io/gateway-name": "gw" },
        },
        "spec": { "type": "LoadBalancer", "ports": [{ "name": "tcp", "port": 5000 }] },
    });
    services
        .patch("gw-blixt", &ssa, &Patch::Apply(&delegated))
        .await
        .expect("the controller applies a delegated LoadBalancer Service");
    let plain = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "not-blixts" },
        "spec": { "ports": [{ "port": 80 }] },
    });
    eventually(
        "the admission policy refuses unlabelled Services",
        Duration::from_secs(20),
        || async {
            let params = PatchParams {
                dry_run: true,
                ..ssa.clone()
            };
            match services
                .patch("not-blixts", &params, &Patch::Apply(&plain))
                .await
            {
                Err(e) if forbidden(&e) && e.to_string().contains("LoadBalancer") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Someone else's Service, even a LoadBalancer one, is off limits.
    Api::<Service>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "tenant-lb" },
                "spec": { "type": "LoadBalancer", "ports": [{ "port": 443 }] },
            }))
            .expect("a Service"),
        )
        .await
        .expect("the admin creates a Service");
    let err = services
        .delete("tenant-lb", &DeleteParams::default())
        .await
        .expect_err("deleting a Service it does not own");
    assert!(forbidden(&err), "{err}");
    services
        .delete("gw-blixt", &DeleteParams::default())
        .await
        .expect("the controller deletes its delegated Service");

    // Its AddressPools: read them, write their status, never their spec.
    let pools_gvk = GroupVersionKind::gvk("blixt.dev", "v1alpha1", "AddressPool");
    let pool_name = format!("{}-pool", install.fullname);
    dynamic_api(&admin, &pools_gvk, None)
        .await
        .expect("AddressPool API")
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "apiVersion": "blixt.dev/v1alpha1",
                "kind": "AddressPool",
                "metadata": { "name": pool_name },
                "spec": { "addresses": ["192.0.2.64/28"] },
            })),
        )
        .await
        .expect("the admin creates a pool");
    let pools = dynamic_api(&as_controller, &pools_gvk, None)
        .await
        .expect("AddressPool API");
    pools
        .list(&ListParams::default())
        .await
        .expect("the controller lists pools");
    pools
        .patch_status(
            &pool_name,
            &ssa,
            &Patch::Apply(object(serde_json::json!({
                "apiVersion": "blixt.dev/v1alpha1",
                "kind": "AddressPool",
                "status": { "conditions": [{
                    "type": "Accepted", "status": "True", "reason": "Accepted",
                    "message": "16 addresses", "lastTransitionTime": "2026-01-01T00:00:00Z",
                }]},
            }))),
        )
        .await
        .expect("the controller writes pool status");
    let err = pools
        .patch(
            &pool_name,
            &ssa,
            &Patch::Apply(object(serde_json::json!({
                "apiVersion": "blixt.dev/v1alpha1",
                "kind": "AddressPool",
                "spec": { "addresses": ["0.0.0.0/0"] },
            }))),
        )
        .await
        .expect_err("changing a pool");
    assert!(forbidden(&err), "{err}");
    pools
        .delete(&pool_name, &DeleteParams::default())
        .await
        .expect_err("deleting a pool");
    dynamic_api(&admin, &pools_gvk, None)
        .await
        .expect("AddressPool API")
        .delete(&pool_name, &DeleteParams::default())
        .await
        .expect("the admin deletes the pool");

    // The CRD startup check: its CRDs by name, and no others.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(as_controller.clone());
    crds.get("tcproutes.gateway.networking.k8s.io")
        .await
        .expect("the controller reads the TCPRoute CRD");
    let err = crds
        .get("httproutes.gateway.networking.k8s.io")
        .await
        .expect_err("a CRD it does not use");
    assert!(forbidden(&err), "{err}");

    install.cleanup(&admin).await;
}
