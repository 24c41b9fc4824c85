//! The chart and the kustomize trees as rendered, without an API server: what objects exist
//! for which values, the shape of the pod specs (privileges, probes, contract flags), and that
//! the kustomize base is exactly the chart. Needs helm and kustomize from deploy/tools.sh.

use std::collections::BTreeSet;

use blixt_deploy_tests::{
    by_key, find, key, kind, kustomize_build, kustomize_dir, of_kind, run, tools, typed,
    without_helm_labels, HelmRender,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::DynamicObject;

const NS: &str = "blixt-system";

fn default_render() -> Vec<DynamicObject> {
    HelmRender::new(NS).render()
}

fn kinds_and_names(objects: &[DynamicObject]) -> BTreeSet<String> {
    objects.iter().map(key).collect()
}

fn pod_spec_of_deployment(objects: &[DynamicObject], name: &str) -> PodSpec {
    let deployment: Deployment = typed(find(objects, "Deployment", name));
    deployment.spec.template.spec.expect("pod spec")
}

fn pod_spec_of_daemonset(objects: &[DynamicObject], name: &str) -> PodSpec {
    let daemonset: DaemonSet = typed(find(objects, "DaemonSet", name));
    daemonset.spec.template.spec.expect("pod spec")
}

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container");
    &spec.containers[0]
}

fn args(container: &Container) -> Vec<&str> {
    container
        .args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect()
}

#[test]
fn helm_lint_is_clean() {
    let out = run(std::process::Command::new(tools::helm())
        .args(["lint", "--strict"])
        .arg(blixt_deploy_tests::chart_dir()))
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_values_render_the_expected_objects() {
    let objects = default_render();
    let expected: BTreeSet<String> = [
        "CustomResourceDefinition/addresspools.blixt.dev",
        "ServiceAccount/blixt-system/blixt-controller",
        "ServiceAccount/blixt-system/blixt-agent",
        "Secret/blixt-system/blixt-controller-tls",
        "ClusterRole/blixt-controller",
        "ClusterRoleBinding/blixt-controller",
        "Role/blixt-system/blixt-controller-leader-election",
        "RoleBinding/blixt-system/blixt-controller-leader-election",
        "Service/blixt-system/blixt-controller",
        "PodDisruptionBudget/blixt-system/blixt-controller",
        "Deployment/blixt-system/blixt-controller",
        "DaemonSet/blixt-system/blixt-agent",
        "GatewayClass/blixt",
        "ValidatingAdmissionPolicy/blixt-controller-writes",
        "ValidatingAdmissionPolicyBinding/blixt-controller-writes",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds_and_names(&objects), expected);

    let class = find(&objects, "GatewayClass", "blixt");
    assert_eq!(
        class.data["spec"]["controllerName"],
        "blixt.dev/gateway-controller"
    );
    assert!(
        class.data["spec"].get("parametersRef").is_none(),
        "no pool by default"
    );

    // Every object says it is Blixt's; the agent and controller objects name their component.
    for object in &objects {
        let labels = object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("blixt"),
            "{}",
            key(object)
        );
    }
}

#[test]
fn controller_runs_unprivileged_with_the_contract_flags() {
    let objects = default_render();
    let deployment: Deployment = typed(find(&objects, "Deployment", "blixt-controller"));
    assert_eq!(deployment.spec.replicas, Some(2));
    let spec = pod_spec_of_deployment(&objects, "blixt-controller");
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("blixt-controller")
    );
    assert_ne!(spec.host_network, Some(true));

    let pod_security = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );

    let container = only_container(&spec);
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_ne!(security.privileged, Some(true));
    let caps = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(caps.add.is_none(), "the controller needs no capability");

    // The flags of `blixt controller` (crates/blixt/src/controller_cmd.rs).
    assert_eq!(
        args(container),
        [
            "controller",
            "--namespace=$(POD_NAMESPACE)",
            "--leader-election-id=blixt-controller",
            "--controller-name=blixt.dev/gateway-controller",
            "--grpc-address=0.0.0.0:9443",
            "--tls-cert=/var/run/secrets/blixt/tls/tls.crt",
            "--tls-key=/var/run/secrets/blixt/tls/tls.key",
            "--agent-user=system:serviceaccount:$(POD_NAMESPACE):blixt-agent",
        ]
    );
    // No metrics endpoint yet: the probes check the gRPC port.
    for probe in [&container.liveness_probe, &container.readiness_probe] {
        let tcp = probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref())
            .expect("TCP probe");
        assert_eq!(
            tcp.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("grpc".into())
        );
    }
    let ports: BTreeSet<(String, i32)> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(ports, [("grpc".to_owned(), 9443)].into());
    let env: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains("POD_NAME"), "the Lease identity: {env:?}");

    // With metrics enabled (once the controller has them): the flag, the port, HTTP probes
    // of your own, and a ServiceMonitor.
    let objects = HelmRender::new(NS)
        .set("controller.metrics.enabled", "true")
        .set("serviceMonitor.enabled", "true")
        .render();
    let spec = pod_spec_of_deployment(&objects, "blixt-controller");
    let container = only_container(&spec);
    assert!(args(container).contains(&"--metrics-address=0.0.0.0:9464"));
    assert!(container
        .ports
        .iter()
        .flatten()
        .any(|p| p.name.as_deref() == Some("metrics")));
    find(&objects, "ServiceMonitor", "blixt-controller");
    // TLS of the gRPC stream, and a writable /tmp on the read-only root.
    let mounts: BTreeSet<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/tmp", "/var/run/secrets/blixt/tls"].into());
}

#[test]
fn agent_has_exactly_the_capabilities_it_needs() {
    let objects = default_render();
    let spec = pod_spec_of_daemonset(&objects, "blixt-agent");
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "the agent never calls the API server"
    );
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(
        spec.init_containers.is_none(),
        "no privileged init container by default"
    );
    let tolerations = spec.tolerations.as_deref().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint: {tolerations:?}"
    );

    let container = only_container(&spec);
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_ne!(security.privileged, Some(true));
    assert_eq!(security.run_as_user, Some(0));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let caps = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON", "NET_RAW"].into());

    // The flags of `blixt agent` (crates/blixt/src/agent_cmd.rs).
    assert_eq!(
        args(container),
        [
            "agent",
            "--controller=https://blixt-controller.$(POD_NAMESPACE).svc:9443",
            "--node-name=$(NODE_NAME)",
            "--controller-ca=/var/run/secrets/blixt/ca.crt",
            "--token-file=/var/run/secrets/blixt/token",
            "--pin-dir=/sys/fs/bpf/blixt",
            "--metrics-address=0.0.0.0:9464",
            "--attach=auto",
            "--snat-v4=$(HOST_IP)",
            "--interface=eth0",
        ]
    );
    let env: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    for name in [
        "NODE_NAME",
        "POD_NAMESPACE",
        "HOST_IP",
        "BLIXT_PROC_SYS_NET",
    ] {
        assert!(env.contains(name), "{name} in {env:?}");
    }

    // bpffs without Bidirectional propagation (which needs a privileged container), the
    // host's /proc/sys/net outside /proc, the credentials read-only.
    let mounts = container.volume_mounts.as_deref().expect("mounts");
    let bpffs = mounts
        .iter()
        .find(|m| m.mount_path == "/sys/fs/bpf")
        .expect("bpffs");
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));
    let sysctl = mounts
        .iter()
        .find(|m| m.name == "proc-sys-net")
        .expect("proc-sys-net");
    assert_eq!(sysctl.mount_path, "/host/proc/sys/net");
    let credentials = mounts
        .iter()
        .find(|m| m.mount_path == "/var/run/secrets/blixt")
        .expect("credentials");
    assert_eq!(credentials.read_only, Some(true));

    // The projected token only the controller accepts, and the CA of its certificate.
    let volumes = spec.volumes.as_deref().expect("volumes");
    let projected = volumes
        .iter()
        .find(|v| v.name == "credentials")
        .and_then(|v| v.projected.as_ref())
        .expect("projected credentials");
    let sources = projected.sources.as_deref().expect("sources");
    let token = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .expect("serviceAccountToken");
    assert_eq!(token.audience.as_deref(), Some("blixt-controller"));
    assert_eq!(token.path, "token");
    let ca = sources
        .iter()
        .find_map(|s| s.secret.as_ref())
        .expect("CA secret");
    assert_eq!(ca.name, "blixt-controller-tls");
    let host_paths: BTreeSet<&str> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref())
        .map(|h| h.path.as_str())
        .collect();
    assert_eq!(host_paths, ["/proc/sys/net", "/sys/fs/bpf"].into());
}

#[test]
fn agent_options_render_as_documented() {
    let objects = HelmRender::new(NS)
        .set("agent.interfaces", "{eth0,eth1}")
        .set("agent.extraCapabilities", "{SYS_RESOURCE}")
        .set("agent.bpffs.mountIfMissing", "true")
        .set("agent.attach", "tc")
        .render();
    let spec = pod_spec_of_daemonset(&objects, "blixt-agent");
    let container = only_container(&spec);
    let a = args(container);
    assert!(
        a.ends_with(&["--interface=eth0", "--interface=eth1"]),
        "{a:?}"
    );
    assert!(a.contains(&"--attach=tc"), "{a:?}");
    let added: BTreeSet<String> = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(added.contains("SYS_RESOURCE"), "{added:?}");

    // Only the short-lived mount container is privileged, with Bidirectional propagation.
    let init = spec.init_containers.as_deref().expect("init container");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "mount-bpffs");
    assert_eq!(
        init[0].security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let mount = &init[0].volume_mounts.as_deref().expect("mounts")[0];
    assert_eq!(mount.mount_propagation.as_deref(), Some("Bidirectional"));
    assert_ne!(
        container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged),
        Some(true)
    );

    // IPv6-primary nodes.
    let objects = HelmRender::new(NS)
        .set("agent.snatV4FromHostIP", "false")
        .set("agent.snatV6FromHostIP", "true")
        .render();
    let a = args(only_container(&pod_spec_of_daemonset(
        &objects,
        "blixt-agent",
    )))
    .join(" ");
    assert!(
        a.contains("--snat-v6=$(HOST_IP)") && !a.contains("--snat-v4"),
        "{a}"
    );

    // The escape hatch: privileged instead of a capability list.
    let objects = HelmRender::new(NS).set("agent.privileged", "true").render();
    let spec = pod_spec_of_daemonset(&objects, "blixt-agent");
    let security = only_container(&spec)
        .security_context
        .clone()
        .expect("securityContext");
    assert_eq!(security.privileged, Some(true));
    assert!(security.capabilities.is_none());
}

#[test]
fn optional_objects_follow_the_values() {
    // Monitoring: a ServiceMonitor per component and a headless Service for the agents.
    let objects = HelmRender::new(NS)
        .set("serviceMonitor.enabled", "true")
        .set("serviceMonitor.labels.release", "prometheus")
        .render();
    let monitors = of_kind(&objects, "ServiceMonitor");
    // The agents only: the controller has no metrics endpoint unless controller.metrics.
    assert_eq!(monitors.len(), 1, "{:?}", kinds_and_names(&objects));
    for monitor in &monitors {
        assert_eq!(
            monitor.types.as_ref().unwrap().api_version,
            "monitoring.coreos.com/v1"
        );
        assert_eq!(
            monitor.metadata.labels.as_ref().unwrap()["release"],
            "prometheus"
        );
        assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "metrics");
    }
    let headless = find(&objects, "Service", "blixt-agent-metrics");
    assert_eq!(headless.data["spec"]["clusterIP"], "None");

    // An address pool, referenced by the class.
    let objects = HelmRender::new(NS)
        .set("addressPool.create", "true")
        .set(
            "addressPool.addresses",
            "{192.0.2.0/28,192.0.2.100-192.0.2.120}",
        )
        .render();
    let pool = find(&objects, "AddressPool", "blixt-default");
    assert_eq!(
        pool.data["spec"]["addresses"],
        serde_json::json!(["192.0.2.0/28", "192.0.2.100-192.0.2.120"])
    );
    assert_eq!(
        find(&objects, "GatewayClass", "blixt").data["spec"]["parametersRef"],
        serde_json::json!({ "group": "blixt.dev", "kind": "AddressPool", "name": "blixt-default" })
    );
    // A pool with nothing in it is refused at render time.
    let err = HelmRender::new(NS)
        .set("addressPool.create", "true")
        .try_render()
        .expect_err("an empty pool");
    assert!(
        format!("{err:#}").contains("addressPool.addresses"),
        "{err:#}"
    );

    // No class, no policy, no delegation rights, no PDB for one replica.
    let objects = HelmRender::new(NS)
        .set("gatewayClass.create", "false")
        .set("controller.admissionPolicy.enabled", "false")
        .set("controller.loadBalancerDelegation", "false")
        .set("controller.replicas", "1")
        .render();
    assert!(of_kind(&objects, "GatewayClass").is_empty());
    assert!(of_kind(&objects, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());
    let role: ClusterRole = typed(find(&objects, "ClusterRole", "blixt-controller"));
    for rule in role.rules.iter().flatten() {
        let writes_services = rule.api_groups.as_deref() == Some(&[String::new()][..])
            && rule.resources.iter().flatten().any(|r| r == "services")
            && rule
                .verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch");
        assert!(!writes_services, "{rule:?}");
    }

    // TLS from cert-manager or from a Secret of your own.
    let objects = HelmRender::new(NS)
        .set("tls.mode", "certManager")
        .set("tls.certManager.issuerRef.name", "blixt-ca")
        .set("tls.certManager.issuerRef.kind", "Issuer")
        .render();
    assert!(of_kind(&objects, "Secret").is_empty());
    let certificate = find(&objects, "Certificate", "blixt-controller");
    assert_eq!(
        certificate.data["spec"]["secretName"],
        "blixt-controller-tls"
    );
    assert!(certificate.data["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("blixt-controller.blixt-system.svc")));
    let err = HelmRender::new(NS)
        .set("tls.mode", "certManager")
        .try_render()
        .expect_err("certManager without an issuer");
    assert!(format!("{err:#}").contains("issuerRef"), "{err:#}");
    let objects = HelmRender::new(NS)
        .set("tls.mode", "existingSecret")
        .render();
    assert!(of_kind(&objects, "Secret").is_empty());
    assert!(of_kind(&objects, "Certificate").is_empty());
}

#[test]
fn values_schema_rejects_mistakes() {
    for (key, value, why) in [
        ("tls.mode", "selfsigned", "unknown TLS mode"),
        ("agent.capabilities", "{CAP_BPF}", "CAP_ prefix"),
        ("agent.procSysNet.mountPath", "/proc/sys/net", "under /proc"),
        ("controller.replicas", "0", "no controller"),
        ("controller.unknownKey", "1", "typo in a key"),
        ("image.digest", "latest", "not a digest"),
        ("agent.interfaces", "{}", "no interface"),
    ] {
        match HelmRender::new(NS).set(key, value).try_render() {
            Ok(yaml) => panic!("{why}: --set {key}={value} rendered:\n{yaml}"),
            Err(e) => assert!(
                format!("{e:#}").contains("don't meet the specifications of the schema"),
                "{why}: --set {key}={value} failed, but not by the values schema: {e:#}"
            ),
        }
    }
}

#[test]
fn generated_certificate_serves_the_controller_service_name() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;

    let objects = default_render();
    let secret: Secret = typed(find(&objects, "Secret", "blixt-controller-tls"));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("data");
    let pem = |key: &str| {
        data.get(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .0
            .clone()
    };

    // A TLS handshake in memory: the controller serves tls.crt/tls.key, an agent trusts only
    // ca.crt and connects by the Service's name, as `--controller` spells it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(&pem("tls.crt"))
        .collect::<Result<Vec<_>, _>>()
        .expect("tls.crt is PEM");
    let key = PrivateKeyDer::from_pem_slice(&pem("tls.key")).expect("tls.key is PEM");
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("tls.crt matches tls.key");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem("ca.crt")) {
        roots
            .add(ca.expect("ca.crt is PEM"))
            .expect("a CA certificate");
    }
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client_config = Arc::new(client_config);
    let server_config = Arc::new(server_config);

    for name in [
        "blixt-controller",
        "blixt-controller.blixt-system",
        "blixt-controller.blixt-system.svc",
        "blixt-controller.blixt-system.svc.cluster.local",
    ] {
        handshake(&client_config, &server_config, name)
            .unwrap_or_else(|e| panic!("an agent connecting to {name}: {e}"));
    }
    let err = handshake(&client_config, &server_config, "blixt-controller.other.svc")
        .expect_err("another namespace's name");
    assert!(err.contains("NotValidForName"), "{err}");

    fn handshake(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
        name: &str,
    ) -> Result<(), String> {
        let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let mut client =
            rustls::ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
        let mut server =
            rustls::ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
        for _ in 0..10 {
            let mut buffer = Vec::new();
            client.write_tls(&mut buffer).map_err(|e| e.to_string())?;
            server
                .read_tls(&mut buffer.as_slice())
                .map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
            let mut buffer = Vec::new();
            server.write_tls(&mut buffer).map_err(|e| e.to_string())?;
            client
                .read_tls(&mut buffer.as_slice())
                .map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| format!("{e:?}"))?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        Err("the handshake did not finish".into())
    }
}

#[test]
fn kustomize_base_is_the_chart() {
    // generate.sh renders the chart with chart-values.yaml and drops Helm's own labels; the
    // base must be exactly that plus its Namespace, or someone edited one and not the other.
    let chart = HelmRender::new(NS)
        .values(kustomize_dir().join("chart-values.yaml"))
        .render();
    let base = kustomize_build(&kustomize_dir().join("base"));

    let chart_keys: BTreeSet<String> = chart.iter().map(key).collect();
    let mut base_keys: BTreeSet<String> = base.iter().map(key).collect();
    assert!(
        base_keys.remove("Namespace/blixt-system"),
        "the base creates its namespace"
    );
    assert_eq!(
        base_keys, chart_keys,
        "base/ and the chart hold different objects: run deploy/kustomize/generate.sh"
    );
    let base = by_key(&base);
    for object in &chart {
        let from_chart = without_helm_labels(object);
        let from_base = without_helm_labels(base[&key(object)]);
        assert_eq!(
            from_base,
            from_chart,
            "{} differs between base/ and the chart: run deploy/kustomize/generate.sh",
            key(object)
        );
    }
}

#[test]
fn example_overlay_moves_the_namespace_and_keeps_cluster_objects_cluster_scoped() {
    let objects = kustomize_build(&kustomize_dir().join("overlays/example"));
    find(&objects, "Namespace", "blixt-lb");
    for object in &objects {
        let scoped = matches!(
            kind(object),
            "Namespace"
                | "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "GatewayClass"
                | "AddressPool"
        );
        if scoped {
            assert_eq!(object.metadata.namespace, None, "{}", key(object));
        } else {
            assert_eq!(
                object.metadata.namespace.as_deref(),
                Some("blixt-lb"),
                "{}",
                key(object)
            );
        }
    }
    // The bindings follow their ServiceAccount.
    for binding in of_kind(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&objects, "RoleBinding"))
    {
        for subject in binding.data["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["namespace"], "blixt-lb", "{}", key(binding));
        }
    }
    let spec = pod_spec_of_daemonset(&objects, "blixt-agent");
    let container = only_container(&spec);
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example.com/blixt:0.1.0")
    );
    assert!(args(container).contains(&"--interface=eth0"));
    assert_eq!(
        find(&objects, "GatewayClass", "blixt").data["spec"]["parametersRef"]["name"],
        "example-pool"
    );
    assert_eq!(
        kind(find(&objects, "AddressPool", "example-pool")),
        "AddressPool"
    );
}

#[test]
fn rbac_has_no_wildcards_and_the_agent_no_bindings() {
    let objects = default_render();
    for role in of_kind(&objects, "ClusterRole")
        .into_iter()
        .chain(of_kind(&objects, "Role"))
    {
        let rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule> =
            serde_json::from_value(role.data["rules"].clone()).expect("rules");
        for rule in &rules {
            let fields = [
                rule.api_groups.clone().unwrap_or_default(),
                rule.resources.clone().unwrap_or_default(),
                rule.verbs.clone(),
            ];
            for field in fields {
                assert!(
                    !field.iter().any(|v| v.contains('*')),
                    "wildcard in {rule:?}"
                );
            }
            assert!(
                !rule
                    .resources
                    .iter()
                    .flatten()
                    .any(|r| ["secrets", "configmaps", "pods"].contains(&r.as_str())),
                "{rule:?}"
            );
            assert!(rule.non_resource_urls.is_none(), "{rule:?}");
        }
    }
    for binding in of_kind(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&objects, "RoleBinding"))
    {
        for subject in binding.data["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["name"], "blixt-controller", "{}", key(binding));
        }
    }
}
