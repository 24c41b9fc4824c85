//! The node agent's Node object: registered with capacity, pod CIDRs and addresses, and kept
//! fresh as a kubelet does: its Lease in `kube-node-lease` renewed and the Ready condition's
//! heartbeat updated every 10 s.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::LABEL_MANAGED_BY;

/// The field manager of everything the node agent writes.
pub(crate) const AGENT_MANAGER: &str = "blixt-node-agent";
const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

/// What the Node reports about itself.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub(crate) name: String,
    pub(crate) pod_cidrs: [String; 2],
    pub(crate) host_ips: (Ipv4Addr, Ipv6Addr),
    registered: Time,
}

impl NodeInfo {
    pub(crate) fn new(name: &str, pod_cidrs: [String; 2], host_ips: (Ipv4Addr, Ipv6Addr)) -> Self {
        Self {
            name: name.to_owned(),
            pod_cidrs,
            host_ips,
            registered: now(),
        }
    }
}

pub(crate) fn now() -> Time {
    Time(Timestamp::now())
}

/// Creates (or takes over) the Node, then reports its status and renews its Lease once.
pub(crate) async fn register(client: &Client, node: &NodeInfo) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(),
                LABEL_MANAGED_BY: AGENT_MANAGER,
            },
        },
        "spec": { "podCIDR": node.pod_cidrs[0], "podCIDRs": node.pod_cidrs },
    });
    nodes
        .patch(
            &node.name,
            &PatchParams::apply(AGENT_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("registering Node {}", node.name))?;
    beat(client, node).await?;
    // The API server taints new Nodes not-ready; the node-lifecycle controller, which does not
    // run here, would lift the taint once the Node reports Ready. The agent does it instead.
    let current = nodes.get(&node.name).await.context("reading the Node")?;
    let taints: Vec<_> = current
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != "node.kubernetes.io/not-ready")
        .collect();
    nodes
        .patch(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "taints": taints } })),
        )
        .await
        .context("removing the not-ready taint")?;
    Ok(())
}

/// Renews the Lease and the Ready condition every 10 s until cancelled.
pub(crate) async fn heartbeat(client: Client, node: NodeInfo, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        if let Err(e) = beat(&client, &node).await {
            tracing::warn!(node = %node.name, "node heartbeat: {e:#}");
        }
    }
}

async fn beat(client: &Client, node: &NodeInfo) -> Result<()> {
    let params = PatchParams::apply(AGENT_MANAGER).force();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": node.name },
        "spec": {
            "holderIdentity": node.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    leases
        .patch(&node.name, &params, &Patch::Apply(&lease))
        .await
        .context("renewing the node Lease")?;

    let nodes: Api<Node> = Api::all(client.clone());
    let resources = serde_json::json!({
        "cpu": std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
        "memory": memory(),
        "pods": "110",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now(),
            "lastTransitionTime": node.registered,
        })
    };
    let status = serde_json::json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", "True", "KubeletReady", "blixt-k8s-harness node agent is posting ready status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "not measured"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "not measured"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "not measured"),
                condition("NetworkUnavailable", "False", "RouteCreated", "routes via the node namespace"),
            ],
            "addresses": [
                { "type": "InternalIP", "address": node.host_ips.0.to_string() },
                { "type": "InternalIP", "address": node.host_ips.1.to_string() },
                { "type": "Hostname", "address": node.name },
            ],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 0 } },
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "osImage": "blixt-k8s-harness node agent (processes in network namespaces)",
                "containerRuntimeVersion": concat!("blixt-k8s-harness://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": crate::kubernetes_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch(),
            },
        },
    });
    // A JSON merge patch: server-side apply keys addresses by type and refuses two InternalIPs.
    nodes
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("reporting the Node status")?;
    Ok(())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// MemTotal, as a Kubernetes quantity.
fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|kib| format!("{kib}Ki"))
        })
        .unwrap_or_else(|| "1Gi".to_owned())
}
