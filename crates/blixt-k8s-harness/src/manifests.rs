//! Server-side apply of multi-document YAML manifests, the way `kubectl apply --server-side`
//! does it: every document is resolved through discovery and applied with one field manager.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;
use serde::Deserialize as _;

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "blixt-k8s-harness";

/// Parses every non-empty document of a YAML stream.
pub fn parse_documents(yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("document {index} is not valid YAML"))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value)
            .with_context(|| format!("document {index} is not a Kubernetes object"))?;
        objects.push(object);
    }
    Ok(objects)
}

/// Applies one object by server-side apply (forcing ownership, as an installer does). The
/// object's namespace, if any, is used for namespaced kinds.
pub async fn apply(client: &Client, object: &DynamicObject) -> Result<DynamicObject> {
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| anyhow!("object has no apiVersion/kind"))?;
    let gvk = GroupVersionKind::try_from(types)
        .with_context(|| format!("bad apiVersion {:?}", types.api_version))?;
    let name = object
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| anyhow!("{} without metadata.name", gvk.kind))?;
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {}/{}", gvk.api_version(), gvk.kind))?;
    let api: Api<DynamicObject> = match (capabilities.scope, &object.metadata.namespace) {
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => bail!("namespaced {} {name} has no namespace", gvk.kind),
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("applying {} {name}", gvk.kind))
}

/// Applies the Gateway API manifests (CRDs first, then the rest, such as the upgrade-guard
/// admission policy) and waits until every CRD is Established.
pub(crate) async fn install_crds(
    client: &Client,
    files: &[impl AsRef<Path>],
    timeout: Duration,
) -> Result<Vec<String>> {
    let mut objects = Vec::new();
    for file in files {
        let file = file.as_ref();
        let yaml =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        objects
            .extend(parse_documents(&yaml).with_context(|| format!("parsing {}", file.display()))?);
    }
    let is_crd = |o: &DynamicObject| {
        o.types
            .as_ref()
            .is_some_and(|t| t.kind == "CustomResourceDefinition")
    };
    let (crds, others): (Vec<_>, Vec<_>) = objects.into_iter().partition(is_crd);
    let mut names = Vec::new();
    for crd in &crds {
        apply(client, crd).await?;
        names.push(crd.metadata.name.clone().unwrap_or_default());
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        tokio::time::timeout(
            timeout,
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow!("CRD {name} not Established after {timeout:?}"))?
        .with_context(|| format!("watching CRD {name}"))?;
    }
    for other in &others {
        apply(client, other).await?;
    }
    Ok(names)
}
