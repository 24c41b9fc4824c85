//! Helpers for the tests of `deploy/`: rendering the Helm chart and the kustomize trees with the
//! tools `deploy/tools.sh` builds, and applying the result to the real API server of
//! `blixt-k8s-harness` by server-side apply.
//!
//! The tests themselves are in `tests/`: `render.rs` (no cluster), `apply.rs`, `crd.rs` and
//! `rbac.rs` (against the API server).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;

pub mod tools;

/// Field manager of everything these tests apply.
pub const FIELD_MANAGER: &str = "blixt-deploy-tests";

/// The repository root (this crate is `crates/blixt-deploy-tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `deploy/helm/blixt`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/blixt")
}

/// `deploy/kustomize`.
pub fn kustomize_dir() -> PathBuf {
    repo_root().join("deploy/kustomize")
}

/// Runs a command and returns its stdout, or an error carrying its stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8(output.stdout).context("stdout is not UTF-8")?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// How to render the chart.
#[derive(Debug, Clone)]
pub struct HelmRender {
    pub release: String,
    pub namespace: String,
    /// `--set key=value` pairs, in order.
    pub set: Vec<(String, String)>,
    /// `--values` files, in order (before the `--set` pairs, as helm applies them).
    pub values: Vec<PathBuf>,
}

impl HelmRender {
    pub fn new(namespace: &str) -> Self {
        Self {
            release: "blixt".into(),
            namespace: namespace.into(),
            set: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.set.push((key.into(), value.into()));
        self
    }

    pub fn values(mut self, file: impl Into<PathBuf>) -> Self {
        self.values.push(file.into());
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(tools::helm());
        command
            .arg("template")
            .arg(&self.release)
            .arg(chart_dir())
            .args(["--namespace", &self.namespace, "--include-crds"])
            // Render for the API server the tests run against.
            .args(["--kube-version", blixt_k8s_harness::kubernetes_version()]);
        for file in &self.values {
            command.arg("--values").arg(file);
        }
        for (key, value) in &self.set {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        command
    }

    /// `helm template`; the YAML stream.
    pub fn try_render(&self) -> Result<String> {
        run(&mut self.command())
    }

    /// `helm template`, parsed; panics on failure.
    pub fn render(&self) -> Vec<DynamicObject> {
        let yaml = self
            .try_render()
            .unwrap_or_else(|e| panic!("helm template: {e:#}"));
        parse(&yaml)
    }
}

/// `kustomize build <dir>`, parsed; panics on failure.
pub fn kustomize_build(dir: &Path) -> Vec<DynamicObject> {
    let yaml = run(Command::new(tools::kustomize()).arg("build").arg(dir))
        .unwrap_or_else(|e| panic!("kustomize build {}: {e:#}", dir.display()));
    parse(&yaml)
}

/// Parses a multi-document YAML stream of Kubernetes objects.
pub fn parse(yaml: &str) -> Vec<DynamicObject> {
    blixt_k8s_harness::parse_documents(yaml).unwrap_or_else(|e| panic!("parsing YAML: {e:#}"))
}

/// The kind of an object ("" when it has none).
pub fn kind(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// `Kind/name` (with `namespace/` when namespaced), for messages and comparisons.
pub fn key(object: &DynamicObject) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("");
    match &object.metadata.namespace {
        Some(ns) => format!("{}/{ns}/{name}", kind(object)),
        None => format!("{}/{name}", kind(object)),
    }
}

/// The one object of `kind` named `name`; panics naming what there is otherwise.
pub fn find<'a>(objects: &'a [DynamicObject], kind_: &str, name: &str) -> &'a DynamicObject {
    let mut found = objects
        .iter()
        .filter(|o| kind(o) == kind_ && o.metadata.name.as_deref() == Some(name));
    let object = found.next().unwrap_or_else(|| {
        panic!(
            "no {kind_} {name} among: {:?}",
            objects.iter().map(key).collect::<Vec<_>>()
        )
    });
    assert!(found.next().is_none(), "two {kind_} {name}");
    object
}

/// Objects of `kind`.
pub fn of_kind<'a>(objects: &'a [DynamicObject], kind_: &str) -> Vec<&'a DynamicObject> {
    objects.iter().filter(|o| kind(o) == kind_).collect()
}

/// Converts a rendered object to a typed k8s-openapi one.
pub fn typed<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> T {
    let value = serde_json::to_value(object).expect("an object serialises");
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("{} is not a valid {}: {e}", key(object), kind(object)))
}

/// A name unique to a test, derived from its temporary namespace (`blixt-test-abcde` ->
/// `bt-abcde`), for the chart's `fullnameOverride` so cluster-scoped objects do not collide
/// between tests sharing one API server.
pub fn unique_fullname(namespace: &str) -> String {
    format!(
        "bt-{}",
        namespace.strip_prefix("blixt-test-").unwrap_or(namespace)
    )
}

/// Kinds whose objects are applied before the rest, in this order.
const FIRST: [&str; 2] = ["Namespace", "CustomResourceDefinition"];

/// How [`apply_all`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Persist every object.
    Real,
    /// `dryRun=All` for every object (admission and validation run, nothing is stored), except
    /// Namespaces and CRDs, which the rest need to exist.
    DryRun,
}

/// Applies `objects` by server-side apply (forced, field manager [`FIELD_MANAGER`]):
/// Namespaces, then CRDs (waiting until Established), then the rest in the given order.
/// Returns what the API server answered, per object. The first failure is an error naming the
/// object.
pub async fn apply_all(
    client: &Client,
    objects: &[DynamicObject],
    mode: Mode,
) -> Result<Vec<DynamicObject>> {
    let mut ordered: Vec<&DynamicObject> = Vec::with_capacity(objects.len());
    for first in FIRST {
        ordered.extend(objects.iter().filter(|o| kind(o) == first));
    }
    ordered.extend(objects.iter().filter(|o| !FIRST.contains(&kind(o))));

    let mut applied = Vec::with_capacity(ordered.len());
    let mut crds_ready = false;
    for object in ordered {
        if !crds_ready && !FIRST.contains(&kind(object)) {
            wait_crds_established(client, objects).await?;
            crds_ready = true;
        }
        let dry_run = mode == Mode::DryRun && !FIRST.contains(&kind(object));
        applied.push(
            apply_one(client, object, dry_run)
                .await
                .with_context(|| format!("applying {}", key(object)))?,
        );
    }
    Ok(applied)
}

/// Server-side apply of one object (forced), optionally `dryRun=All`.
pub async fn apply_one(
    client: &Client,
    object: &DynamicObject,
    dry_run: bool,
) -> Result<DynamicObject> {
    let api = api_for(client, object).await?;
    let name = object
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| anyhow!("{} without metadata.name", kind(object)))?;
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// The dynamic API of an object's kind (namespaced to its namespace when the kind is).
pub async fn api_for(client: &Client, object: &DynamicObject) -> Result<Api<DynamicObject>> {
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| anyhow!("object has no apiVersion/kind"))?;
    let gvk = GroupVersionKind::try_from(types)
        .with_context(|| format!("bad apiVersion {:?}", types.api_version))?;
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {}/{}", gvk.api_version(), gvk.kind))?;
    Ok(match (capabilities.scope, &object.metadata.namespace) {
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => bail!("namespaced {} without a namespace", gvk.kind),
    })
}

/// The dynamic API of `gvk`: in `namespace` for namespaced kinds, across all namespaces (or
/// cluster-scoped) with `None`.
pub async fn dynamic_api(
    client: &Client,
    gvk: &GroupVersionKind,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>> {
    let (resource, capabilities) = discovery::pinned_kind(client, gvk)
        .await
        .with_context(|| format!("discovering {}/{}", gvk.api_version(), gvk.kind))?;
    Ok(match (capabilities.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

async fn wait_crds_established(client: &Client, objects: &[DynamicObject]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in objects
        .iter()
        .filter(|o| kind(o) == "CustomResourceDefinition")
    {
        let name = crd.metadata.name.clone().unwrap_or_default();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow!("CRD {name} not Established after 30 s"))?
        .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// Labels Helm adds that a kustomize rendering of the chart drops (`generate.sh`).
pub const HELM_ONLY_LABELS: [&str; 2] = ["app.kubernetes.io/managed-by", "helm.sh/chart"];

/// An object as JSON with Helm's own labels removed, for comparing renderings.
pub fn without_helm_labels(object: &DynamicObject) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("an object serialises");
    strip_labels(&mut value);
    value
}

fn strip_labels(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(labels)) = map.get_mut("labels") {
                for label in HELM_ONLY_LABELS {
                    labels.remove(label);
                }
            }
            for child in map.values_mut() {
                strip_labels(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_labels),
        _ => {}
    }
}

/// Objects keyed by [`key`], for set comparisons.
pub fn by_key(objects: &[DynamicObject]) -> BTreeMap<String, &DynamicObject> {
    let mut map = BTreeMap::new();
    for object in objects {
        assert!(
            map.insert(key(object), object).is_none(),
            "{} twice",
            key(object)
        );
    }
    map
}

/// Polls `check` every 200 ms until it returns `Some`, panicking with `what` and the last
/// value seen after `timeout`. For what the API server applies asynchronously: RBAC and
/// admission-policy caches, CRD discovery.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "{what}: not true after {timeout:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes the cluster-scoped objects of a rendering (ClusterRoles, bindings, admission
/// policies, GatewayClasses, AddressPools), not CRDs, which tests share. Namespaced objects go
/// with their namespace.
pub async fn delete_cluster_scoped(client: &Client, objects: &[DynamicObject]) {
    for object in objects {
        if object.metadata.namespace.is_some()
            || matches!(kind(object), "CustomResourceDefinition" | "Namespace")
        {
            continue;
        }
        let Ok(api) = api_for(client, object).await else {
            continue;
        };
        let name = object.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = api.delete(name, &Default::default()).await {
            eprintln!("cleaning up {}: {e}", key(object));
        }
    }
}
