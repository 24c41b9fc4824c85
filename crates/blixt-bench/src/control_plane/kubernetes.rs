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
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

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
    let create_s = started.elapsed().as_secs_f64();

    let mut cmd = Command::new(blixt);
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["--namespace", "default", "--identity", "bench"])
        .args(["--grpc-address", "none", "--metrics-address", "none"])
        .env("RUST_LOG", "error");
    let started = Instant::now();
    let mut controller = LabProcess::spawn("blixt controller (control-plane suite)", cmd)?;
    let gvk = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            kind,
        ))
    };
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("Gateway"));
    let tcp_routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("TCPRoute"));
    let last_gw = format!("gw{}", layout.gateways() - 1);
    let last_route = format!("r{}", routes - 1);
    rt.block_on(async {
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
    drop(client);
    drop(rt);
    drop(cluster);
    Ok(ControllerRun {
        routes,
        objects,
        create_s,
        settle_s,
        rss,
    })
}
