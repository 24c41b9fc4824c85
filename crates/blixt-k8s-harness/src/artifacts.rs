//! Where `tests/k8s/build.sh` leaves the control-plane binaries and the Gateway API CRDs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// The versions file the build script reads too, so both agree on the cache directory.
const VERSIONS_ENV: &str = include_str!("../../../tests/k8s/versions.env");

/// What to run when the artifacts are missing.
pub(crate) const BUILD_HINT: &str = "run tests/k8s/build.sh first (make test does)";

/// The Kubernetes release the harness runs (`KUBERNETES_VERSION` in `tests/k8s/versions.env`).
pub fn kubernetes_version() -> &'static str {
    version_of("KUBERNETES_VERSION")
}

/// The Gateway API release whose standard-channel CRDs are installed.
pub fn gateway_api_version() -> &'static str {
    version_of("GATEWAY_API_VERSION")
}

fn version_of(key: &str) -> &'static str {
    VERSIONS_ENV
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("tests/k8s/versions.env has no {key}"))
}

/// The built artifacts of one Kubernetes version.
#[derive(Debug, Clone)]
pub(crate) struct Artifacts {
    pub(crate) etcd: PathBuf,
    pub(crate) kube_apiserver: PathBuf,
    pub(crate) kube_controller_manager: PathBuf,
    /// Only needed when pods really run (checked by [`Artifacts::kube_scheduler`] and
    /// [`Artifacts::kube_proxy`]).
    kube_scheduler: PathBuf,
    kube_proxy: PathBuf,
    pub(crate) gateway_api_crds: PathBuf,
}

/// The conformance suite's echo-basic backend built by build.sh.
pub(crate) fn echo_basic() -> Result<PathBuf> {
    let path = cache_dir()?.join("echo-basic");
    if !path.is_file() {
        bail!("{} is missing: {BUILD_HINT}", path.display());
    }
    Ok(path)
}

/// `$BLIXT_K8S_CACHE`, else `$XDG_CACHE_HOME/blixt/k8s`, else `$HOME/.cache/blixt/k8s`, then
/// the Kubernetes version: where build.sh puts everything.
fn cache_dir() -> Result<PathBuf> {
    let root = if let Some(dir) = std::env::var_os("BLIXT_K8S_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("blixt/k8s")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache/blixt/k8s")
    } else {
        bail!("cannot find the k8s test binaries: neither BLIXT_K8S_CACHE, XDG_CACHE_HOME nor HOME is set; {BUILD_HINT}")
    };
    Ok(root.join(kubernetes_version()))
}

impl Artifacts {
    /// Finds the cache directory the way build.sh computes it (see `cache_dir`).
    pub(crate) fn locate() -> Result<Self> {
        Self::in_dir(&cache_dir()?)
    }

    fn in_dir(dir: &Path) -> Result<Self> {
        let artifacts = Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kube_scheduler: dir.join("kube-scheduler"),
            kube_proxy: dir.join("kube-proxy"),
            gateway_api_crds: dir.join(format!("gateway-api-{}", gateway_api_version())),
        };
        for binary in [
            &artifacts.etcd,
            &artifacts.kube_apiserver,
            &artifacts.kube_controller_manager,
        ] {
            present(binary)?;
        }
        if !artifacts.gateway_api_crds.join(".complete").is_file() {
            bail!(
                "the Gateway API {} CRDs are missing from {}: {BUILD_HINT}",
                gateway_api_version(),
                artifacts.gateway_api_crds.display()
            );
        }
        Ok(artifacts)
    }

    /// kube-scheduler, which only clusters whose pods run need.
    pub(crate) fn kube_scheduler(&self) -> Result<&Path> {
        present(&self.kube_scheduler)
    }

    /// kube-proxy, which only clusters whose pods run need.
    pub(crate) fn kube_proxy(&self) -> Result<&Path> {
        present(&self.kube_proxy)
    }

    /// The Gateway API manifests, sorted so installation order is stable.
    pub(crate) fn crd_manifests(&self) -> Result<Vec<PathBuf>> {
        let dir = &self.gateway_api_crds;
        let mut files = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
        files.sort();
        if files.is_empty() {
            bail!("no *.yaml in {}: {BUILD_HINT}", dir.display());
        }
        Ok(files)
    }
}

fn present(binary: &Path) -> Result<&Path> {
    if !binary.is_file() {
        bail!("{} is missing: {BUILD_HINT}", binary.display());
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_build_script_file() {
        assert!(kubernetes_version().starts_with("v1."));
        assert!(gateway_api_version().starts_with("v1."));
    }

    #[test]
    fn missing_binaries_name_the_build_script() {
        let empty = tempfile::tempdir().expect("temp dir");
        let err = Artifacts::in_dir(empty.path()).expect_err("empty dir has no binaries");
        assert!(err.to_string().contains(BUILD_HINT), "{err:#}");
    }
}
