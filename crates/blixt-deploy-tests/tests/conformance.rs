//! The upstream Gateway API conformance suite (v1.7.0; GATEWAY-TCP, GATEWAY-UDP, GATEWAY-TLS)
//! against Blixt installed from its Helm chart, the way users install it, into a cluster whose
//! pods really run (`blixt-k8s-harness` with `running_pods`: kube-scheduler, kube-proxy, the
//! workload controllers and a node agent that runs each Pod as processes in a network
//! namespace of its own).
//!
//! Nothing starts Blixt by hand: `helm install` creates the controller Deployment and the agent
//! DaemonSet, the node agent runs them as the `blixt` binary of this build (the chart's image
//! maps to it) with the pod spec's identity, capabilities and volumes, and the agent attaches to
//! the node's interfaces. The suite runs in the root network namespace, like a CI job beside a
//! cluster, and dials each Gateway's `status.addresses`: the AddressPool below, routed from
//! the root namespace to the node.
//!
//! Writes `target/conformance/{report.yaml,summary.md,conformance.log}` (hack/conformance.sh
//! does the running and the report's implementation fields) and fails when a runnable test
//! fails or the skipped tests differ from `tests/conformance/skipped.txt`. On failure the
//! cluster's logs (every component and pod) are copied to `target/conformance/logs/`.
//!
//! Environment: `BLIXT_CONFORMANCE_ARGS` (extra runner flags, split on whitespace, e.g.
//! `-run-test TCPRouteWeightedRouting`), `BLIXT_CONFORMANCE_OUT` (instead of
//! target/conformance), `BLIXT_K8S_KEEP=1` (keep the cluster directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use blixt_deploy_tests::{repo_root, tools};
use blixt_k8s_harness::{eventually, Cluster, ClusterOptions, ImageTable, NodeAgent, Program};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::Api;
use kube::core::{DynamicObject, GroupVersionKind};

/// Where the chart goes (its default namespace in docs/deploy.md).
const NAMESPACE: &str = "blixt-system";
const RELEASE: &str = "blixt";
/// Time for the controller and the agent to come up after `helm install`.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn upstream_conformance_suite() {
    assert!(
        blixt_lab::is_root(),
        "needs root: the cluster's node agent creates network namespaces, and Blixt's agent loads BPF programs (run as root; make test does)"
    );
    let blixt = blixt_binary();
    let images = ImageTable::new()
        .echo_basic()
        .unwrap_or_else(|e| panic!("{e:#}"))
        // The chart's image is `blixt:<appVersion>` (values.yaml, image.repository).
        .map("blixt", Program::new(&blixt));
    let cluster = Cluster::start_with(ClusterOptions::default().running_pods(images));
    let agent = cluster.node_agent().expect("the cluster runs pods");
    let pool = GatewayAddresses::route(agent);
    let pin_dir = PinDir::new();
    let out = out_dir();

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        install(&cluster, &pool, &pin_dir);
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        runtime.block_on(wait_until_installed(&cluster));
        let status = run_suite(&cluster, &out);
        assert!(
            status.success(),
            "the conformance suite failed ({status}): see {} and {}",
            out.join("summary.md").display(),
            out.join("conformance.log").display()
        );
    }));
    if outcome.is_err() {
        keep_logs(&cluster, &out);
        print_blixt_pods(&cluster);
    }
    // The agent unpins nothing on a normal stop (pins outlive restarts); the cluster's
    // namespaces take the attachments with them. Uninstall first, so the agent stops cleanly.
    let _ = helm(
        &cluster,
        &["uninstall", RELEASE, "--wait", "--timeout", "60s"],
    );
    drop(pin_dir);
    drop(pool);
    drop(cluster);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The `blixt` binary of this build: `cargo test` builds it beside the test binaries
/// (`target/<profile>/blixt`, this binary being `target/<profile>/deps/conformance-*`).
fn blixt_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let blixt = profile_dir.join("blixt");
    assert!(
        blixt.is_file(),
        "{} is missing: build it first (`cargo build -p blixt`; `cargo test --workspace` and make conformance do)",
        blixt.display()
    );
    blixt
}

fn out_dir() -> PathBuf {
    let out = std::env::var_os("BLIXT_CONFORMANCE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/conformance"));
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    out
}

/// The Gateways' address pool, `10.245.<node index>.0/24`, routed from the root namespace
/// through the node's link. The route goes with the link when the cluster stops; dropping this
/// removes it sooner.
struct GatewayAddresses {
    cidr: String,
    link: String,
}

impl GatewayAddresses {
    fn route(agent: &NodeAgent) -> Self {
        let (node_v4, _) = agent.host_ips();
        let index = node_v4.octets()[2];
        let pool = Self {
            cidr: format!("10.245.{index}.0/24"),
            link: agent.root_link().to_owned(),
        };
        let node = node_v4.to_string();
        ip(&[
            "route", "replace", &pool.cidr, "via", &node, "dev", &pool.link,
        ]);
        pool
    }
}

impl Drop for GatewayAddresses {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", &self.cidr, "dev", &self.link])
            .output();
    }
}

fn ip(args: &[&str]) {
    blixt_deploy_tests::run(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("{e:#}"));
}

/// The agent's pin directory on the host's bpffs, private to this run; removed afterwards.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/blixt-conformance-{}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `helm install` with the values a user of this cluster would write: the node's uplink and
/// the pods' bridge as the interfaces, TC (the pods send with TX checksum offload on their veths,
/// see docs/dataplane.md), an AddressPool for the Gateways.
fn install(cluster: &Cluster, pool: &GatewayAddresses, pin_dir: &PinDir) {
    let values = format!(
        r#"# blixt-deploy-tests/tests/conformance.rs
agent:
  # eth0: the node's link to the root namespace, where the suite runs; cbr0: the bridge of
  # the pods, where the backends' replies come in
  interfaces: [eth0, cbr0]
  attach: tc
  bpffs:
    pinDir: {pin_dir}
addressPool:
  create: true
  name: blixt-conformance
  addresses: ["{cidr}"]
"#,
        pin_dir = pin_dir.0.display(),
        cidr = pool.cidr,
    );
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), values).expect("writing the values file");
    let chart = blixt_deploy_tests::chart_dir();
    let notes = helm(
        cluster,
        &[
            "install",
            RELEASE,
            chart.to_str().expect("a UTF-8 path"),
            "--create-namespace",
            "--values",
            file.path().to_str().expect("a UTF-8 path"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(notes.contains("STATUS: deployed"), "{notes}");
}

fn helm(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let home = cluster.log_dir().join("../helm");
    let mut command = Command::new(tools::helm());
    command
        .args(args)
        .args(["--namespace", NAMESPACE])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    blixt_deploy_tests::run(&mut command)
}

/// The controller and the agent are available and the GatewayClass is Accepted.
async fn wait_until_installed(cluster: &Cluster) {
    let client = cluster.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    eventually("the controller Deployment available", READY_TIMEOUT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("blixt-controller").await.ok()?;
            let status = d.status?;
            (status.available_replicas? >= 1).then_some(())
        }
    })
    .await;
    eventually("the agent DaemonSet ready", READY_TIMEOUT, || {
        let daemonsets = daemonsets.clone();
        async move {
            let status = daemonsets.get("blixt-agent").await.ok()?.status?;
            (status.desired_number_scheduled > 0
                && status.number_ready == status.desired_number_scheduled)
                .then_some(())
        }
    })
    .await;
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass");
    let classes: Api<DynamicObject> = blixt_deploy_tests::dynamic_api(&client, &gvk, None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eventually("GatewayClass blixt Accepted", READY_TIMEOUT, || {
        let classes = classes.clone();
        async move {
            let class = classes.get("blixt").await.ok()?;
            let conditions = class
                .data
                .pointer("/status/conditions")?
                .as_array()?
                .clone();
            conditions
                .iter()
                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                .then_some(())
        }
    })
    .await;
}

/// hack/conformance.sh against the cluster; its exit status.
fn run_suite(cluster: &Cluster, out: &Path) -> std::process::ExitStatus {
    let extra = std::env::var("BLIXT_CONFORMANCE_ARGS").unwrap_or_default();
    Command::new("bash")
        .arg(repo_root().join("hack/conformance.sh"))
        .args(extra.split_whitespace())
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("BLIXT_CONFORMANCE_OUT", out)
        .status()
        .expect("running hack/conformance.sh")
}

/// Prints the status of Blixt's pods (why a container is waiting or failed), for a failed run.
fn print_blixt_pods(cluster: &Cluster) {
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        return;
    };
    runtime.block_on(async {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(cluster.client(), NAMESPACE);
        match pods.list(&Default::default()).await {
            Ok(list) => {
                for pod in list {
                    let name = pod.metadata.name.unwrap_or_default();
                    let status = serde_json::to_string_pretty(&pod.status).unwrap_or_default();
                    eprintln!("pod {NAMESPACE}/{name} status: {status}");
                }
            }
            Err(e) => eprintln!("listing pods in {NAMESPACE}: {e}"),
        }
    });
}

/// Copies the cluster's logs (components and pods) next to the report.
fn keep_logs(cluster: &Cluster, out: &Path) {
    let target = out.join("logs");
    let _ = std::fs::remove_dir_all(&target);
    let source = cluster.log_dir().join("..");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(source.join("logs"))
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    let pods = target.join("pods");
    let _ = std::fs::create_dir_all(&pods);
    if let Ok(entries) = std::fs::read_dir(source.join("pods")) {
        for entry in entries.flatten() {
            let logs = entry.path().join("logs");
            if logs.is_dir() {
                let _ = Command::new("cp")
                    .arg("-r")
                    .arg(&logs)
                    .arg(pods.join(entry.file_name()))
                    .status();
            }
        }
    }
    if copied {
        eprintln!("cluster logs copied to {}", target.display());
    }
}
