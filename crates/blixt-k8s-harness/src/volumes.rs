//! A pod's volumes: written once, when the pod starts, to `<pod dir>/volumes/<name>` (Secret,
//! ConfigMap, downward API, projected, emptyDir) or taken from the host (hostPath), then
//! bind-mounted at each container's `mountPath`s inside the container's private mount
//! namespace (see [`mount_plan`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, KeyToPath, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::env::{PodFacts, Sources};
use crate::sys::{Bind, MountPlan, Overlay};

/// Where each volume's contents are, by volume name.
#[derive(Debug, Default)]
pub(crate) struct Volumes {
    sources: BTreeMap<String, (PathBuf, bool)>,
}

type Result<T> = std::result::Result<T, String>;

/// Writes every volume of the pod under `dir`. An error is a message for the pod's status
/// (the kubelet's `FailedMount`), for example a Secret that does not exist yet.
pub(crate) async fn prepare(client: &Client, facts: &PodFacts, dir: &Path) -> Result<Volumes> {
    let mut sources = Sources::new(client, facts.namespace());
    let mut volumes = Volumes::default();
    let spec = facts.pod.spec.clone().unwrap_or_default();
    for volume in spec.volumes.iter().flatten() {
        let target = dir.join(&volume.name);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir_all(&target)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
        let (path, read_only) = write_volume(client, &mut sources, facts, volume, &target)
            .await
            .map_err(|e| format!("volume {:?}: {e}", volume.name))?;
        volumes
            .sources
            .insert(volume.name.clone(), (path, read_only));
    }
    Ok(volumes)
}

/// Fills `target` with the volume's files; returns where the contents are and whether they
/// are read-only.
async fn write_volume(
    client: &Client,
    sources: &mut Sources,
    facts: &PodFacts,
    volume: &Volume,
    target: &Path,
) -> Result<(PathBuf, bool)> {
    if volume.empty_dir.is_some() {
        // World-writable, as the kubelet makes it: containers of any user write there.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("making {} writable: {e}", target.display()))?;
        return Ok((target.to_owned(), false));
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or_default() {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                .map_err(|e| format!("creating hostPath {}: {e}", path.display()))?,
            "FileOrCreate" if !path.exists() => std::fs::write(&path, b"")
                .map_err(|e| format!("creating {}: {e}", path.display()))?,
            "Directory" if !path.is_dir() => {
                return Err(format!("hostPath {} is not a directory", path.display()))
            }
            "File" if !path.is_file() => {
                return Err(format!("hostPath {} is not a file", path.display()))
            }
            _ if !path.exists() => {
                return Err(format!("hostPath {} does not exist", path.display()))
            }
            _ => {}
        }
        return Ok((path, false));
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = sources.secret(&name).await?;
        let optional = secret.optional == Some(true);
        let data = data.or_else(|| optional.then(BTreeMap::new));
        let data = data.ok_or_else(|| format!("Secret {name:?} not found"))?;
        write_items(
            target,
            &data,
            secret.items.as_deref(),
            secret.default_mode,
            optional,
        )?;
        return Ok((target.to_owned(), true));
    }
    if let Some(config_map) = &volume.config_map {
        let data = sources.config_map(&config_map.name).await?;
        let optional = config_map.optional == Some(true);
        let data = data.or_else(|| optional.then(BTreeMap::new));
        let data = data.ok_or_else(|| format!("ConfigMap {:?} not found", config_map.name))?;
        let items = config_map.items.as_deref();
        write_items(target, &data, items, config_map.default_mode, optional)?;
        return Ok((target.to_owned(), true));
    }
    if let Some(downward) = &volume.downward_api {
        for file in downward.items.iter().flatten() {
            let field = file
                .field_ref
                .as_ref()
                .ok_or("only fieldRef items are supported in downwardAPI volumes")?;
            let mode = file.mode.or(downward.default_mode);
            write_file(
                target,
                &file.path,
                facts.field(&field.field_path)?.as_bytes(),
                mode,
            )?;
        }
        return Ok((target.to_owned(), true));
    }
    if let Some(projected) = &volume.projected {
        let default_mode = projected.default_mode;
        for source in projected.sources.iter().flatten() {
            if let Some(secret) = &source.secret {
                let optional = secret.optional == Some(true);
                match sources.secret(&secret.name).await? {
                    Some(data) => write_items(
                        target,
                        &data,
                        secret.items.as_deref(),
                        default_mode,
                        optional,
                    )?,
                    None if optional => {}
                    None => return Err(format!("Secret {:?} not found", secret.name)),
                }
            } else if let Some(config_map) = &source.config_map {
                let optional = config_map.optional == Some(true);
                match sources.config_map(&config_map.name).await? {
                    Some(data) => {
                        let items = config_map.items.as_deref();
                        write_items(target, &data, items, default_mode, optional)?
                    }
                    None if optional => {}
                    None => return Err(format!("ConfigMap {:?} not found", config_map.name)),
                }
            } else if let Some(downward) = &source.downward_api {
                for file in downward.items.iter().flatten() {
                    let field = file
                        .field_ref
                        .as_ref()
                        .ok_or("only fieldRef items are supported in downwardAPI projections")?;
                    let value = facts.field(&field.field_path)?;
                    write_file(
                        target,
                        &file.path,
                        value.as_bytes(),
                        file.mode.or(default_mode),
                    )?;
                }
            } else if let Some(token) = &source.service_account_token {
                let value = service_account_token(
                    client,
                    facts,
                    token.audience.as_deref(),
                    token.expiration_seconds,
                )
                .await?;
                write_file(target, &token.path, value.as_bytes(), default_mode)?;
            } else {
                return Err("only secret, configMap, downwardAPI and serviceAccountToken projections are supported".to_owned());
            }
        }
        return Ok((target.to_owned(), true));
    }
    Err("volume type not emulated by the node agent (supported: emptyDir, hostPath, secret, configMap, downwardAPI, projected)".to_owned())
}

/// A token for the pod's ServiceAccount bound to the pod, as the kubelet requests it.
async fn service_account_token(
    client: &Client,
    facts: &PodFacts,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String> {
    let account = facts.field("spec.serviceAccountName")?;
    let account = if account.is_empty() {
        "default".to_owned()
    } else {
        account
    };
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3600),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": facts.name(),
                "uid": facts.field("metadata.uid")?,
            },
        },
    }))
    .map_err(|e| e.to_string())?;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), facts.namespace());
    api.create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("requesting a token for ServiceAccount {account:?}: {e}"))?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("the token request for {account:?} returned no token"))
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<()> {
    match items {
        None => {
            for (key, value) in data {
                write_file(dir, key, value, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value, item.mode.or(default_mode))?,
                    None if optional => {}
                    None => return Err(format!("key {:?} not found", item.key)),
                }
            }
        }
    }
    Ok(())
}

fn write_file(dir: &Path, relative: &str, contents: &[u8], mode: Option<i32>) -> Result<()> {
    let path = dir.join(checked_relative(relative)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mode = mode.map_or(0o644, |m| m as u32 & 0o777);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", path.display()))
}

/// A relative path without `..` (item paths and subPaths).
fn checked_relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    if p.components().all(|c| matches!(c, Component::Normal(_))) && !path.is_empty() {
        Ok(p)
    } else {
        Err(format!("path {path:?} must be relative, without '..'"))
    }
}

/// How `container`'s volume mounts, and the agent's own `files` (`(source, target)`, such as the
/// pod's `/etc/resolv.conf`; skipped where a volume is mounted at the same path, as container
/// runtimes do), are made in its mount namespace, shallowest first. A mount point that does not
/// exist on the host is created inside an overlay of its nearest existing ancestor (upper layer
/// under `scratch`), so the host's file system is not written; only a missing top-level
/// directory (`/config`: `/` cannot be overlaid without hiding /proc, /dev and /sys) is created
/// on the host, empty. A mount point inside another mount is created in that mount's source.
pub(crate) fn mount_plan(
    volumes: &Volumes,
    container: &Container,
    files: &[(PathBuf, PathBuf)],
    scratch: &Path,
) -> Result<MountPlan> {
    struct Wanted {
        source: PathBuf,
        mount_path: PathBuf,
        read_only: bool,
        what: String,
    }
    let mut wanted = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let (volume_path, volume_read_only) = volumes
            .sources
            .get(&mount.name)
            .ok_or_else(|| format!("volumeMount {:?}: no such volume", mount.name))?;
        let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let source = volume_path.join(checked_relative(sub)?);
                if !source.exists() {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("creating subPath {}: {e}", source.display()))?;
                }
                source
            }
            None => volume_path.clone(),
        };
        if !Path::new(&mount.mount_path).is_absolute() {
            return Err(format!("mountPath {:?} is not absolute", mount.mount_path));
        }
        wanted.push(Wanted {
            source,
            mount_path: PathBuf::from(&mount.mount_path),
            read_only: *volume_read_only || mount.read_only == Some(true),
            what: format!("volume {:?}", mount.name),
        });
    }
    for (source, target) in files {
        if wanted.iter().all(|w| w.mount_path != *target) {
            wanted.push(Wanted {
                source: source.clone(),
                mount_path: target.clone(),
                read_only: false,
                what: source.display().to_string(),
            });
        }
    }
    // Stable: at equal depth, volumes keep their order.
    wanted.sort_by_key(|w| w.mount_path.components().count());
    let mut plan = MountPlan::default();
    let mut overlay_roots = BTreeSet::new();
    for Wanted {
        source,
        mount_path,
        read_only,
        what,
    } in wanted
    {
        let is_dir = source.is_dir();
        let (existing, missing) = split_existing(&mount_path)?;
        // (`join` of an empty path would add a trailing `/`, which a file mount refuses.)
        let target = if missing.as_os_str().is_empty() {
            existing.clone()
        } else {
            existing.join(&missing)
        };
        let outer = plan
            .binds
            .iter()
            .rev()
            .find(|b| target.starts_with(&b.target));
        if let Some(outer) = outer {
            let inner = outer
                .source
                .join(target.strip_prefix(&outer.target).unwrap_or(&target));
            create_mount_point(&inner, is_dir)?;
        } else if !missing.as_os_str().is_empty() {
            let mut parts = missing.components();
            let root = if existing == Path::new("/") {
                let top = Path::new("/").join(parts.next().expect("missing is not empty"));
                create_mount_point(&top, true)?;
                top
            } else {
                existing
            };
            if !overlay_roots.iter().any(|r: &PathBuf| root.starts_with(r)) {
                overlay_roots.retain(|r: &PathBuf| !r.starts_with(&root));
                overlay_roots.insert(root.clone());
            }
            let parts: Vec<_> = parts.collect();
            let mut dir = root;
            for (i, part) in parts.iter().enumerate() {
                dir.push(part);
                if i + 1 < parts.len() || is_dir {
                    if !plan.mkdirs.contains(&dir) {
                        plan.mkdirs.push(dir.clone());
                    }
                } else {
                    plan.files.push(dir.clone());
                }
            }
        } else if target.is_dir() != is_dir {
            return Err(format!(
                "mountPath {} and {what} are not both directories or both files",
                target.display(),
            ));
        }
        plan.binds.push(Bind {
            source,
            target,
            read_only,
        });
    }
    for (i, root) in overlay_roots.into_iter().enumerate() {
        let layers = scratch.join(i.to_string());
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        for dir in [&upper, &work] {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        plan.overlays.push(Overlay {
            target: root,
            upper,
            work,
        });
    }
    Ok(plan)
}

fn create_mount_point(path: &Path, is_dir: bool) -> Result<()> {
    let created = if is_dir {
        std::fs::create_dir_all(path)
    } else {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(drop)
            })
    };
    created.map_err(|e| format!("creating mount point {}: {e}", path.display()))
}

/// `path` split into its longest existing prefix (canonical, symlinks resolved) and the rest.
fn split_existing(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut existing = path.to_owned();
    let mut missing = Vec::new();
    while !existing.exists() {
        missing.push(
            existing
                .file_name()
                .map(ToOwned::to_owned)
                .ok_or_else(|| format!("mountPath {} has no existing ancestor", path.display()))?,
        );
        existing.pop();
    }
    let existing = existing
        .canonicalize()
        .map_err(|e| format!("resolving {}: {e}", existing.display()))?;
    Ok((existing, missing.iter().rev().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mount_points_are_made_in_an_overlay_or_the_outer_volume() {
        let scratch = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let volume = scratch.path().join("vol");
        std::fs::create_dir_all(&volume).unwrap();
        let volumes = Volumes {
            sources: [("v".to_owned(), (volume.clone(), true))].into(),
        };
        let base = host.path().canonicalize().unwrap();
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [
                { "name": "v", "mountPath": base.join("a/b/c").display().to_string() },
                { "name": "v", "mountPath": base.join("a/b").display().to_string() },
                { "name": "v", "mountPath": base.join("x").display().to_string(), "readOnly": true },
            ],
        }))
        .unwrap();
        let resolv = scratch.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.243.0.1\n").unwrap();
        let files = [
            (resolv.clone(), base.join("x/resolv.conf")),
            // A volume is mounted there: the volume wins.
            (resolv.clone(), base.join("a/b")),
        ];
        let plan = mount_plan(
            &volumes,
            &container,
            &files,
            &scratch.path().join("overlay"),
        )
        .unwrap();
        assert_eq!(plan.overlays.len(), 1);
        assert_eq!(plan.overlays[0].target, base);
        assert_eq!(
            plan.mkdirs,
            vec![base.join("x"), base.join("a"), base.join("a/b")]
        );
        // Shallowest first, so an outer mount never hides an inner one.
        let targets: Vec<_> = plan.binds.iter().map(|b| b.target.clone()).collect();
        assert_eq!(
            targets,
            [
                base.join("x"),
                base.join("a/b"),
                base.join("x/resolv.conf"),
                base.join("a/b/c")
            ]
        );
        assert!(
            volume.join("c").is_dir(),
            "the nested mount point is made in the outer volume"
        );
        assert!(
            volume.join("resolv.conf").is_file(),
            "a file mount point inside a volume is a file"
        );
        assert!(plan
            .binds
            .iter()
            .all(|b| b.read_only == (b.source != resolv)));
        assert!(!base.join("a").exists(), "nothing is created on the host");
    }

    #[test]
    fn relative_paths_are_checked() {
        assert!(checked_relative("a/b").is_ok());
        assert!(checked_relative("../x").is_err());
        assert!(checked_relative("/etc").is_err());
        assert!(checked_relative("").is_err());
    }
}
