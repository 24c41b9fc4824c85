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
use blixt_lab::process::LabProcess;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::manifests::{Layout, PER_FILE};
use super::standalone::Rss;

/// Requests in flight while creating objects.
const PARALLEL: usize = 16;
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
            .env("RUST_LOG", "error")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let mut controller = LabProcess::spawn("blixt controller (control-plane suite)", cmd)?;
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
        })?;
        let settle_s = started.elapsed().as_secs_f64();
        // what it keeps once settled, not only the peak of the first pass
        std::thread::sleep(Duration::from_secs(2));
        let rss = Rss::of(controller.id())?;
        controller.terminate(Duration::from_secs(5))?;
        Ok((settle_s, rss))
    }
}
