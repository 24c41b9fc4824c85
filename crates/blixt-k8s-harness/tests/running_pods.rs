//! A cluster whose pods really run (`ClusterOptions::running_pods`): a Deployment of the
//! conformance suite's echo-basic behind a Service, scaled down, a pod reading its volumes and
//! environment, a pod with an unknown image. Needs root and the binaries of
//! `tests/k8s/build.sh` (kube-scheduler, echo-basic); fails saying so otherwise. Whatever
//! happens, the namespaces, veths and processes the node agent made must be gone afterwards.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use blixt_k8s_harness::{Cluster, ClusterOptions, ImageTable, Program};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
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
    pod_netns: Vec<String>,
    pids: Vec<u32>,
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

    // --- A hostNetwork pod runs in the node namespace, with the node's addresses.
    let host: Pod = serde_json::from_value(json!({
        "metadata": { "name": "on-host" },
        "spec": {
            "restartPolicy": "Never",
            "hostNetwork": true,
            "containers": [{
                "name": "shell",
                "image": SHELL_IMAGE,
                "command": ["sh", "-c", "echo \"$HOST_IP $(hostname)\"; ip -o -4 addr show dev eth0"],
                "env": [{ "name": "HOST_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } }],
            }],
        },
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &host)
        .await
        .expect("creating the hostNetwork pod");
    let finished = wait_for(
        cluster,
        &client,
        ns,
        "the hostNetwork pod Succeeded",
        || async {
            let pod = pods.get("on-host").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(pod)
        },
    )
    .await;
    let node_ip = agent.host_ips().0.to_string();
    assert_eq!(
        finished.status.and_then(|s| s.pod_ip),
        Some(node_ip.clone())
    );
    let log = agent.pod_log(ns, "on-host", "shell").expect("the log");
    assert!(
        log.starts_with(&format!("{node_ip} {}\n", agent.node_name()))
            && log.contains(&format!("inet {node_ip}/24")),
        "{log}"
    );

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
