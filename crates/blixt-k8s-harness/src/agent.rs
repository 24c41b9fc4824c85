//! The node agent: a kubelet stand-in on a thread of its own. It registers a Node, keeps it
//! fresh, serves the cluster DNS (`dns.rs`), watches the Pods bound to it and runs a worker per
//! Pod (`pods.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dns::{ClusterView, DnsServer};
use crate::images::ImageTable;
use crate::network::NodeNetwork;
use crate::node::{self, NodeInfo};

/// What workers share.
pub(crate) struct AgentContext {
    pub(crate) client: Client,
    pub(crate) node: NodeInfo,
    pub(crate) network: Arc<NodeNetwork>,
    pub(crate) images: ImageTable,
    /// `<cluster dir>/pods`: one directory per pod (volumes, logs, overlay layers).
    pub(crate) dir: PathBuf,
    pub(crate) registry: Registry,
    pub(crate) cancel: CancellationToken,
    /// Services and EndpointSlices: DNS answers and Service environment variables.
    pub(crate) view: ClusterView,
    /// The cluster DNS server's address, the `nameserver` of pods' `resolv.conf`.
    pub(crate) dns: IpAddr,
    /// The host's `/etc/resolv.conf` (for `dnsPolicy: Default` with `dnsConfig`, and its
    /// search domains).
    pub(crate) host_resolv_conf: String,
}

/// How long the first list of Services and EndpointSlices may take.
const START_WATCHES: std::time::Duration = std::time::Duration::from_secs(30);

/// The pods that have a sandbox, by (namespace, name).
pub(crate) type Registry = Arc<Mutex<BTreeMap<(String, String), PodRecord>>>;

#[derive(Debug, Clone)]
pub(crate) struct PodRecord {
    pub(crate) uid: String,
    pub(crate) netns: Option<String>,
    pub(crate) dir: PathBuf,
}

/// A kubelet stand-in that runs the Pods bound to its Node as processes (see the crate docs
/// for what it emulates). Started by [`crate::Cluster::start_with`] with
/// [`crate::ClusterOptions::running_pods`]; stopped with the cluster, which kills every pod
/// process and deletes every namespace and veth it made.
#[derive(Debug)]
pub struct NodeAgent {
    node: NodeInfo,
    node_netns: String,
    root_link: String,
    dns: SocketAddr,
    bridge_netfilter: bool,
    network: Mutex<Option<Arc<NodeNetwork>>>,
    registry: Registry,
    cancel: CancellationToken,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl NodeAgent {
    /// Registers the Node of `network` (made before the API server, which listens on its root
    /// end), starts the cluster DNS server there, and starts watching the Node's Pods.
    pub(crate) fn start(
        config: kube::Config,
        name: &str,
        images: ImageTable,
        dir: PathBuf,
        network: NodeNetwork,
    ) -> Result<Self> {
        let network = Arc::new(network);
        let node = NodeInfo::new(name, network.pod_cidrs(), network.host_ips());
        let dns_server = DnsServer::bind(network.root_ips().0.into())?;
        let dns = dns_server.address();
        let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let registry = Registry::default();
        let cancel = CancellationToken::new();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (node, network, registry, cancel) = (
                node.clone(),
                network.clone(),
                registry.clone(),
                cancel.clone(),
            );
            std::thread::Builder::new()
                .name("k8s-node-agent".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("k8s-node-agent-rt")
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let client = match Client::try_from(config) {
                            Ok(client) => client,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                                return;
                            }
                        };
                        if let Err(e) = node::register(&client, &node).await {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                        // Pods start with their Service variables, and resolve from the start.
                        let view = ClusterView::start(&client, &cancel);
                        if let Err(e) = view.wait_until_ready(START_WATCHES).await {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                        let dns_task = tokio::spawn(dns_server.serve(view.clone(), cancel.clone()));
                        let _ = ready_tx.send(Ok(()));
                        let heartbeat = tokio::spawn(node::heartbeat(
                            client.clone(),
                            node.clone(),
                            cancel.clone(),
                        ));
                        let ctx = Arc::new(AgentContext {
                            client,
                            node,
                            network,
                            images,
                            dir,
                            registry,
                            cancel,
                            view,
                            dns: dns.ip(),
                            host_resolv_conf,
                        });
                        watch_pods(ctx).await;
                        let _ = heartbeat.await;
                        match dns_task.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => eprintln!("blixt-k8s-harness: cluster DNS server: {e:#}"),
                            Err(e) => eprintln!("blixt-k8s-harness: cluster DNS server: {e}"),
                        }
                    });
                })
                .context("spawning the node agent thread")?
        };
        let agent = Self {
            node_netns: network.ns().name().to_owned(),
            root_link: network.root_link().to_owned(),
            dns,
            bridge_netfilter: network.bridge_netfilter(),
            node,
            network: Mutex::new(Some(network)),
            registry,
            cancel,
            thread: Mutex::new(Some(thread)),
        };
        ready_rx
            .recv()
            .context("the node agent thread ended before registering the Node")??;
        Ok(agent)
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.node.name
    }

    /// The node's network namespace (`ip netns exec <it> ...`): hostNetwork pods run there.
    pub fn node_netns(&self) -> &str {
        &self.node_netns
    }

    /// The root namespace's end of the veth to the node namespace; the pod CIDRs are routed
    /// through it.
    pub fn root_link(&self) -> &str {
        &self.root_link
    }

    /// The cluster DNS server (`<root end of the node veth>:53`, UDP and TCP): the `nameserver`
    /// of pods with `dnsPolicy: ClusterFirst` (or `ClusterFirstWithHostNet`). It answers
    /// `cluster.local` names only (see the crate docs).
    pub fn dns_server(&self) -> SocketAddr {
        self.dns
    }

    pub(crate) fn bridge_netfilter(&self) -> bool {
        self.bridge_netfilter
    }

    /// `[IPv4, IPv6]` pod CIDRs (the Node's `spec.podCIDRs`).
    pub fn pod_cidrs(&self) -> &[String; 2] {
        &self.node.pod_cidrs
    }

    /// The Node's InternalIPs: the node namespace's addresses.
    pub fn host_ips(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.node.host_ips
    }

    /// The network namespace of a running pod (`None` for hostNetwork pods and pods the agent
    /// does not run).
    pub fn pod_netns(&self, namespace: &str, name: &str) -> Option<String> {
        self.record(namespace, name).and_then(|r| r.netns)
    }

    /// What a container of a running pod wrote to stdout and stderr (all its runs).
    pub fn pod_log(&self, namespace: &str, name: &str, container: &str) -> Option<String> {
        crate::pods::read_log(&self.record(namespace, name)?.dir, container)
    }

    fn record(&self, namespace: &str, name: &str) -> Option<PodRecord> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Kills every pod process, removes the pod namespaces, then the node's. Idempotent.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                eprintln!("blixt-k8s-harness: the node agent thread panicked");
            }
        }
        drop(
            self.network
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

struct WorkerHandle {
    updates: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches the Pods bound to the node and feeds one worker per pod; on cancellation waits for
/// every worker to clean up.
async fn watch_pods(ctx: Arc<AgentContext>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node.name));
    let mut events = watcher::watcher(pods, config).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            () = ctx.cancel.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                listed.insert(uid.clone());
                match workers.get(&uid).filter(|w| !w.task.is_finished()) {
                    Some(worker) => {
                        worker.updates.send_replace(Some(pod));
                    }
                    None => {
                        let (updates, receiver) = watch::channel(Some(pod));
                        let task = tokio::spawn(crate::pods::run(ctx.clone(), receiver));
                        workers.insert(uid, WorkerHandle { updates, task });
                    }
                }
            }
            Some(Ok(Event::Delete(pod))) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(worker) = workers.get(&uid) {
                    worker.updates.send_replace(None);
                }
            }
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitDone)) => {
                for (uid, worker) in &workers {
                    if !listed.contains(uid) {
                        worker.updates.send_replace(None);
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(node = %ctx.node.name, "watching pods: {e}"),
            None => break,
        }
        workers.retain(|_, w| !w.task.is_finished());
    }
    for (_, worker) in workers {
        let _ = worker.task.await;
    }
}
