//! Where `deploy/tools.sh` caches helm and kustomize. Computed the way the script does, from
//! the same versions file, so both agree.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The versions file the script reads too.
const TOOLS_ENV: &str = include_str!("../../../deploy/tools.env");

/// What to run when a tool is missing.
pub const BUILD_HINT: &str = "run deploy/tools.sh first (make test does)";

/// The pinned version of `HELM_VERSION` or `KUSTOMIZE_VERSION` in `deploy/tools.env`.
pub fn version_of(key: &str) -> &'static str {
    TOOLS_ENV
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("deploy/tools.env has no {key}"))
}

/// `$BLIXT_TOOLS_CACHE`, else `$XDG_CACHE_HOME/blixt/tools`, else `$HOME/.cache/blixt/tools`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BLIXT_TOOLS_CACHE") {
        Ok(PathBuf::from(dir))
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        Ok(PathBuf::from(dir).join("blixt/tools"))
    } else if let Some(home) = std::env::var_os("HOME") {
        Ok(PathBuf::from(home).join(".cache/blixt/tools"))
    } else {
        bail!("cannot find the deploy tools: neither BLIXT_TOOLS_CACHE, XDG_CACHE_HOME nor HOME is set; {BUILD_HINT}")
    }
}

/// The cached binary `name` (`helm`, `kustomize`) of `version` under `root`, or an error that
/// says how to build it.
pub fn locate_in(root: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let path = root.join(format!("{name}-{version}")).join(name);
    if !path.is_file() {
        bail!(
            "{name} {version} is missing ({}): {BUILD_HINT}",
            path.display()
        );
    }
    Ok(path)
}

fn locate(name: &str, key: &str) -> PathBuf {
    cache_root()
        .and_then(|root| locate_in(&root, name, version_of(key)))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The cached helm; panics with [`BUILD_HINT`] when missing.
pub fn helm() -> PathBuf {
    locate("helm", "HELM_VERSION")
}

/// The cached kustomize; panics with [`BUILD_HINT`] when missing.
pub fn kustomize() -> PathBuf {
    locate("kustomize", "KUSTOMIZE_VERSION")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned() {
        assert!(version_of("HELM_VERSION").starts_with("v3."));
        assert!(version_of("KUSTOMIZE_VERSION").starts_with("v5."));
    }

    #[test]
    fn a_missing_tool_names_the_script() {
        let empty = tempfile::tempdir().expect("a temporary directory");
        let err = locate_in(empty.path(), "helm", "v3.0.0").expect_err("nothing is cached there");
        let message = format!("{err:#}");
        assert!(
            message.contains("run deploy/tools.sh first (make test does)"),
            "{message}"
        );
    }
}
