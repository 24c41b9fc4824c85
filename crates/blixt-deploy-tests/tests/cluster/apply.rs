//! Rendered manifests applied to the API server: every object of the chart and of the
//! kustomize trees is accepted (validation, defaulting, admission), and the pod templates pass
//! the Pod Security level they claim.

use blixt_deploy_tests::{
    apply_all, apply_one, delete_cluster_scoped, find, key, kind, kustomize_build, kustomize_dir,
    unique_fullname, HelmRender, Mode,
};
use blixt_k8s_harness::shared;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::Client;

/// The chart with every optional object that can exist on this API server (no Prometheus
/// Operator or cert-manager CRDs here), named after the test's namespace.
fn full_chart(namespace: &str) -> HelmRender {
    let fullname = unique_fullname(namespace);
    HelmRender::new(namespace)
        .set("fullnameOverride", &fullname)
        .set("gatewayClass.name", &fullname)
        .set("addressPool.create", "true")
        .set("addressPool.name", &fullname)
        .set("addressPool.addresses", "{192.0.2.0/28,2001:db8::/120}")
        .set("agent.interfaces", "{eth0}")
}

#[tokio::test]
async fn chart_applies_to_the_api_server() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    let fullname = unique_fullname(ns.name());
    let objects = full_chart(ns.name()).render();

    // A dry run of everything first (admission and validation without storing), then for real.
    apply_all(&client, &objects, Mode::DryRun)
        .await
        .unwrap_or_else(|e| panic!("dry run: {e:#}"));
    let applied = apply_all(&client, &objects, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(applied.len(), objects.len());

    // What was stored is what was rendered (spot checks on fields the API server could have
    // dropped or defaulted away).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deployment = deployments
        .get(&format!("{fullname}-controller"))
        .await
        .expect("the controller Deployment is stored");
    assert_eq!(deployment.spec.replicas, Some(2));
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns.name());
    let daemonset = daemonsets
        .get(&format!("{fullname}-agent"))
        .await
        .expect("the agent DaemonSet is stored");
    let pod = daemonset.spec.template.spec.expect("pod spec");
    let caps = pod.containers[0]
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .expect("capabilities");
    assert_eq!(
        caps.add.unwrap_or_default(),
        ["BPF", "NET_ADMIN", "PERFMON", "NET_RAW"]
    );
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let service = services
        .get(&format!("{fullname}-controller"))
        .await
        .expect("the controller Service");
    let ports: Vec<i32> = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(
        ports,
        [9443],
        "gRPC only while the controller has no metrics endpoint"
    );

    // The class and the pool are there, the class pointing at the pool.
    let class = find(&applied, "GatewayClass", &fullname);
    assert_eq!(
        class.data["spec"]["parametersRef"]["name"],
        fullname.as_str()
    );
    let pool = find(&applied, "AddressPool", &fullname);
    assert_eq!(
        pool.data["spec"]["delegateToLoadBalancer"], false,
        "defaulted"
    );

    // Applying again changes nothing (the chart is stable under server-side apply). The
    // second apply may still settle defaults (the Gateway API CRD defaults a GatewayClass's
    // status on its first update), so compare the second and the third.
    let second = apply_all(&client, &objects, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("second apply: {e:#}"));
    let third = apply_all(&client, &objects, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("third apply: {e:#}"));
    for (first, second) in second.iter().zip(&third) {
        assert_eq!(
            first.metadata.resource_version,
            second.metadata.resource_version,
            "{} changed on a second apply",
            key(first)
        );
    }

    delete_cluster_scoped(&client, &objects).await;
}

#[tokio::test]
async fn chart_options_apply() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    for (what, render) in [
        (
            "bpffs init container, extra capability, delegation off, no policy",
            full_chart(ns.name())
                .set("agent.bpffs.mountIfMissing", "true")
                .set("agent.extraCapabilities", "{SYS_RESOURCE}")
                .set("controller.loadBalancerDelegation", "false")
                .set("controller.admissionPolicy.enabled", "false"),
        ),
        (
            "privileged agent, one controller, delegating pool, existing secret",
            full_chart(ns.name())
                .set("agent.privileged", "true")
                .set("controller.replicas", "1")
                .set("addressPool.addresses", "null")
                .set("addressPool.delegateToLoadBalancer", "true")
                .set("tls.mode", "existingSecret"),
        ),
    ] {
        let objects = render.render();
        apply_all(&client, &objects, Mode::DryRun)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    }
}

/// Why the agent mounts bpffs with HostToContainer propagation: the API server refuses
/// Bidirectional in a container that is not privileged, so the chart makes only the opt-in
/// mount init container privileged.
#[tokio::test]
async fn bidirectional_propagation_needs_a_privileged_container() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    let objects = full_chart(ns.name()).render();
    let name = format!("{}-agent", unique_fullname(ns.name()));
    let mut daemonset = find(&objects, "DaemonSet", &name).clone();
    daemonset.data["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
        ["mountPropagation"] = "Bidirectional".into();
    let err = apply_one(&client, &daemonset, true)
        .await
        .expect_err("Bidirectional in an unprivileged container");
    let message = format!("{err:#}");
    assert!(message.contains("mountPropagation"), "{message}");
    assert!(message.contains("privileged"), "{message}");
}

/// The controller's pod meets the "restricted" Pod Security Standard; the agent's pod needs
/// "privileged" (host network, hostPath, capabilities beyond NET_BIND_SERVICE), which is why
/// the kustomize base labels its namespace so.
#[tokio::test]
async fn pod_security_levels() {
    let cluster = shared();
    let client = cluster.client();
    let restricted = cluster.temp_namespace().await;
    label_pod_security(&client, restricted.name(), "restricted").await;
    let privileged = cluster.temp_namespace().await;
    label_pod_security(&client, privileged.name(), "privileged").await;

    for ns in [restricted.name(), privileged.name()] {
        let objects = full_chart(ns).render();
        // The ServiceAccounts must exist for Pods that name them.
        let accounts: Vec<DynamicObject> = objects
            .iter()
            .filter(|o| kind(o) == "ServiceAccount")
            .cloned()
            .collect();
        apply_all(&client, &accounts, Mode::Real)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    let controller = |ns: &str| {
        let objects = full_chart(ns).render();
        let name = format!("{}-controller", unique_fullname(ns));
        let deployment: Deployment = blixt_deploy_tests::typed(find(&objects, "Deployment", &name));
        pod_from_template(ns, &name, deployment.spec.template)
    };
    let agent = |ns: &str| {
        let objects = full_chart(ns).render();
        let name = format!("{}-agent", unique_fullname(ns));
        let daemonset: DaemonSet = blixt_deploy_tests::typed(find(&objects, "DaemonSet", &name));
        pod_from_template(ns, &name, daemonset.spec.template)
    };

    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let create = |pod: Pod| {
        let client = client.clone();
        let dry_run = dry_run.clone();
        async move {
            let ns = pod.metadata.namespace.clone().expect("namespace");
            Api::<Pod>::namespaced(client, &ns)
                .create(&dry_run, &pod)
                .await
        }
    };

    create(controller(restricted.name()))
        .await
        .expect("the controller's pod is admitted under the restricted level");
    let err = create(agent(restricted.name()))
        .await
        .expect_err("the agent's pod is not restricted");
    let message = err.to_string();
    for violation in ["hostNetwork", "hostPath", "capabilities"] {
        assert!(message.contains(violation), "{violation}: {message}");
    }
    create(agent(privileged.name()))
        .await
        .expect("the agent's pod is admitted under the privileged level");
}

fn pod_from_template(
    namespace: &str,
    name: &str,
    template: k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-pod")),
            namespace: Some(namespace.to_owned()),
            labels: template.metadata.and_then(|m| m.labels),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        ..Pod::default()
    }
}

async fn label_pod_security(client: &Client, namespace: &str, level: &str) {
    let patch = serde_json::json!({
        "metadata": { "labels": { "pod-security.kubernetes.io/enforce": level } }
    });
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling {namespace}: {e}"));
}

/// The kustomize base (namespace blixt-system) and the example overlay (namespace blixt-lb),
/// one after the other: they share cluster-scoped names, so one test does both.
#[tokio::test]
async fn kustomize_base_and_example_overlay_apply() {
    let cluster = shared();
    let client = cluster.client();
    let base = kustomize_build(&kustomize_dir().join("base"));
    let overlay = kustomize_build(&kustomize_dir().join("overlays/example"));

    apply_all(&client, &base, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("base: {e:#}"));
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let subject_namespace = || async {
        let binding = bindings.get("blixt-controller").await.expect("binding");
        binding.subjects.unwrap_or_default()[0].namespace.clone()
    };
    assert_eq!(subject_namespace().await.as_deref(), Some("blixt-system"));

    apply_all(&client, &overlay, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("overlay: {e:#}"));
    assert_eq!(subject_namespace().await.as_deref(), Some("blixt-lb"));
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "blixt-lb");
    let agent = daemonsets.get("blixt-agent").await.expect("the agent");
    assert_eq!(
        agent.spec.template.spec.expect("pod").containers[0]
            .image
            .as_deref(),
        Some("registry.example.com/blixt:0.1.0")
    );

    // Clean up: both namespaces and what is cluster-scoped.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["blixt-system", "blixt-lb"] {
        let _ = namespaces.delete(ns, &DeleteParams::background()).await;
    }
    delete_cluster_scoped(&client, &overlay).await;
}

/// `helm install` and `helm upgrade` against the API server (the chart as users install it):
/// the upgrade keeps the generated CA and serving certificate (agents keep trusting the
/// controller), and `helm uninstall` removes everything but the CRD.
#[tokio::test]
async fn helm_install_upgrade_uninstall() {
    let cluster = shared();
    let ns = cluster.temp_namespace().await;
    let client = cluster.client();
    let fullname = unique_fullname(ns.name());
    let helm_home = tempfile::tempdir().expect("a temporary directory");
    let helm = |args: &[&str]| {
        let mut command = std::process::Command::new(blixt_deploy_tests::tools::helm());
        command
            .args(args)
            .args(["--namespace", ns.name()])
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .env("HELM_CONFIG_HOME", helm_home.path().join("config"))
            .env("HELM_CACHE_HOME", helm_home.path().join("cache"))
            .env("HELM_DATA_HOME", helm_home.path().join("data"));
        blixt_deploy_tests::run(&mut command).unwrap_or_else(|e| panic!("{e:#}"))
    };
    let chart = blixt_deploy_tests::chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    let fullname_set = format!("fullnameOverride={fullname}");
    let class_set = format!("gatewayClass.name={fullname}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), ns.name());
    let tls = format!("{fullname}-controller-tls");

    let notes = helm(&[
        "install",
        "blixt",
        chart,
        "--set",
        &fullname_set,
        "--set",
        &class_set,
    ]);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    let first = secrets.get(&tls).await.expect("the generated TLS Secret");

    helm(&[
        "upgrade",
        "blixt",
        chart,
        "--set",
        &fullname_set,
        "--set",
        &class_set,
        "--set",
        "controller.replicas=3",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let controller = deployments
        .get(&format!("{fullname}-controller"))
        .await
        .expect("the controller");
    assert_eq!(controller.spec.replicas, Some(3), "the upgrade applied");
    let second = secrets.get(&tls).await.expect("the TLS Secret");
    assert_eq!(
        first.data, second.data,
        "an upgrade must keep the CA and the serving certificate"
    );

    helm(&["uninstall", "blixt"]);
    assert!(deployments
        .get_opt(&format!("{fullname}-controller"))
        .await
        .expect("get")
        .is_none());
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    assert!(roles
        .get_opt(&format!("{fullname}-controller"))
        .await
        .expect("get")
        .is_none());
    // Helm never deletes what it installed from crds/ (AddressPools would go with it).
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    assert!(crds
        .get_opt("addresspools.blixt.dev")
        .await
        .expect("get")
        .is_some());
}
