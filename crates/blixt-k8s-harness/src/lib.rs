//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
//! built from source by `tests/k8s/build.sh`, with the Gateway API standard-channel CRDs
//! installed. By default (and in [`shared`]) there is no kubelet and no scheduler: Pods are API
//! objects whose status tests set themselves (see [`mark_pod_ready`]), which is all the
//! EndpointSlice controller needs.
//!
//! ```no_run
//! # async fn example() {
//! let cluster = blixt_k8s_harness::shared(); // one per test binary, started on first use
//! let ns = cluster.temp_namespace().await; // deleted when `ns` drops
//! let client = cluster.client();
//! # let _ = (ns.name(), client);
//! # }
//! ```
//!
//! # Pods that really run (opt-in, root)
//!
//! [`ClusterOptions::running_pods`] starts a cluster of its own with kube-scheduler, the
//! workload controllers, kube-proxy, and a [`NodeAgent`] that runs the Pods bound to its Node as
//! processes, each in a network namespace of its own with IPv4 and IPv6 addresses the test
//! process reaches directly (the root namespace routes the pod CIDRs through a veth to a "node"
//! namespace). Images map to programs of this machine through an [`ImageTable`]. The API server
//! then listens on the root end of that veth (`10.243.N.1`, [`Cluster::server_url`]), which pods
//! reach, and the `kubernetes` Service's endpoint is that address: in-cluster clients
//! (`KUBERNETES_SERVICE_HOST`, the projected service-account token) work from pods.
//!
//! ```no_run
//! # fn example() -> anyhow::Result<()> {
//! use blixt_k8s_harness::{Cluster, ClusterOptions, ImageTable, Program};
//! let images = ImageTable::new()
//!     .echo_basic()? // registry.k8s.io/gateway-api/conformance/echo-basic:* and older names
//!     .map("busybox", Program::host_commands());
//! let cluster = Cluster::try_start_with(ClusterOptions::default().running_pods(images))?;
//! let agent = cluster.node_agent().expect("running pods");
//! println!("pods of {} get {:?}", agent.node_name(), agent.pod_cidrs());
//! # Ok(()) }
//! ```
//!
//! What the node agent emulates: the Node (capacity, pod CIDRs, addresses, Ready kept fresh with
//! a Lease), a pod sandbox (a network namespace on a bridge, or the node namespace for
//! `hostNetwork`), environment variables (the kubelet's Service variables
//! `KUBERNETES_SERVICE_HOST`, ... and those of the namespace's Services with
//! `enableServiceLinks`, values, downward-API `fieldRef`s, Secret and ConfigMap keys, `envFrom`,
//! `$(VAR)` expansion), volumes (Secret, ConfigMap, downwardAPI, projected with service-account
//! tokens, emptyDir, hostPath) bind-mounted in a private mount namespace, a `resolv.conf` per
//! `dnsPolicy` (and `dnsConfig`) bind-mounted at `/etc/resolv.conf`, capabilities as containerd
//! sets them (its default set, `capabilities.add`/`drop`, `privileged`, applied as the bounding
//! set; `allowPrivilegeEscalation: false` as `no_new_privs`), `command`/`args`, init containers,
//! restarts per `restartPolicy`, readiness, liveness and startup probes (TCP, HTTP, exec), the
//! pod status a kubelet writes, graceful deletion.
//!
//! Service networking is real: kube-proxy (iptables mode, built by `tests/k8s/build.sh`) runs in
//! the node namespace as `system:kube-proxy`, so ClusterIPs (both families) route from pods and
//! from hostNetwork pods. Cluster DNS is emulated by the agent ([`NodeAgent::dns_server`],
//! `10.243.N.1:53`, UDP and TCP): `<svc>.<ns>.svc.cluster.local` A/AAAA records from a watch of
//! Services (ClusterIPs by family; headless Services: ready endpoint addresses; ExternalName: a
//! CNAME), `<hostname>.<svc>.<ns>.svc` and `<a-b-c-d>.<ns>.pod` names, NXDOMAIN for other
//! `cluster.local` names, REFUSED for everything else (nothing is forwarded upstream); no SRV or
//! PTR records, no `kube-dns` Service.
//!
//! What it does not emulate: images and container isolation (no pulls or root file systems, no
//! cgroups or resource limits, no user namespaces, seccomp, AppArmor or `readOnlyRootFilesystem`;
//! processes run as root unless `runAsUser` says otherwise, with the capabilities above), the
//! kubelet API (no exec, logs or port-forward: see [`NodeAgent::pod_log`]), `/etc/hosts`,
//! hostPorts, volume updates after start, the node-lifecycle controller. `tests/k8s/README.md`
//! has the details. Pods made by hand with [`test_pod`] and [`mark_pod_ready`] belong on
//! API-only Nodes ([`create_node`]) there: on the agent's Node they would be run (and their
//! status rewritten).
//!
//! Layout of a running cluster (a temporary directory on tmpfs, `/dev/shm` by default):
//! `etcd/` (data), `pki/` (CA, serving and client certificates, service-account keys),
//! `logs/<component>.log`, `kubeconfig` (admin, for child processes), and with running pods
//! `kube-proxy.kubeconfig` and `pods/<namespace>_<pod>_<uid>/` (`volumes/`,
//! `logs/<container>.log`, `resolv.conf`, overlay layers).
//!
//! Environment: `BLIXT_K8S_CACHE` (where build.sh put the binaries), `BLIXT_K8S_TMPDIR`
//! (instead of `/dev/shm`), `BLIXT_K8S_KEEP=1` (keep the directory and temporary namespaces
//! after the test, for debugging).

#![deny(unsafe_code)]

mod agent;
mod artifacts;
mod caps;
mod dns;
mod env;
mod images;
mod manifests;
mod network;
mod node;
mod pki;
mod pods;
mod probes;
#[allow(unsafe_code)] // pre_exec with prctl(PR_SET_PDEATHSIG), atexit
mod process;
#[allow(
    unsafe_code,
    reason = "setns, unshare, mount and prctl (capability bounding set, no_new_privs) between fork and exec; kill; flock"
)]
mod sys;
mod volumes;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub use agent::NodeAgent;
pub use artifacts::{gateway_api_version, kubernetes_version};
pub use images::{ImageTable, Program, ECHO_BASIC_IMAGES};
pub use manifests::{apply, parse_documents, FIELD_MANAGER};
use process::Component;

/// The Service CIDR; the `kubernetes` Service gets its first address.
const SERVICE_CIDR: &str = "10.96.0.0/12";
/// With running pods the Service range is dual-stack, as the pods are.
const SERVICE_CIDRS_DUAL: &str = "10.96.0.0/12,fd00:10:96::/112";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Controllers that matter without nodes. serviceaccount-controller creates each namespace's
/// `default` ServiceAccount, without which the ServiceAccount admission plugin rejects Pods.
const CONTROLLERS: &str = "endpointslice-controller,garbage-collector-controller,\
namespace-controller,serviceaccount-controller,serviceaccount-token-controller,\
root-ca-certificate-publisher-controller";
/// Added when pods run: the controllers that make Pods out of workloads and clean them up.
const WORKLOAD_CONTROLLERS: &str = "deployment-controller,replicaset-controller,\
daemonset-controller,statefulset-controller,job-controller,pod-garbage-collector-controller,\
disruption-controller";
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The Node created at start (see [`Cluster::node_name`]).
const NODE_NAME: &str = "blixt-test-node";
/// The node agent's Node when pods run.
const AGENT_NODE_NAME: &str = "blixt-node";
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// A running control plane. Dropping it kills the processes and deletes its directory; the
/// processes also die with the test binary whatever happens (see `process.rs`).
#[derive(Debug)]
pub struct Cluster {
    // Stopped in this order by `shutdown`. kube-proxy before the agent: the node namespace (and
    // kube-proxy's rules in it) goes away with the last process inside.
    proxy: Option<Component>,
    agent: Option<NodeAgent>,
    scheduler: Option<Component>,
    controller_manager: Component,
    apiserver: Component,
    etcd: Component,
    dir: Mutex<Option<tempfile::TempDir>>,
    path: PathBuf,
    server_url: String,
    kubeconfig: PathBuf,
    admin: kube::Config,
    ca_pem: String,
    crds: Vec<String>,
    node_name: String,
}

/// How to start a [`Cluster`]. The default is what [`shared`] runs: no scheduler, no kubelet,
/// Pods are API objects only.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    running_pods: Option<ImageTable>,
}

impl ClusterOptions {
    /// Pods really run: kube-scheduler, the workload controllers (Deployment, ReplicaSet,
    /// DaemonSet, StatefulSet, Job, PodDisruptionBudget, pod garbage collection), a dual-stack
    /// Service range, kube-proxy in the node namespace, and a [`NodeAgent`] (with the cluster
    /// DNS server) whose Node (`blixt-node`) replaces the API-only one; the API server listens
    /// where pods reach it. Containers run the programs `images` maps their images to. Needs
    /// root and iptables.
    pub fn running_pods(mut self, images: ImageTable) -> Self {
        self.running_pods = Some(images);
        self
    }
}

/// Polls `check` every 200 ms until it returns `Some`, and returns that value; panics with
/// `what` after `timeout`. For tests that wait on the API server (statuses, objects a
/// controller creates).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process-wide cluster: started by the first caller in a test binary, shared by every test
/// of that binary, stopped when the binary exits. Tests sharing it must isolate themselves,
/// for example with [`Cluster::temp_namespace`], and must not rely on cluster-scoped objects
/// staying as they left them. A failed start is remembered: every later caller panics with
/// the same message instead of trying again.
pub fn shared() -> &'static Cluster {
    match SHARED.get_or_init(|| {
        let cluster = Cluster::try_start().map_err(|e| format!("{e:#}"));
        if cluster.is_ok() {
            // Statics are never dropped; stop the processes and remove the tmpfs directory at
            // exit. (Should the binary be killed instead, the processes die with it and the next
            // start sweeps the directory.)
            // SAFETY: registers a plain `extern "C"` function with no arguments.
            #[allow(unsafe_code)]
            unsafe {
                libc::atexit(stop_shared);
            }
        }
        cluster
    }) {
        Ok(cluster) => cluster,
        Err(message) => panic!("the shared test cluster failed to start: {message}"),
    }
}

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.shutdown();
    }
}

impl Cluster {
    /// Starts a cluster of its own (about 5 s on 2 cores; prefer [`shared`]). Panics with the reason
    /// and the end of the failing component's log.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("starting the test control plane: {e:#}"))
    }

    /// Starts a cluster of its own. Works inside or outside a Tokio runtime: the start runs on
    /// a thread of its own.
    pub fn try_start() -> Result<Self> {
        Self::try_start_with(ClusterOptions::default())
    }

    /// Starts a cluster of its own as `options` say. Panics with the reason.
    pub fn start_with(options: ClusterOptions) -> Self {
        Self::try_start_with(options)
            .unwrap_or_else(|e| panic!("starting the test control plane: {e:#}"))
    }

    /// Starts a cluster of its own as `options` say. Works inside or outside a Tokio runtime.
    pub fn try_start_with(options: ClusterOptions) -> Result<Self> {
        std::thread::Builder::new()
            .name("k8s-harness-start".into())
            .spawn(move || start_blocking(&options))
            .context("spawning the start thread")?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// A client authenticated as the admin user (group `system:masters`). Must be called inside
    /// a Tokio runtime, which the client then lives on (a client made in one `#[tokio::test]`
    /// cannot be used in another).
    pub fn client(&self) -> Client {
        Client::try_from(self.admin.clone()).expect("building a kube client for the test cluster")
    }

    /// The admin client configuration.
    pub fn config(&self) -> kube::Config {
        self.admin.clone()
    }

    /// A client acting as `user` in `groups` through impersonation, so every request is
    /// authorized by RBAC exactly as it would be for that user. Needs a Tokio runtime.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        let mut config = self.admin.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Client::try_from(config).expect("building an impersonating kube client")
    }

    /// A client acting as ServiceAccount `namespace/name` (the user and groups the API server
    /// gives its tokens). The ServiceAccount need not exist: authorization is by name.
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Client {
        let (user, groups) = service_account_identity(namespace, name);
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        self.client_as(&user, &groups)
    }

    /// Mints a token for ServiceAccount `namespace/name` through the TokenRequest API (what a
    /// projected service-account token volume holds), valid for an hour for `audiences` (the
    /// API server's own when empty). The ServiceAccount must exist. Verifiable by TokenReview.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        // The API server's own audience when none is given.
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": { "audiences": audiences, "expirationSeconds": 3600 },
        }))
        .expect("a valid TokenRequest");
        accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("requesting a token for {namespace}/{name}: {e}"))
            .status
            .and_then(|status| status.token)
            .unwrap_or_else(|| panic!("token request for {namespace}/{name} returned no token"))
    }

    /// A client that authenticates with a bearer `token` only (no client certificate).
    /// Needs a Tokio runtime.
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = self.admin.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..kube::config::AuthInfo::default()
        };
        Client::try_from(config).expect("building a token kube client")
    }

    /// The admin kubeconfig, for child processes (`KUBECONFIG=...`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig that acts as ServiceAccount `namespace/name` (impersonation, `as` and
    /// `as-groups`), for running a child process under that account's permissions.
    pub fn kubeconfig_as_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let (user, groups) = service_account_identity(namespace, name);
        let path = self
            .path
            .join(format!("kubeconfig-serviceaccount-{namespace}-{name}"));
        let pki = self.path.join("pki");
        write_kubeconfig(
            &path,
            &self.server_url,
            &pki.join("ca.crt"),
            &pki.join("admin.crt"),
            &pki.join("admin.key"),
            Some((&user, &groups)),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e:#}", path.display()));
        path
    }

    /// A Node object created at start, for Pods' `spec.nodeName`. Nothing runs on it, but the
    /// EndpointSlice controller skips Pods whose Node does not exist. More nodes:
    /// [`create_node`]. With running pods, the node agent's Node.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The node agent, when the cluster was started with [`ClusterOptions::running_pods`].
    pub fn node_agent(&self) -> Option<&NodeAgent> {
        self.agent.as_ref()
    }

    /// `https://127.0.0.1:<port>`; with running pods `https://10.243.N.1:<port>`, the root
    /// namespace's end of the node veth, which pods and the node namespace reach too.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA that signed the API server's certificate and the client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Names of the Gateway API CRDs installed at start.
    pub fn gateway_api_crds(&self) -> &[String] {
        &self.crds
    }

    /// The directory holding `etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`
    /// (and `kube-scheduler.log`).
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Creates a namespace with a fresh name (`blixt-test-xxxxx`) and waits for its `default`
    /// ServiceAccount (Pods cannot be created before). The guard deletes it when dropped.
    pub async fn temp_namespace(&self) -> TempNamespace {
        let client = self.client();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some("blixt-test-".into()),
                labels: Some([(LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("creating a temporary namespace");
        let name = created.metadata.name.expect("created namespace has a name");
        let guard = TempNamespace {
            name: name.clone(),
            config: self.admin.clone(),
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        poll_until(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(30),
            &[&self.controller_manager],
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await
        .unwrap_or_else(|e| panic!("temporary namespace {name}: {e:#}"));
        guard
    }

    /// Stops every process and removes the directory (or keeps it with `BLIXT_K8S_KEEP`, and
    /// keeps the logs if the calling thread is panicking). Idempotent; called by `Drop`.
    fn shutdown(&self) {
        if let Some(proxy) = &self.proxy {
            proxy.stop();
        }
        if let Some(agent) = &self.agent {
            agent.stop();
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.stop();
        }
        self.controller_manager.stop();
        self.apiserver.stop();
        self.etcd.stop();
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dir) = dir {
            if keep_requested() {
                eprintln!("BLIXT_K8S_KEEP: keeping {}", dir.keep().display());
            } else if std::thread::panicking() {
                if let Some(saved) = preserve_logs(&self.log_dir()) {
                    eprintln!("test cluster logs kept in {}", saved.display());
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A namespace that is deleted (in the background) when the guard drops, even on panic.
#[derive(Debug)]
pub struct TempNamespace {
    name: String,
    config: kube::Config,
}

impl TempNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        if keep_requested() {
            eprintln!("BLIXT_K8S_KEEP: keeping namespace {}", self.name);
            return;
        }
        let name = self.name.clone();
        let config = self.config.clone();
        // Drop cannot await, and may run inside or outside a runtime: delete from a thread with
        // a runtime of its own.
        let result = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let namespaces: Api<Namespace> = Api::all(Client::try_from(config)?);
                namespaces
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok(())
            })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("deleting temporary namespace {}: {e:#}", self.name),
            Err(_) => eprintln!("deleting temporary namespace {} panicked", self.name),
        }
    }
}

/// Makes a Pod look like a kubelet runs it: phase Running, condition Ready (`ready`), and
/// `pod_ip` as its address. Writes the status subresource, as a kubelet does.
pub async fn mark_pod_ready(
    client: &Client,
    namespace: &str,
    pod: &str,
    pod_ip: &str,
    ready: bool,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let status = if ready { "True" } else { "False" };
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{ "ip": pod_ip }],
            "hostIP": "127.0.0.1",
            "hostIPs": [{ "ip": "127.0.0.1" }],
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": "Initialized", "status": "True" },
                { "type": "ContainersReady", "status": status },
                { "type": "Ready", "status": status },
            ],
        }
    });
    pods.patch_status(
        pod,
        &PatchParams::apply("blixt-k8s-harness-kubelet").force(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("setting status of pod {namespace}/{pod}: {e}"));
}

/// Creates (or updates) a Node named `name` with `internal_ip` as its InternalIP address and a
/// Ready condition. Only an API object: there is no kubelet.
pub async fn create_node(client: &Client, name: &str, internal_ip: Ipv4Addr) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                LABEL_MANAGED_BY: FIELD_MANAGER,
            },
        },
    });
    nodes.patch(name, &params, &Patch::Apply(&node)).await?;
    let status = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": internal_ip.to_string() },
                { "type": "Hostname", "address": name },
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "blixt-k8s-harness: an API object only; no kubelet",
            }],
        },
    });
    nodes
        .patch_status(name, &params, &Patch::Apply(&status))
        .await?;
    Ok(())
}

/// A Pod that will never run (there is no kubelet) bound to `node`, for Services to select.
/// Make it look running with [`mark_pod_ready`].
pub fn test_pod(name: &str, labels: &[(&str, &str)], node: &str, port: i32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        },
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "backend",
                "image": "blixt.invalid/never-pulled:0",
                "ports": [{ "containerPort": port, "name": "backend" }],
            }],
        },
    }))
    .expect("a valid Pod")
}

fn service_account_identity(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ],
    )
}

pub(crate) fn keep_requested() -> bool {
    std::env::var_os("BLIXT_K8S_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where cluster directories go: tmpfs, so etcd's fsyncs cost nothing.
fn tmp_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("BLIXT_K8S_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

const DIR_PREFIX: &str = "blixt-k8s-";

/// Removes directories left by test binaries that were killed (named after their pid).
fn sweep_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn preserve_logs(logs: &Path) -> Option<PathBuf> {
    let target = std::env::temp_dir().join(format!(
        "blixt-k8s-logs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    std::fs::create_dir_all(&target).ok()?;
    for entry in std::fs::read_dir(logs).ok()?.flatten() {
        let _ = std::fs::copy(entry.path(), target.join(entry.file_name()));
    }
    Some(target)
}

fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners at once so the ports differ; the kernel will not hand them out again
    // right away after they close.
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .context("reading a bound port")?
            .port();
    }
    Ok(ports)
}

/// Checks that the control plane's binaries and CRDs are built (`tests/k8s/build.sh`) without
/// starting anything, so a long run that needs a cluster later can fail in its first second.
pub fn check_artifacts() -> Result<()> {
    artifacts::Artifacts::locate().map(|_| ())
}

fn start_blocking(options: &ClusterOptions) -> Result<Cluster> {
    let base = tmp_base();
    sweep_stale_dirs(&base);
    let artifacts = artifacts::Artifacts::locate()?;
    if options.running_pods.is_some() {
        artifacts.kube_scheduler()?;
        artifacts.kube_proxy()?;
        anyhow::ensure!(
            blixt_lab::is_root(),
            "a cluster whose pods run needs root: its node agent creates network namespaces, veths and mounts"
        );
    }
    let mut attempt = 1;
    loop {
        match start_once(&artifacts, &base, options) {
            Ok(cluster) => return Ok(cluster),
            // The ports were free when picked; another process may have taken one since.
            Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                tracing::warn!("test cluster start lost a port race, retrying: {e:#}");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn start_once(
    artifacts: &artifacts::Artifacts,
    base: &Path,
    options: &ClusterOptions,
) -> Result<Cluster> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(base)
        .with_context(|| format!("creating the cluster directory in {}", base.display()))?;
    let path = dir.path().to_owned();
    let logs = path.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let result = start_components(artifacts, dir, &path, &logs, options);
    match &result {
        Ok(_) => {
            tracing::info!(elapsed = ?started.elapsed(), dir = %path.display(), "test cluster up")
        }
        Err(_) => {
            if let Some(saved) = preserve_logs(&logs) {
                return result.with_context(|| format!("logs kept in {}", saved.display()));
            }
        }
    }
    result
}

fn start_components(
    artifacts: &artifacts::Artifacts,
    dir: tempfile::TempDir,
    path: &Path,
    logs: &Path,
    options: &ClusterOptions,
) -> Result<Cluster> {
    let running_pods = options.running_pods.is_some();
    // With running pods the node network comes first: the API server listens on its root end,
    // which pods reach (through the `kubernetes` Service and kube-proxy, or directly).
    let network = if running_pods {
        Some(network::NodeNetwork::create().context("building the node network")?)
    } else {
        None
    };
    let api_host: IpAddr = network
        .as_ref()
        .map_or(Ipv4Addr::LOCALHOST, |n| n.root_ips().0)
        .into();
    let extra_sans: Vec<IpAddr> = network.iter().map(|_| api_host).collect();
    let pki = pki::Pki::generate(&path.join("pki"), SERVICE_IP, &extra_sans)?;
    let [etcd_client, etcd_peer, api_port] = free_ports::<3>()?;
    let arg = |k: &str, v: &dyn std::fmt::Display| format!("--{k}={v}");
    let show = |p: &Path| p.display().to_string();

    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    let etcd = Component::start(
        "etcd",
        &artifacts.etcd,
        &[
            arg("name", &"blixt-test"),
            arg("data-dir", &show(&path.join("etcd"))),
            arg("listen-client-urls", &etcd_url),
            arg("advertise-client-urls", &etcd_url),
            arg("listen-peer-urls", &peer_url),
            arg("initial-advertise-peer-urls", &peer_url),
            arg("initial-cluster", &format!("blixt-test={peer_url}")),
            arg("initial-cluster-state", &"new"),
            arg("log-level", &"warn"),
        ],
        logs,
    )?;
    wait_blocking("etcd /health", &[&etcd], || etcd_healthy(etcd_client))?;

    let apiserver = Component::start(
        "kube-apiserver",
        &artifacts.kube_apiserver,
        &[
            arg("etcd-servers", &etcd_url),
            arg("bind-address", &api_host),
            arg("advertise-address", &api_host),
            arg("secure-port", &api_port),
            arg("cert-dir", &show(&path.join("apiserver"))),
            arg("tls-cert-file", &show(&pki.serving_cert)),
            arg("tls-private-key-file", &show(&pki.serving_key)),
            arg("client-ca-file", &show(&pki.ca_cert)),
            arg("authorization-mode", &"RBAC"),
            arg("service-account-issuer", &SA_ISSUER),
            arg("service-account-key-file", &show(&pki.sa_public_key)),
            arg(
                "service-account-signing-key-file",
                &show(&pki.sa_private_key),
            ),
            arg(
                "service-cluster-ip-range",
                &if running_pods {
                    SERVICE_CIDRS_DUAL
                } else {
                    SERVICE_CIDR
                },
            ),
            // Endpoints may not hold loopback addresses, so without running pods the reconciler
            // of the `kubernetes` Service's endpoints could only log errors. With them, the
            // lease reconciler publishes <root end of the node veth>:<port>, where kube-proxy
            // sends 10.96.0.1:443.
            arg(
                "endpoint-reconciler-type",
                &if running_pods { "lease" } else { "none" },
            ),
            // As real clusters (kubeadm) run: the agent DaemonSet may ask for privileges.
            arg("allow-privileged", &"true"),
            arg("profiling", &"false"),
        ],
        logs,
    )?;

    let server_url = format!("https://{api_host}:{api_port}");
    let kubeconfig = path.join("kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &server_url,
        &pki.ca_cert,
        &pki.admin.cert,
        &pki.admin.key,
        None,
    )?;
    let kcm_kubeconfig = path.join("controller-manager.kubeconfig");
    write_kubeconfig(
        &kcm_kubeconfig,
        &server_url,
        &pki.ca_cert,
        &pki.controller_manager.cert,
        &pki.controller_manager.key,
        None,
    )?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a Tokio runtime")?;
    let (admin, crds) = runtime.block_on(async {
        let kubeconfig_yaml = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let admin =
            kube::Config::from_custom_kubeconfig(kubeconfig_yaml, &KubeConfigOptions::default())
                .await
                .context("loading the admin kubeconfig")?;
        let client = Client::try_from(admin.clone()).context("building the admin client")?;
        poll_until(
            "kube-apiserver /readyz",
            START_TIMEOUT,
            &[&apiserver, &etcd],
            || async { Ok(readyz(&client).await.is_ok()) },
        )
        .await?;
        let crds = manifests::install_crds(&client, &artifacts.crd_manifests()?, START_TIMEOUT)
            .await
            .context("installing the Gateway API CRDs")?;
        if !running_pods {
            create_node(&client, NODE_NAME, Ipv4Addr::LOCALHOST)
                .await
                .with_context(|| format!("creating Node {NODE_NAME}"))?;
        }
        anyhow::Ok((admin, crds))
    })?;
    // Before the controllers, so the Node exists when the first Pods are scheduled.
    let agent = match (&options.running_pods, network) {
        (Some(images), Some(network)) => Some(NodeAgent::start(
            admin.clone(),
            AGENT_NODE_NAME,
            images.clone(),
            path.join("pods"),
            network,
        )?),
        _ => None,
    };
    // Once the Node exists (kube-proxy reads its addresses), and before any pod runs.
    let proxy = match &agent {
        Some(agent) => Some(start_kube_proxy(
            artifacts,
            agent,
            &pki,
            &server_url,
            path,
            logs,
            &apiserver,
        )?),
        None => None,
    };
    let controllers = if running_pods {
        format!("{CONTROLLERS},{WORKLOAD_CONTROLLERS}")
    } else {
        CONTROLLERS.to_owned()
    };

    let controller_manager = Component::start(
        "kube-controller-manager",
        &artifacts.kube_controller_manager,
        &[
            arg("kubeconfig", &show(&kcm_kubeconfig)),
            arg("controllers", &controllers),
            arg("use-service-account-credentials", &"true"),
            arg(
                "service-account-private-key-file",
                &show(&pki.sa_private_key),
            ),
            arg("root-ca-file", &show(&pki.ca_cert)),
            arg("leader-elect", &"false"),
            // No health endpoint needed (readiness is observed through the API) and no port to
            // collide on.
            arg("secure-port", &0),
        ],
        logs,
    )?;
    runtime.block_on(async {
        let client = Client::try_from(admin.clone())?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        poll_until(
            "kube-controller-manager (ServiceAccount default/default)",
            START_TIMEOUT,
            &[&controller_manager, &apiserver],
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await
    })?;

    let scheduler = if running_pods {
        let scheduler_kubeconfig = path.join("scheduler.kubeconfig");
        write_kubeconfig(
            &scheduler_kubeconfig,
            &server_url,
            &pki.ca_cert,
            &pki.scheduler.cert,
            &pki.scheduler.key,
            None,
        )?;
        let scheduler = Component::start(
            "kube-scheduler",
            artifacts.kube_scheduler()?,
            &[
                arg("kubeconfig", &show(&scheduler_kubeconfig)),
                arg("leader-elect", &"false"),
                arg("secure-port", &0),
            ],
            logs,
        )?;
        std::thread::sleep(Duration::from_millis(200));
        scheduler.check_running()?;
        Some(scheduler)
    } else {
        None
    };

    Ok(Cluster {
        proxy,
        agent,
        scheduler,
        controller_manager,
        apiserver,
        etcd,
        dir: Mutex::new(Some(dir)),
        path: path.to_owned(),
        server_url,
        kubeconfig,
        admin,
        ca_pem: pki.ca_pem,
        crds,
        node_name: if running_pods {
            AGENT_NODE_NAME
        } else {
            NODE_NAME
        }
        .to_owned(),
    })
}

/// kube-proxy in iptables mode inside the node namespace (`ip netns exec`, which execs it in
/// place, so the Component's pid is kube-proxy's), as `system:kube-proxy`, leaving global
/// sysctls alone; returns once it has programmed the `kubernetes` Service.
fn start_kube_proxy(
    artifacts: &artifacts::Artifacts,
    agent: &NodeAgent,
    pki: &pki::Pki,
    server_url: &str,
    path: &Path,
    logs: &Path,
    apiserver: &Component,
) -> Result<Component> {
    let kubeconfig = path.join("kube-proxy.kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        server_url,
        &pki.ca_cert,
        &pki.kube_proxy.cert,
        &pki.kube_proxy.key,
        None,
    )?;
    let binary = artifacts.kube_proxy()?;
    for tool in [
        "iptables",
        "iptables-restore",
        "ip6tables",
        "ip6tables-restore",
    ] {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        anyhow::ensure!(
            on_path,
            "kube-proxy needs {tool}, which is not on PATH (apt-get install iptables; make test installs it)"
        );
    }
    let mut args = vec![
        "netns".to_owned(),
        "exec".to_owned(),
        agent.node_netns().to_owned(),
        display(binary),
        format!("--kubeconfig={}", display(&kubeconfig)),
        format!("--hostname-override={}", agent.node_name()),
        "--proxy-mode=iptables".to_owned(),
        format!("--cluster-cidr={}", agent.pod_cidrs().join(",")),
        "--detect-local-mode=ClusterCIDR".to_owned(),
        // Leave the machine's conntrack table size and timeouts (global sysctls) alone.
        "--conntrack-max-per-core=0".to_owned(),
        "--conntrack-tcp-timeout-established=0".to_owned(),
        "--conntrack-tcp-timeout-close-wait=0".to_owned(),
        "--oom-score-adj=0".to_owned(),
        // NodePorts on the Node's InternalIPs (the node namespace's eth0), not on every local
        // address.
        "--nodeport-addresses=primary".to_owned(),
        // Inside the node namespace, so no port of the machine is taken.
        "--healthz-bind-address=127.0.0.1:10256".to_owned(),
        "--metrics-bind-address=".to_owned(),
        // Services change quickly in tests.
        "--iptables-min-sync-period=100ms".to_owned(),
        "--v=2".to_owned(),
    ];
    if !agent.bridge_netfilter() {
        // Without br_netfilter, replies between pods on the bridge bypass iptables.
        args.push("--masquerade-all".to_owned());
    }
    let proxy = Component::start("kube-proxy", Path::new("ip"), &args, logs)?;
    let node_netns = agent.node_netns();
    let service_rule = format!("{SERVICE_IP}/32");
    wait_blocking(
        &format!("kube-proxy's rule for the `kubernetes` Service ({service_rule}) in {node_netns}"),
        &[&proxy, apiserver],
        || {
            let rules = std::process::Command::new("ip")
                .args(["netns", "exec", node_netns])
                .args(["iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"])
                .stdin(std::process::Stdio::null())
                .output()?;
            Ok(String::from_utf8_lossy(&rules.stdout).contains(&service_rule))
        },
    )?;
    Ok(proxy)
}

async fn readyz(client: &Client) -> Result<String> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

fn etcd_healthy(port: u16) -> Result<bool> {
    use std::io::{Read as _, Write as _};
    let mut stream = match std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
        Ok(stream) => stream,
        Err(_) => return Ok(false),
    };
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    Ok(response.contains(r#""health":"true""#))
}

/// Polls `check` until it says yes, failing early if one of `components` exits; the first one's
/// log ends the error.
fn wait_blocking(
    what: &str,
    components: &[&Component],
    check: impl Fn() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let component = components.first().context("nothing to wait for")?;
    loop {
        for component in components {
            component.check_running()?;
        }
        if check().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} not ready after {START_TIMEOUT:?}; end of {}:\n{}",
                component.log_path().display(),
                component.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` until it says yes, failing early (with its log) if a component exits.
async fn poll_until<F, Fut>(
    what: &str,
    timeout: Duration,
    components: &[&Component],
    check: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        for component in components {
            component.check_running()?;
        }
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = components
                .iter()
                .map(|c| format!("end of {}:\n{}", c.log_path().display(), c.log_tail(20)))
                .collect();
            return Err(anyhow!(
                "{what} not ready after {timeout:?} (last error: {})\n{}",
                last_error.map_or_else(|| "none".to_owned(), |e| format!("{e:#}")),
                logs.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    impersonate: Option<(&str, &[String])>,
) -> Result<()> {
    let mut user = serde_json::json!({
        "client-certificate": display(cert),
        "client-key": display(key),
    });
    if let Some((name, groups)) = impersonate {
        user["as"] = name.into();
        user["as-groups"] = groups.into();
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "blixt-test", "cluster": {
            "server": server,
            "certificate-authority": display(ca),
        }}],
        "users": [{ "name": "blixt-test", "user": user }],
        "contexts": [{ "name": "blixt-test", "context": {
            "cluster": "blixt-test",
            "user": "blixt-test",
            "namespace": "default",
        }}],
        "current-context": "blixt-test",
    });
    let yaml = serde_yaml::to_string(&config).context("serialising a kubeconfig")?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
