//! Helpers of the tests that run `blixt controller` against the real API server and agents
//! in network namespaces: guards that clean up, a free port, the root check.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use blixt_k8s_harness::Cluster;
use blixt_stream::{ClientConfig, ClientStatus, Generation, SnapshotClient};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

pub const BLIXT: &str = env!("CARGO_BIN_EXE_blixt");

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (BPF, network namespaces): run as root, as `make test` does");
    }
}

/// A veth from the host namespace into a lab namespace, removed on drop.
pub struct HostLink(pub String);

impl HostLink {
    /// Creates the veth `host_if` in the host namespace, with the address `host_cidr` and up,
    /// and its peer `peer_if` in the namespace `netns` (down, no address).
    pub fn create(host_if: &str, peer_if: &str, netns: &str, host_cidr: &str) -> HostLink {
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", netns,
        ]);
        let link = HostLink(host_if.to_owned());
        ip(&["addr", "add", host_cidr, "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        link
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A `blixt controller` process, killed on drop.
pub struct Controller(pub Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed on drop.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a stream client until its status satisfies `done` (10 s at most, else the status is
/// shown); returns that status and whether any snapshot reached the callback.
pub async fn client_until(
    config: ClientConfig,
    what: &str,
    done: impl Fn(&ClientStatus) -> bool,
) -> (ClientStatus, bool) {
    let client = std::sync::Arc::new(SnapshotClient::new(config).expect("client config"));
    let got = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (client, got) = (client.clone(), got.clone());
        tokio::spawn(async move {
            client
                .run(
                    move |_: Generation| {
                        got.store(true, std::sync::atomic::Ordering::SeqCst);
                        Ok(())
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
        })
    };
    let mut status = client.status();
    let reached = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| done(s)))
        .await
        .is_ok();
    let last = client.status().borrow().clone();
    let _ = stop.send(());
    let _ = task.await;
    assert!(reached, "{what}: not within 30 s; status {last:?}");
    (last, got.load(std::sync::atomic::Ordering::SeqCst))
}

pub fn refused_with(code: &'static str) -> impl Fn(&ClientStatus) -> bool {
    move |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains(&format!("subscribe: {code}")))
    }
}

/// Creates the ServiceAccount `blixt-agent` in `ns` and returns a token of it for the audience
/// `blixt-controller`: an agent's identity, as the controller's `--agent-user` names it.
pub async fn agent_token(cluster: &Cluster, ns: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(cluster.client(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "blixt-agent"}})).unwrap(),
    )
    .await
    .unwrap();
    cluster
        .service_account_token(ns, "blixt-agent", &["blixt-controller"])
        .await
}

/// `blixt controller` against the harness's API server: Lease in `ns` as `identity`, handling
/// the classes of `controller_name`, agents of `ns`'s `blixt-agent` ServiceAccount allowed.
/// Callers add the stream address and the rest.
pub fn controller_command(
    cluster: &Cluster,
    ns: &str,
    identity: &str,
    controller_name: &str,
) -> Command {
    let mut cmd = Command::new(BLIXT);
    cmd.args(["controller", "--kubeconfig"])
        .arg(cluster.kubeconfig_path())
        .args(["--namespace", ns, "--identity", identity])
        .args(["--controller-name", controller_name])
        .args([
            "--agent-user",
            &format!("system:serviceaccount:{ns}:blixt-agent"),
        ])
        .stdout(std::process::Stdio::null());
    cmd
}
