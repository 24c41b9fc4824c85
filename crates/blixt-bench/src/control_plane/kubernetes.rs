//! The controller's memory with N routes and N x E endpoints in a real API server: a control
//! plane of its own (blixt-k8s-harness: kube-apiserver and etcd), the objects of
//! [`super::manifests`] created by server-side apply, then a real `blixt controller` process
//! started against it. Once it has written the status of the last Gateway and the last route
//! (it has read and translated everything), its resident memory is read from /proc.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blixt_k8s_harness::{apply, parse_documents, Cluster};
use blixt_lab::netns::NetNs;
use blixt_lab::process::LabProcess;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};

use super::manifests::{Layout, PER_FILE};
use super::standalone::Rss;

/// Requests in flight while creating objects.
const PARALLEL: usize = 16;
/// Pause after each change of the Kubernetes path before the next.
const CHANGE_SPACING: Duration = Duration::from_millis(250);
/// How long no Gateway or TCPRoute may be written before the changes start.
const QUIET: Duration = Duration::from_secs(2);
/// How long the controller may take to reach the last route.
const SETTLE: Duration = Duration::from_secs(900);

/// What the run measured.
#[derive(Debug, Clone)]
pub struct ControllerRun {
    pub routes: usize,
    pub objects: usize,
    /// Creating every object, seconds.
    pub create_s: f64,
    /// Controller start → the last route's status written, seconds.
    pub settle_s: f64,
    pub rss: Rss,
}

fn has_status(obj: &DynamicObject, want: &str) -> bool {
    obj.data
        .get("status")
        .map(|s| s.to_string().contains(want))
        .unwrap_or(false)
}

/// Measures the controller with `routes` routes of `endpoints` endpoints each.
pub fn run(blixt: &Path, routes: usize, endpoints: usize) -> Result<ControllerRun> {
    let populated = Populated::create(routes, endpoints)?;
    let (settle_s, rss) = populated.measure(blixt, &[])?;
    Ok(ControllerRun {
        routes,
        objects: populated.objects,
        create_s: populated.create_s,
        settle_s,
        rss,
    })
}

/// A control plane holding the objects of [`Layout`], ready for controllers to be measured
/// against (one at a time).
pub struct Populated {
    layout: Layout,
    /// Objects created.
    pub objects: usize,
    /// Creating every object, seconds.
    pub create_s: f64,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
    /// Last so the API server outlives the client.
    cluster: Cluster,
}

impl std::fmt::Debug for Populated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Populated")
            .field("routes", &self.layout.routes)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

impl Populated {
    /// Starts a control plane and creates `routes` routes of `endpoints` endpoints each.
    pub fn create(routes: usize, endpoints: usize) -> Result<Populated> {
        let cluster = Cluster::try_start().context("starting a Kubernetes control plane")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let layout = Layout {
            routes,
            endpoints,
            pin_dir: "/unused".into(),
        };
        let targets: Vec<usize> = (0..routes).collect();
        let mut first = parse_documents(&layout.gateways_yaml())?;
        let mut rest = Vec::new();
        for chunk in 0..routes.div_ceil(PER_FILE) {
            rest.extend(parse_documents(&layout.services_yaml(chunk))?);
            rest.extend(parse_documents(&layout.routes_yaml(chunk, &targets))?);
        }
        let objects = first.len() + rest.len();

        let client = rt.block_on(async { cluster.client() });
        let started = Instant::now();
        rt.block_on(async {
            // the class and Gateways first, so discovery is warm and the routes find them
            for o in first.drain(..) {
                apply(&client, &o).await?;
            }
            let mut set = tokio::task::JoinSet::new();
            for o in rest {
                while set.len() >= PARALLEL {
                    set.join_next().await.expect("non-empty")??;
                }
                let c = client.clone();
                set.spawn(async move { apply(&c, &o).await.map(|_| ()) });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            anyhow::Ok(())
        })
        .context("creating the objects")?;
        Ok(Populated {
            layout,
            objects,
            create_s: started.elapsed().as_secs_f64(),
            client,
            rt,
            cluster,
        })
    }

    fn api(&self, kind: &str) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            kind,
        ));
        Api::namespaced_with(self.client.clone(), "default", &resource)
    }

    fn last_gateway(&self) -> String {
        format!("gw{}", self.layout.gateways() - 1)
    }

    fn last_route(&self) -> String {
        format!("r{}", self.layout.routes - 1)
    }

    /// Waits until `controller` (started at `started`) has written the status of the last
    /// Gateway and the last route: it has read and translated everything.
    fn wait_for_statuses(&self, controller: &mut LabProcess, started: Instant) -> Result<()> {
        let (gateways, tcp_routes) = (self.api("Gateway"), self.api("TCPRoute"));
        let (last_gw, last_route) = (self.last_gateway(), self.last_route());
        self.rt.block_on(async {
            loop {
                if let Some(status) = controller.try_wait()? {
                    bail!("blixt controller exited ({status})");
                }
                let gw = gateways.get(&last_gw).await?;
                let route = tcp_routes.get(&last_route).await?;
                if has_status(&gw, "Programmed") && has_status(&route, "Accepted") {
                    return Ok(());
                }
                if started.elapsed() > SETTLE {
                    bail!("no status on {last_gw} and {last_route} after {SETTLE:?}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// Waits until no Gateway or TCPRoute has been written for [`QUIET`]: the controller's
    /// writes that follow its first pass (the statuses of every route, each Gateway's
    /// `Programmed` once the agent acked) and their watch echoes are over, so the changes
    /// meet a controller in its steady state rather than the tail of its start.
    fn wait_quiet(&self, controller: &mut LabProcess, started: Instant) -> Result<()> {
        let kinds = [self.api("Gateway"), self.api("TCPRoute")];
        self.rt.block_on(async {
            let mut last: Option<(u64, Instant)> = None;
            loop {
                if let Some(status) = controller.try_wait()? {
                    bail!("blixt controller exited ({status})");
                }
                // the newest write to any of them: the largest resourceVersion of their items
                let mut newest = 0u64;
                for api in &kinds {
                    for o in api.list_metadata(&ListParams::default()).await?.items {
                        let rv = o.metadata.resource_version.unwrap_or_default();
                        newest = newest.max(rv.parse().unwrap_or(0));
                    }
                }
                match last {
                    Some((rv, since)) if rv == newest => {
                        if since.elapsed() >= QUIET {
                            return Ok(());
                        }
                    }
                    _ => last = Some((newest, Instant::now())),
                }
                if started.elapsed() > SETTLE {
                    bail!("Gateways and TCPRoutes still written after {SETTLE:?}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }

    /// Starts `blixt controller` (with `env` added), waits until it has written the status of
    /// the last Gateway and the last route, and returns that wait (seconds) and its memory.
    /// A controller measured before has written those statuses already: they are cleared
    /// first, so the wait is for this controller's own pass.
    pub fn measure(&self, blixt: &Path, env: &[(String, String)]) -> Result<(f64, Rss)> {
        let (gateways, tcp_routes) = (self.api("Gateway"), self.api("TCPRoute"));
        let (last_gw, last_route) = (self.last_gateway(), self.last_route());
        self.rt
            .block_on(async {
                gateways
                    .patch_status(
                        &last_gw,
                        &PatchParams::default(),
                        &Patch::Merge(
                            serde_json::json!({"status": {"conditions": [], "listeners": []}}),
                        ),
                    )
                    .await?;
                tcp_routes
                    .patch_status(
                        &last_route,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"status": {"parents": []}})),
                    )
                    .await?;
                anyhow::Ok(())
            })
            .context("clearing the statuses the controller is waited on")?;

        let mut cmd = Command::new(blixt);
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path())
            .args(["--namespace", "default", "--identity", "bench"])
            .args(["--grpc-address", "none", "--metrics-address", "none"])
            .args(["--static-address-range", super::manifests::STATIC_RANGE])
            .env("RUST_LOG", "error")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let mut controller = LabProcess::spawn("blixt controller (control-plane suite)", cmd)?;
        self.wait_for_statuses(&mut controller, started)?;
        let settle_s = started.elapsed().as_secs_f64();
        // what it keeps once settled, not only the peak of the first pass
        std::thread::sleep(Duration::from_secs(2));
        let rss = Rss::of(controller.id())?;
        controller.terminate(Duration::from_secs(5))?;
        Ok((settle_s, rss))
    }
}

/// Route change → programmed through the Kubernetes path, at one size.
#[derive(Debug, Clone)]
pub struct ChangeRun {
    pub routes: usize,
    /// Each change: the patch request sent → the agent's frontend flipped, milliseconds.
    pub changes_ms: Vec<f64>,
    /// Controller and agent started → the last route programmed in the agent's maps, seconds.
    pub first_programmed_s: f64,
    /// The agent after the changes.
    pub agent_rss: Rss,
}

/// The agent's node: a network namespace joined to this one by a veth pair (the controller's
/// stream is served on the host end's address), its pins and token. Dropping it removes the
/// pins and files, then the namespace, and with it both ends of the veth pair.
struct AgentNode {
    host_ip: String,
    agent_if: String,
    pins: std::path::PathBuf,
    dir: std::path::PathBuf,
    ns: NetNs,
}

impl AgentNode {
    fn create() -> Result<AgentNode> {
        let ns = NetNs::new("bkcp")?;
        let id = std::process::id();
        let octet = 1 + id % 250;
        let (host_if, agent_if) = (format!("bkcp{id}h"), format!("bkcp{id}a"));
        let node = AgentNode {
            host_ip: format!("10.97.{octet}.1"),
            agent_if,
            pins: format!("/sys/fs/bpf/blixt-bench-k8s-{id}").into(),
            dir: std::env::temp_dir().join(format!("blixt-bench-k8s-{id}")),
            ns,
        };
        std::fs::create_dir_all(&node.dir)
            .with_context(|| format!("creating {}", node.dir.display()))?;
        let host_ip = |args: &[&str]| -> Result<()> {
            let status = Command::new("ip")
                .args(args)
                .status()
                .context("running ip")?;
            anyhow::ensure!(status.success(), "ip {} failed ({status})", args.join(" "));
            Ok(())
        };
        host_ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &node.agent_if,
            "netns",
            node.ns.name(),
        ])?;
        host_ip(&[
            "addr",
            "add",
            &format!("{}/30", node.host_ip),
            "dev",
            &host_if,
        ])?;
        host_ip(&["link", "set", &host_if, "up"])?;
        let agent_ip = format!("10.97.{octet}.2/30");
        node.ns
            .ip(&["addr", "add", &agent_ip, "dev", &node.agent_if])?;
        node.ns.ip(&["link", "set", &node.agent_if, "up"])?;
        Ok(node)
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on `addr`.
fn free_port(addr: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0)).with_context(|| format!("binding {addr}:0"))?;
    Ok(l.local_addr()?.port())
}

impl Populated {
    /// Starts `blixt controller` serving its snapshot stream and a `blixt agent` subscribed
    /// to it, waits until the agent has programmed every route, then makes `changes` route
    /// changes: each a merge patch of one TCPRoute's backendRef, timed from just before the
    /// request until the agent's pinned frontend entry points at a new ring (which must serve
    /// the new Service).
    pub fn route_changes(&self, blixt: &Path, changes: usize) -> Result<ChangeRun> {
        let layout = &self.layout;
        let node = AgentNode::create()?;
        let account = parse_documents(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: blixt-bench-agent\n  \
             namespace: default\n",
        )?;
        let token = self.rt.block_on(async {
            for o in &account {
                apply(&self.client, o)
                    .await
                    .context("creating the agent's ServiceAccount")?;
            }
            anyhow::Ok(
                self.cluster
                    .service_account_token("default", "blixt-bench-agent", &["blixt-controller"])
                    .await,
            )
        })?;
        let token_file = node.dir.join("token");
        std::fs::write(&token_file, token).context("writing the agent's token")?;

        let grpc = format!("{}:{}", node.host_ip, free_port(&node.host_ip)?);
        let mut cmd = Command::new(blixt);
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path())
            .args(["--namespace", "default", "--identity", "bench-changes"])
            .args(["--grpc-address", &grpc, "--metrics-address", "none"])
            .args(["--static-address-range", super::manifests::STATIC_RANGE])
            .args([
                "--agent-user",
                "system:serviceaccount:default:blixt-bench-agent",
            ])
            .env("RUST_LOG", "error");
        let started = Instant::now();
        let mut controller = LabProcess::spawn("blixt controller (route changes)", cmd)?;

        let mut cmd = Command::new(blixt);
        cmd.args(["agent", "--controller", &format!("http://{grpc}")])
            .args(["--node-name", "bench-node", "--token-file"])
            .arg(&token_file)
            .args(["--snat-v4", &super::manifests::SNAT.to_string()])
            .arg("--pin-dir")
            .arg(&node.pins)
            .args(["--metrics-address", "none", "-i", &node.agent_if])
            .args(["--max-frontends", &layout.max_frontends().to_string()])
            .args(["--max-backends", &layout.max_backends().to_string()])
            .args(["--conntrack-entries", "1024"])
            .env("RUST_LOG", "error");
        // in the namespace, but with the host's /sys/fs/bpf for its pins
        let mut agent = node
            .ns
            .spawn_netns_only("blixt agent (route changes)", cmd)?;

        // every route programmed: the last route's frontend is in the agent's maps
        let last = layout.routes - 1;
        let mut last_error = None;
        let watch = loop {
            for (what, p) in [("controller", &mut controller), ("agent", &mut agent)] {
                if let Some(status) = p.try_wait()? {
                    bail!("blixt {what} exited ({status}) before programming the routes");
                }
            }
            // the agent pins its maps one by one: until it is done, opening them may fail
            match super::standalone::Watch::open(&node.pins)
                .and_then(|w| Ok(w.frontend(layout, last)?.map(|_| w)))
            {
                Ok(Some(w)) => break w,
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            if started.elapsed() > SETTLE {
                let why = last_error.map_or(String::new(), |e| format!(" (last: {e:#})"));
                bail!("the agent had not programmed route r{last} after {SETTLE:?}{why}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let first_programmed_s = started.elapsed().as_secs_f64();
        // the first pass's statuses written too (the controller writes them after publishing
        // the snapshot): changes then meet a controller in its steady state
        self.wait_for_statuses(&mut controller, started)?;
        self.wait_quiet(&mut controller, started)?;
        let routes_api = self.api("TCPRoute");

        let mut targets: Vec<usize> = (0..layout.routes).collect();
        let mut changes_ms = Vec::with_capacity(changes);
        for i in 0..changes {
            let r = super::standalone::changed_route(i, layout.routes);
            super::standalone::switch_target(&mut targets, r);
            let before = watch
                .frontend(layout, r)?
                .with_context(|| format!("route r{r} has no frontend before the change"))?
                .ring;
            let patch = serde_json::json!({"spec": {"rules": [{"backendRefs": [
                {"name": format!("svc{}", targets[r]), "port": super::manifests::BACKEND_PORT}
            ]}]}});
            let t0 = Instant::now();
            self.rt
                .block_on(routes_api.patch(
                    &format!("r{r}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ))
                .with_context(|| format!("patching TCPRoute r{r}"))?;
            let took = watch
                .await_flip(layout, r, before, t0)
                .with_context(|| format!("Kubernetes change {i}"))?;
            watch
                .check_serves(layout, r, targets[r])
                .with_context(|| format!("Kubernetes change {i}"))?;
            changes_ms.push(took.as_secs_f64() * 1000.0);
            // one change at a time: the controller starts a pass at most every 100 ms (the
            // echoes of the statuses it writes for this change are translated later)
            std::thread::sleep(CHANGE_SPACING);
        }
        let agent_rss = Rss::of(agent.id())?;
        agent.terminate(Duration::from_secs(10))?;
        controller.terminate(Duration::from_secs(10))?;
        Ok(ChangeRun {
            routes: layout.routes,
            changes_ms,
            first_programmed_s,
            agent_rss,
        })
    }
}
