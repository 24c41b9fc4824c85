//! A cluster whose pods really run (`ClusterOptions::running_pods`): a Deployment of the
//! conformance suite's echo-basic behind a Service, scaled down; its ClusterIPs reached through
//! kube-proxy and its name resolved through the cluster DNS from a pod and from a hostNetwork
//! pod; the API server reached in-cluster with the pod's service-account token; the kubelet's
//! Service variables; capability sets; a pod reading its volumes and environment; a pod with an
//! unknown image. Needs root, iptables and curl, and the binaries of `tests/k8s/build.sh`
//! (kube-scheduler, kube-proxy, echo-basic); fails saying so otherwise. Whatever happens, the
//! namespaces, veths, processes and iptables rules the cluster made must be gone afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use blixt_k8s_harness::{Cluster, ClusterOptions, ImageTable, Program};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

const ECHO_IMAGE: &str = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0";
const SHELL_IMAGE: &str = "blixt.test/shell:1";
/// Mount points that do not exist on the host: the node agent must create them in an overlay
/// private to the pod, not in the host's /etc.
const SECRET_DIR: &str = "/etc/blixt-harness-test/secret";
const CONFIG_DIR: &str = "/etc/blixt-harness-test/config";
const SCRATCH_DIR: &str = "/etc/blixt-harness-test/scratch";
const STATE_DIR: &str = "/etc/blixt-harness-test/state";
/// Where the ServiceAccount admission plugin mounts every pod's projected API credentials.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the scenario saw, to check the cleanup against.
#[derive(Default)]
struct Seen {
    node_netns: String,
    root_link: String,
    /// The cluster's directory, which every control-plane process (kube-proxy included) names
    /// on its command line.
    cluster_dir: String,
    pod_netns: Vec<String>,
    pids: Vec<u32>,
}

/// kube-proxy's chains in the root namespace's iptables (IPv4 and IPv6): it runs in the node
/// namespace and must not add any here.
fn root_kube_chains() -> usize {
    ["iptables-save", "ip6tables-save"]
        .iter()
        .map(|tool| {
            let out = std::process::Command::new(tool)
                .output()
                .unwrap_or_else(|e| panic!("running {tool} (is iptables installed?): {e}"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("KUBE-"))
                .count()
        })
        .sum()
}

/// Processes whose command line mentions `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && entry.file_name() != "self" {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[test]
fn pods_really_run_and_everything_is_cleaned_up() {
    assert!(
        blixt_lab::is_root(),
        "needs root: the node agent creates network namespaces, veths and mounts (run as root; make test does)"
    );
    assert!(
        !Path::new("/etc/blixt-harness-test").exists(),
        "/etc/blixt-harness-test exists before the test; remove it"
    );
    let kube_chains_before = root_kube_chains();
    let mut seen = Seen::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let images = ImageTable::new()
            .echo_basic()
            .expect("echo-basic from tests/k8s/build.sh")
            .map("blixt.test/shell", Program::host_commands());
        let cluster = Cluster::start_with(ClusterOptions::default().running_pods(images));
        let agent = cluster.node_agent().expect("the cluster runs pods");
        seen.node_netns = agent.node_netns().to_owned();
        seen.root_link = agent.root_link().to_owned();
        seen.cluster_dir = cluster
            .log_dir()
            .parent()
            .expect("the log dir is inside the cluster dir")
            .display()
            .to_string();
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        runtime.block_on(scenario(&cluster, &mut seen));
        // The cluster drops here (also on panic): agent, scheduler, controllers, API server.
    }));

    // Cleanup, whether the scenario passed or not.
    let mut leftovers = Vec::new();
    for ns in std::iter::once(&seen.node_netns).chain(&seen.pod_netns) {
        if !ns.is_empty() && Path::new("/run/netns").join(ns).exists() {
            leftovers.push(format!("network namespace {ns}"));
        }
    }
    if !seen.root_link.is_empty() && Path::new("/sys/class/net").join(&seen.root_link).exists() {
        leftovers.push(format!("veth {}", seen.root_link));
    }
    for pid in &seen.pids {
        if Path::new(&format!("/proc/{pid}")).exists() {
            leftovers.push(format!("process {pid}"));
        }
    }
    if Path::new("/etc/blixt-harness-test").exists() {
        leftovers.push("/etc/blixt-harness-test on the host".to_owned());
    }
    if !seen.cluster_dir.is_empty() {
        for process in processes_naming(&seen.cluster_dir) {
            leftovers.push(format!("control-plane process {process}"));
        }
    }
    let kube_chains_after = root_kube_chains();
    if kube_chains_after != kube_chains_before {
        leftovers.push(format!(
            "iptables rules with KUBE- chains in the root namespace: {kube_chains_before} before, {kube_chains_after} after"
        ));
    }
    if let Err(panic) = outcome {
        if !leftovers.is_empty() {
            eprintln!("left behind after the failure: {leftovers:?}");
        }
        std::panic::resume_unwind(panic);
    }
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

async fn scenario(cluster: &Cluster, seen: &mut Seen) {
    let agent = cluster.node_agent().expect("the cluster runs pods");
    let ns = cluster.temp_namespace().await;
    let ns = ns.name();
    let client = cluster.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    // --- A Deployment of two echo-basic replicas behind a dual-stack Service.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "echo" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "echo" } },
            "template": {
                "metadata": { "labels": { "app": "echo" } },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "echo",
                        "image": ECHO_IMAGE,
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                        ],
                        "ports": [{ "name": "http", "containerPort": 3000 }],
                        "readinessProbe": { "httpGet": { "path": "/", "port": "http" } },
                        "resources": { "requests": { "cpu": "10m" } },
                    }],
                },
            },
        },
    }))
    .expect("a valid Deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating the Deployment");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "echo" },
        "spec": {
            "ipFamilyPolicy": "PreferDualStack",
            "selector": { "app": "echo" },
            "ports": [{ "port": 8080, "targetPort": 3000 }],
        },
    }))
    .expect("a valid Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("creating the Service");

    let running = wait_for(
        cluster,
        &client,
        ns,
        "two echo pods Running and Ready",
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=echo"))
                .await
                .ok()?;
            let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == 2).then_some(ready)
        },
    )
    .await;
    let mut addresses = BTreeSet::new();
    for pod in &running {
        let name = pod.metadata.name.clone().expect("named");
        let status = pod.status.clone().expect("status");
        let ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .map(|ip| ip.ip.parse().expect("pod IPs parse"))
            .collect();
        assert!(
            ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
            "{name}: podIPs {ips:?}"
        );
        assert_eq!(status.pod_ip.as_deref(), Some(ips[0].to_string().as_str()));
        assert_eq!(
            status.host_ip.as_deref(),
            Some(agent.host_ips().0.to_string().as_str())
        );
        let container = &status.container_statuses.expect("container statuses")[0];
        assert!(
            container.ready
                && container
                    .state
                    .as_ref()
                    .and_then(|s| s.running.as_ref())
                    .is_some(),
            "{container:?}"
        );
        seen.pids
            .extend(container_pid(container.container_id.as_deref()));
        seen.pod_netns
            .push(agent.pod_netns(ns, &name).expect("a pod namespace"));
        // echo-basic answers with the name and namespace it got through the downward API.
        for ip in &ips {
            let reply = http_get(SocketAddr::new(*ip, 3000));
            assert_eq!(reply["pod"], name.as_str(), "{ip}: {reply}");
            assert_eq!(reply["namespace"], ns, "{ip}: {reply}");
        }
        addresses.extend(ips);
    }

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    wait_for(
        cluster,
        &client,
        ns,
        "EndpointSlices list both pods, IPv4 and IPv6",
        || async {
            let published = ready_endpoints(&slices).await;
            (published == addresses).then_some(())
        },
    )
    .await;

    // --- Scale to one: a pod is stopped, its namespace removed, the endpoints follow.
    deployments
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .expect("scaling the Deployment");
    let remaining = wait_for(
        cluster,
        &client,
        ns,
        "one echo pod left, the other deleted",
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=echo"))
                .await
                .ok()?;
            (list.items.len() == 1).then(|| list.items[0].metadata.name.clone().expect("named"))
        },
    )
    .await;
    let removed = running
        .iter()
        .map(|p| p.metadata.name.clone().expect("named"))
        .find(|name| *name != remaining)
        .expect("one of the two was removed");
    let removed_netns = seen.pod_netns[running
        .iter()
        .position(|p| p.metadata.name.as_deref() == Some(removed.as_str()))
        .expect("known")]
    .clone();
    assert!(
        !Path::new("/run/netns").join(&removed_netns).exists(),
        "{removed}'s namespace {removed_netns} still exists"
    );
    assert!(agent.pod_netns(ns, &removed).is_none());
    let remaining_ips: BTreeSet<IpAddr> = running
        .iter()
        .filter(|p| p.metadata.name.as_deref() == Some(remaining.as_str()))
        .flat_map(|p| p.status.clone().and_then(|s| s.pod_ips).unwrap_or_default())
        .map(|ip| ip.ip.parse().expect("parses"))
        .collect();
    wait_for(
        cluster,
        &client,
        ns,
        "EndpointSlices list the remaining pod only",
        || async { (ready_endpoints(&slices).await == remaining_ips).then_some(()) },
    )
    .await;

    // --- Service networking (kube-proxy in the node namespace), cluster DNS, the kubelet's
    // Service variables and the in-cluster API, from a pod and from a hostNetwork pod; the
    // capability sets of a restricted and of a default container.
    let node_rules = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            agent.node_netns(),
            "iptables-save",
            "-t",
            "nat",
        ])
        .output()
        .expect("iptables-save in the node namespace");
    let node_rules = String::from_utf8_lossy(&node_rules.stdout);
    assert!(
        node_rules.contains("KUBE-SERVICES") && node_rules.contains(&format!("{ns}/echo")),
        "kube-proxy's rules for {ns}/echo in the node namespace:\n{node_rules}"
    );
    let cluster_ips: Vec<IpAddr> = services
        .get("echo")
        .await
        .expect("the echo Service")
        .spec
        .and_then(|s| s.cluster_ips)
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.parse().expect("ClusterIPs parse"))
        .collect();
    assert!(
        cluster_ips.len() == 2 && cluster_ips[0].is_ipv4() && cluster_ips[1].is_ipv6(),
        "dual-stack ClusterIPs: {cluster_ips:?}"
    );
    let dns = agent.dns_server().ip();
    // -g: no globbing of the brackets of IPv6 URLs. Retries cover kube-proxy's resync delay.
    let curl = "curl -gsS --max-time 3 --retry 10 --retry-all-errors --retry-delay 1";
    let echo_env = json!([
        { "name": "NS", "value": ns },
        { "name": "V4", "value": cluster_ips[0].to_string() },
        { "name": "V6", "value": cluster_ips[1].to_string() },
    ]);
    let status_lines = [
        "grep",
        "-E",
        "^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):",
        "/proc/self/status",
    ];
    let (_, logs) = run_to_completion(cluster, &client, ns, seen, json!({
        "metadata": { "name": "in-cluster" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "net",
                    "image": SHELL_IMAGE,
                    "command": ["sh", "-c", format!(
                        "set -e; S={SERVICE_ACCOUNT_DIR}; \
                         v4=$({curl} http://$V4:8080/ | tr -d '\\n'); echo \"v4 $v4\"; \
                         v6=$({curl} http://[$V6]:8080/ | tr -d '\\n'); echo \"v6 $v6\"; \
                         name=$({curl} http://echo.$NS.svc:8080/ | tr -d '\\n'); echo \"dns $name\"; \
                         api=$({curl} -o /dev/null -w '%{{http_code}}' --cacert $S/ca.crt \
                           -H \"Authorization: Bearer $(cat $S/token)\" \
                           https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api); echo \"api $api\"; \
                         env | grep -E '^(KUBERNETES|ECHO)_' | sort; cat /etc/resolv.conf"
                    )],
                    "env": echo_env,
                },
                {
                    "name": "restricted",
                    "image": SHELL_IMAGE,
                    "command": status_lines,
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] },
                    },
                },
                { "name": "default", "image": SHELL_IMAGE, "command": status_lines },
                {
                    // As Blixt's controller runs: not root, no capabilities, an emptyDir.
                    "name": "non-root",
                    "image": SHELL_IMAGE,
                    "command": ["sh", "-c", format!(
                        "touch {SCRATCH_DIR}/file && test -r {SERVICE_ACCOUNT_DIR}/token && echo ok; \
                         grep -E '^(Uid|CapEff):' /proc/self/status"
                    )],
                    "securityContext": {
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "capabilities": { "drop": ["ALL"] },
                    },
                    "volumeMounts": [{ "name": "scratch", "mountPath": SCRATCH_DIR }],
                },
            ],
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
        },
    }))
    .await;
    let lines = keyed_lines(&logs["net"]);
    for family in ["v4", "v6", "dns"] {
        let reply: serde_json::Value = serde_json::from_str(&lines[family])
            .unwrap_or_else(|e| panic!("{family}: not echo-basic's JSON ({e}): {}", logs["net"]));
        assert_eq!(reply["pod"], remaining.as_str(), "{family}: {reply}");
        assert_eq!(reply["namespace"], ns, "{family}: {reply}");
    }
    assert_eq!(
        lines["api"], "200",
        "GET /api with the pod's token: {}",
        logs["net"]
    );
    let api_v4 = "10.96.0.1";
    for expected in [
        format!("KUBERNETES_SERVICE_HOST={api_v4}"),
        "KUBERNETES_SERVICE_PORT=443".to_owned(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_owned(),
        format!("KUBERNETES_PORT=tcp://{api_v4}:443"),
        format!("KUBERNETES_PORT_443_TCP=tcp://{api_v4}:443"),
        "KUBERNETES_PORT_443_TCP_PROTO=tcp".to_owned(),
        "KUBERNETES_PORT_443_TCP_PORT=443".to_owned(),
        format!("KUBERNETES_PORT_443_TCP_ADDR={api_v4}"),
        format!("ECHO_SERVICE_HOST={}", cluster_ips[0]),
        "ECHO_SERVICE_PORT=8080".to_owned(),
    ] {
        assert!(
            logs["net"].lines().any(|l| l == expected),
            "{expected} missing: {}",
            logs["net"]
        );
    }
    for expected in [
        format!("nameserver {dns}"),
        format!("search {ns}.svc.cluster.local svc.cluster.local cluster.local"),
        "options ndots:5".to_owned(),
    ] {
        assert!(
            logs["net"].lines().any(|l| l.starts_with(&expected)),
            "resolv.conf: {expected} missing: {}",
            logs["net"]
        );
    }
    assert_eq!(
        logs["restricted"],
        "CapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t0000000000001000\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n",
        "drop: [ALL], add: [NET_ADMIN], allowPrivilegeEscalation: false"
    );
    assert_eq!(
        logs["default"],
        "CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t0\n",
        "containerd's default capabilities"
    );
    assert_eq!(
        logs["non-root"], "ok\nUid:\t65532\t65532\t65532\t65532\nCapEff:\t0000000000000000\n",
        "a non-root container writes its emptyDir and reads its token, without capabilities"
    );

    // The node namespace: ClusterFirstWithHostNet resolves through getaddrinfo (getent ahosts),
    // also the name Blixt's agent dials in another namespace, and ClusterIPs route through
    // kube-proxy's OUTPUT rules.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let blixt_system: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "blixt-system" } }))
            .expect("a valid Namespace");
    namespaces
        .create(&PostParams::default(), &blixt_system)
        .await
        .expect("creating namespace blixt-system");
    let controller: Service = serde_json::from_value(json!({
        "metadata": { "name": "blixt-controller" },
        "spec": { "ports": [{ "name": "grpc", "port": 9443 }] },
    }))
    .expect("a valid Service");
    let controller_ip = Api::<Service>::namespaced(client.clone(), "blixt-system")
        .create(&PostParams::default(), &controller)
        .await
        .expect("creating Service blixt-system/blixt-controller")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let (_, logs) = run_to_completion(cluster, &client, ns, seen, json!({
        "metadata": { "name": "host-client" },
        "spec": {
            "restartPolicy": "Never",
            "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "containers": [{
                "name": "net",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c", format!(
                    "set -e; \
                     a=$(getent ahostsv4 echo.$NS.svc | head -n1 | cut -d' ' -f1); echo \"a $a\"; \
                     aaaa=$(getent ahostsv6 echo.$NS.svc | head -n1 | cut -d' ' -f1); echo \"aaaa $aaaa\"; \
                     fqdn=$(getent ahostsv4 echo.$NS.svc.cluster.local | head -n1 | cut -d' ' -f1); echo \"fqdn $fqdn\"; \
                     blixt=$(getent ahostsv4 blixt-controller.blixt-system.svc | head -n1 | cut -d' ' -f1); echo \"blixt $blixt\"; \
                     echo \"missing $(getent ahostsv4 missing.$NS.svc >/dev/null && echo found || echo $?)\"; \
                     echo \"outside $(getent ahostsv4 example.org >/dev/null && echo found || echo $?)\"; \
                     v4=$({curl} http://$V4:8080/ | tr -d '\\n'); echo \"v4 $v4\"; \
                     name=$({curl} http://echo.$NS.svc:8080/ | tr -d '\\n'); echo \"dns $name\""
                )],
                "env": echo_env,
            }],
        },
    }))
    .await;
    let lines = keyed_lines(&logs["net"]);
    assert_eq!(lines["a"], cluster_ips[0].to_string(), "{}", logs["net"]);
    assert_eq!(lines["aaaa"], cluster_ips[1].to_string(), "{}", logs["net"]);
    assert_eq!(lines["fqdn"], cluster_ips[0].to_string(), "{}", logs["net"]);
    assert_eq!(lines["blixt"], controller_ip, "{}", logs["net"]);
    assert_eq!(lines["missing"], "2", "NXDOMAIN: {}", logs["net"]);
    assert_eq!(lines["outside"], "2", "REFUSED: {}", logs["net"]);
    for key in ["v4", "dns"] {
        let reply: serde_json::Value = serde_json::from_str(&lines[key])
            .unwrap_or_else(|e| panic!("{key}: not echo-basic's JSON ({e}): {}", logs["net"]));
        assert_eq!(reply["pod"], remaining.as_str(), "{key}: {reply}");
    }

    // --- A pod that reads its volumes (Secret, ConfigMap, an emptyDir an init container wrote
    // to, the projected service-account volume) and its environment, then exits.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "key": "secret-value" },
    }))
    .expect("a valid Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the Secret");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "settings" },
        "data": { "greeting": "hello" },
    }))
    .expect("a valid ConfigMap");
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .expect("creating the ConfigMap");
    let reader: Pod = serde_json::from_value(json!({
        "metadata": { "name": "reader" },
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "init",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c", format!("echo from-init > {SCRATCH_DIR}/file")],
                "volumeMounts": [{ "name": "scratch", "mountPath": SCRATCH_DIR }],
            }],
            "containers": [{
                "name": "shell",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c"],
                "args": [format!(
                    "cat {SECRET_DIR}/key; echo; cat {CONFIG_DIR}/greeting; echo; \
                     echo \"$MY_NAME $MY_IP $MY_NODE $(hostname)\"; echo '$(GREETING)'; \
                     cat {SCRATCH_DIR}/file {SERVICE_ACCOUNT_DIR}/namespace; echo; \
                     test -s {SERVICE_ACCOUNT_DIR}/token && test -s {SERVICE_ACCOUNT_DIR}/ca.crt && echo token"
                )],
                "env": [
                    { "name": "MY_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "MY_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                    { "name": "MY_NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "GREETING", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "greeting" } } },
                ],
                "volumeMounts": [
                    { "name": "creds", "mountPath": SECRET_DIR },
                    { "name": "settings", "mountPath": CONFIG_DIR },
                    { "name": "scratch", "mountPath": SCRATCH_DIR },
                ],
            }],
            "volumes": [
                { "name": "creds", "secret": { "secretName": "creds" } },
                { "name": "settings", "configMap": { "name": "settings" } },
                { "name": "scratch", "emptyDir": {} },
            ],
        },
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &reader)
        .await
        .expect("creating the reader pod");
    let finished = wait_for(cluster, &client, ns, "the reader pod Succeeded", || async {
        let pod = pods.get("reader").await.ok()?;
        let phase = pod.status.as_ref()?.phase.clone()?;
        assert_ne!(
            phase,
            "Failed",
            "reader failed: log {:?}",
            agent.pod_log(ns, "reader", "shell")
        );
        (phase == "Succeeded").then_some(pod)
    })
    .await;
    let status = finished.status.expect("status");
    let pod_ip = status.pod_ip.clone().expect("the reader has an IP");
    let container = &status.container_statuses.expect("statuses")[0];
    let exit = container
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(exit.exit_code, 0, "{container:?}");
    seen.pids
        .extend(container_pid(container.container_id.as_deref()));
    let log = agent
        .pod_log(ns, "reader", "shell")
        .expect("the reader's log");
    assert_eq!(
        log,
        format!(
            "secret-value\nhello\nreader {pod_ip} {} reader\nhello\nfrom-init\n{ns}\ntoken\n",
            agent.node_name()
        ),
        "volumes, downward API, hostname and $(VAR) expansion as the pod saw them"
    );

    // --- A hostNetwork pod runs in the node namespace, with the node's addresses and (with
    // the default dnsPolicy, ClusterFirst) the host's resolv.conf.
    let (finished, logs) = run_to_completion(cluster, &client, ns, seen, json!({
        "metadata": { "name": "on-host" },
        "spec": {
            "restartPolicy": "Never",
            "hostNetwork": true,
            "containers": [{
                "name": "shell",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c", "echo \"$HOST_IP $(hostname)\"; ip -o -4 addr show dev eth0; cat /etc/resolv.conf"],
                "env": [{ "name": "HOST_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } }],
            }],
        },
    }))
    .await;
    let node_ip = agent.host_ips().0.to_string();
    assert_eq!(
        finished.status.and_then(|s| s.pod_ip),
        Some(node_ip.clone())
    );
    let log = &logs["shell"];
    let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(
        log.starts_with(&format!("{node_ip} {}\n", agent.node_name()))
            && log.contains(&format!("inet {node_ip}/24"))
            && log.ends_with(&host_resolv_conf),
        "ClusterFirst on the host network keeps the host's resolv.conf: {log}"
    );

    // --- A volume over the directory of the program itself does not hide it (the chart's
    // emptyDir at /tmp over a blixt binary built under /tmp did): the program is opened
    // before the pod's mounts, as a container's entrypoint lives in its image.
    let (_, logs) = run_to_completion(
        cluster,
        &client,
        ns,
        seen,
        json!({
            "metadata": { "name": "shadowed" },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "shell",
                    "image": SHELL_IMAGE,
                    "command": ["/usr/bin/echo", "not hidden"],
                    "volumeMounts": [{ "name": "over", "mountPath": "/usr/bin" }],
                }],
                "volumes": [{ "name": "over", "emptyDir": {} }],
            },
        }),
    )
    .await;
    assert_eq!(logs["shell"], "not hidden\n");

    // --- Exec probes: ready once a file exists; a failed liveness probe kills the container,
    // which restarts (the emptyDir keeps its files across the restart).
    let probed: Pod = serde_json::from_value(json!({
        "metadata": { "name": "probed" },
        "spec": {
            "containers": [{
                "name": "shell",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c", format!(
                    "rm -f $(S)/dead; sleep 1; touch $(S)/ready; \
                     if [ -f $(S)/restarted ]; then exec sleep 600; fi; \
                     touch $(S)/restarted; sleep 1; touch $(S)/dead; exec sleep 600"
                )],
                "env": [{ "name": "S", "value": STATE_DIR }],
                "readinessProbe": { "exec": { "command": ["test", "-f", "$(S)/ready"] }, "periodSeconds": 1 },
                "livenessProbe": {
                    "exec": { "command": ["sh", "-c", "test ! -f $(S)/dead"] },
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
                "volumeMounts": [{ "name": "state", "mountPath": STATE_DIR }],
            }],
            "volumes": [{ "name": "state", "emptyDir": {} }],
        },
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &probed)
        .await
        .expect("creating the probed pod");
    let restarted = wait_for(
        cluster,
        &client,
        ns,
        "the probed pod Ready after one liveness restart",
        || async {
            let pod = pods.get("probed").await.ok()?;
            let status = pod.status.clone()?;
            let container = status.container_statuses.as_ref()?.first()?.clone();
            (is_ready(&pod) && container.restart_count == 1).then_some(container)
        },
    )
    .await;
    let killed = restarted
        .last_state
        .and_then(|s| s.terminated)
        .expect("the killed run is the last state");
    assert_eq!(killed.exit_code, 137, "SIGKILL: {killed:?}");
    seen.pids
        .extend(container_pid(restarted.container_id.as_deref()));

    // --- An image the table does not know: a clear waiting reason, not silence.
    let unknown: Pod = serde_json::from_value(json!({
        "metadata": { "name": "unknown-image" },
        "spec": { "containers": [{ "name": "app", "image": "example.invalid/nothing:1" }] },
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &unknown)
        .await
        .expect("creating the pod");
    let waiting = wait_for(
        cluster,
        &client,
        ns,
        "the unknown image reported",
        || async {
            let pod = pods.get("unknown-image").await.ok()?;
            let statuses = pod.status?.container_statuses?;
            let waiting = statuses[0].state.as_ref()?.waiting.clone()?;
            (waiting.reason.as_deref() == Some("ErrImagePull")).then_some(waiting)
        },
    )
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("example.invalid/nothing:1") && message.contains("image table"),
        "{message}"
    );
}

/// Creates the Pod `pod` (restartPolicy Never), waits until it Succeeded (panics with its logs
/// if it Failed), records its processes for the cleanup checks; the Pod and each container's
/// log by container name.
async fn run_to_completion(
    cluster: &Cluster,
    client: &Client,
    ns: &str,
    seen: &mut Seen,
    pod: serde_json::Value,
) -> (Pod, BTreeMap<String, String>) {
    let agent = cluster.node_agent().expect("the cluster runs pods");
    let pod: Pod = serde_json::from_value(pod).expect("a valid Pod");
    let name = pod.metadata.name.clone().expect("named");
    let containers: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    let logs = || {
        containers
            .iter()
            .map(|c| (c.clone(), agent.pod_log(ns, &name, c).unwrap_or_default()))
            .collect::<BTreeMap<_, _>>()
    };
    let finished = wait_for(
        cluster,
        client,
        ns,
        &format!("pod {name} Succeeded"),
        || async {
            let pod = pods.get(&name).await.ok()?;
            let phase = pod.status.as_ref()?.phase.clone()?;
            assert_ne!(phase, "Failed", "pod {name} failed: {:#?}", logs());
            (phase == "Succeeded").then_some(pod)
        },
    )
    .await;
    for container in finished
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
    {
        seen.pids
            .extend(container_pid(container.container_id.as_deref()));
    }
    (finished, logs())
}

/// `key rest-of-line` lines of a log, by key.
fn keyed_lines(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.pod_ips.as_ref().is_some_and(|ips| ips.len() == 2)
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn container_pid(container_id: Option<&str>) -> Option<u32> {
    container_id?
        .strip_prefix("blixt-k8s-harness://")?
        .parse()
        .ok()
}

/// Ready endpoint addresses of the `echo` Service, all address families.
async fn ready_endpoints(slices: &Api<EndpointSlice>) -> BTreeSet<IpAddr> {
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// `GET /` over HTTP/1.0 from the test process (the root namespace routes to pod IPs); the
/// JSON body.
fn http_get(addr: SocketAddr) -> serde_json::Value {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
        .unwrap_or_else(|e| panic!("writing to {addr}: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{addr}: not an HTTP response: {response:?}"));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{addr}: {head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{addr}: body is not JSON ({e}): {body}"))
}

/// Polls `check` until it yields a value; after 90 s panics with the namespace's pods and the
/// end of the scheduler and controller-manager logs.
async fn wait_for<T, F, Fut>(
    cluster: &Cluster,
    client: &Client,
    ns: &str,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let listed = pods
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let summary: Vec<String> = listed
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        serde_json::to_string(&p.status).unwrap_or_default()
                    )
                })
                .collect();
            let tail = |file: &str| {
                std::fs::read_to_string(cluster.log_dir().join(file))
                    .map(|t| {
                        t.lines()
                            .rev()
                            .take(15)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            };
            panic!(
                "{what}: not true after 90 s\npods:\n{}\nkube-scheduler.log:\n{}\nkube-controller-manager.log:\n{}",
                summary.join("\n"),
                tail("kube-scheduler.log"),
                tail("kube-controller-manager.log"),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
