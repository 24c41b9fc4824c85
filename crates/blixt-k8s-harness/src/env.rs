//! What a container sees of the API: the downward API (`fieldRef`s), Service variables,
//! environment variables from values, Secrets and ConfigMaps, and `$(VAR)` expansion, as the
//! kubelet computes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::Api;
use kube::Client;

/// The facts about a running pod that `fieldRef`s can name.
#[derive(Debug, Clone)]
pub(crate) struct PodFacts {
    pub(crate) pod: Pod,
    pub(crate) pod_ips: Vec<String>,
    pub(crate) host_ips: Vec<String>,
}

impl PodFacts {
    pub(crate) fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub(crate) fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    /// The value of a downward-API `fieldPath`.
    pub(crate) fn field(&self, path: &str) -> Result<String, String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let map_entry = |map: &Option<BTreeMap<String, String>>, key: &str| {
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default()
        };
        let all = |map: &Option<BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect::<String>()
        };
        let subscript = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
        };
        Ok(match path {
            "metadata.name" => self.name().to_owned(),
            "metadata.namespace" => self.namespace().to_owned(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "metadata.labels" => all(&meta.labels),
            "metadata.annotations" => all(&meta.annotations),
            "spec.nodeName" => spec.node_name.unwrap_or_default(),
            "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
            "status.podIP" => self.pod_ips.first().cloned().unwrap_or_default(),
            "status.podIPs" => self.pod_ips.join(","),
            "status.hostIP" => self.host_ips.first().cloned().unwrap_or_default(),
            "status.hostIPs" => self.host_ips.join(","),
            _ => {
                if let Some(key) = subscript("metadata.labels") {
                    map_entry(&meta.labels, key)
                } else if let Some(key) = subscript("metadata.annotations") {
                    map_entry(&meta.annotations, key)
                } else {
                    return Err(format!(
                        "fieldRef {path:?} is not supported by the node agent"
                    ));
                }
            }
        })
    }
}

/// Secrets and ConfigMaps of one namespace, each read at most once per use.
pub(crate) struct Sources {
    client: Client,
    namespace: String,
    secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl Sources {
    pub(crate) fn new(client: &Client, namespace: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    /// The data of Secret `name`, `None` if it does not exist.
    pub(crate) async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading Secret {}/{name}: {e}", self.namespace))?;
            let data = secret.map(|s| {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                data
            });
            self.secrets.insert(name.to_owned(), data);
        }
        Ok(self.secrets[name].clone())
    }

    /// The data and binary data of ConfigMap `name`, `None` if it does not exist.
    pub(crate) async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let config_map = api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading ConfigMap {}/{name}: {e}", self.namespace))?;
            let data = config_map.map(|c| {
                let mut data: BTreeMap<String, Vec<u8>> = c
                    .binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in c.data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                data
            });
            self.config_maps.insert(name.to_owned(), data);
        }
        Ok(self.config_maps[name].clone())
    }

    /// One key of a Secret or ConfigMap; `None` when it (or the object) is missing and
    /// `optional`, an error when missing and not.
    async fn key(
        &mut self,
        kind: &str,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, String> {
        let data = if kind == "Secret" {
            self.secret(name).await?
        } else {
            self.config_map(name).await?
        };
        match data.as_ref().and_then(|d| d.get(key)) {
            Some(value) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
            None if optional => Ok(None),
            None if data.is_none() => Err(format!("{kind} {:?} not found", name)),
            None => Err(format!("key {key:?} not found in {kind} {name:?}")),
        }
    }
}

/// The Service variables the kubelet gives every container of a pod in `namespace`: those of
/// the `kubernetes` Service of `default` (`KUBERNETES_SERVICE_HOST`, ...), and with `links`
/// (`enableServiceLinks`, true by default) those of every Service of the pod's namespace that
/// has a ClusterIP. Sorted by name.
pub(crate) fn service_environment(
    services: &[Arc<Service>],
    namespace: &str,
    links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let (Some(name), Some(ns)) = (
            service.metadata.name.as_deref(),
            service.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        if matches!(ip, None | Some("" | "None")) {
            continue;
        }
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(service);
        } else if ns == namespace && links {
            chosen.insert(name, service);
        }
    }
    let mut env = Vec::new();
    for (name, service) in chosen {
        let spec = service.spec.clone().unwrap_or_default();
        let ip = spec.cluster_ip.unwrap_or_default();
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else {
            continue;
        };
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in &ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let port_name = port_name.to_ascii_uppercase().replace('-', "_");
                env.push((
                    format!("{prefix}_SERVICE_PORT_{port_name}"),
                    port.port.to_string(),
                ));
            }
        }
        // Docker's link variables.
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_ascii_lowercase();
            // Go's net.JoinHostPort.
            let url = if ip.contains(':') {
                format!("{lower}://[{ip}]:{}", port.port)
            } else {
                format!("{lower}://{ip}:{}", port.port)
            };
            if i == 0 {
                env.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!(
                "{prefix}_PORT_{}_{}",
                port.port,
                protocol.to_ascii_uppercase()
            );
            env.push((format!("{port_prefix}_PROTO"), lower));
            env.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            env.push((format!("{port_prefix}_ADDR"), ip.clone()));
            env.push((port_prefix, url));
        }
    }
    env
}

/// The environment of `container`: the image's variables, `HOSTNAME`, the Service variables
/// (`service_env`), then `envFrom` and `env` in order, later entries overriding earlier ones,
/// `$(VAR)` expanded from earlier entries.
pub(crate) async fn environment(
    sources: &mut Sources,
    facts: &PodFacts,
    container: &Container,
    image_env: &[(String, String)],
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = vec![(
        "PATH".to_owned(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    )];
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    };
    for (k, v) in image_env {
        set(&mut env, k.clone(), v.clone());
    }
    let hostname = if facts.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        facts.field("spec.nodeName")?
    } else {
        facts.name().to_owned()
    };
    set(&mut env, "HOSTNAME".to_owned(), hostname);
    for (k, v) in service_env {
        set(&mut env, k.clone(), v.clone());
    }

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what) = if let Some(secret) = &from.secret_ref {
            let data = sources.secret(&secret.name).await?;
            (data, secret.optional, format!("Secret {:?}", secret.name))
        } else if let Some(config_map) = &from.config_map_ref {
            let data = sources.config_map(&config_map.name).await?;
            (
                data,
                config_map.optional,
                format!("ConfigMap {:?}", config_map.name),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("envFrom: {what} not found")),
        }
    }

    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or_default(), &env)),
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    Some(facts.field(&field.field_path)?)
                } else if let Some(key) = &from.secret_key_ref {
                    let optional = key.optional == Some(true);
                    sources.key("Secret", &key.name, &key.key, optional).await?
                } else if let Some(key) = &from.config_map_key_ref {
                    let optional = key.optional == Some(true);
                    sources
                        .key("ConfigMap", &key.name, &key.key, optional)
                        .await?
                } else {
                    return Err(format!(
                        "env {}: only value, fieldRef, secretKeyRef and configMapKeyRef are supported by the node agent",
                        var.name
                    ));
                }
            }
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value of `NAME` if defined (else stays
/// as written) and `$$` becomes `$`.
pub(crate) fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
        {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A) $5", &env), "$(A) $5");
        assert_eq!(expand("--n=$(A", &env), "--n=$(A");
    }

    #[test]
    fn service_variables_as_the_kubelet_sets_them() {
        let service = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| {
            Arc::new(
                serde_json::from_value::<Service>(serde_json::json!({
                    "metadata": { "name": name, "namespace": ns },
                    "spec": { "clusterIP": ip, "ports": ports },
                }))
                .unwrap(),
            )
        };
        let services = vec![
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                serde_json::json!([{ "name": "https", "port": 443, "protocol": "TCP" }]),
            ),
            service(
                "ns",
                "my-svc",
                "fd00:10:96::5",
                serde_json::json!([{ "port": 53, "protocol": "UDP" }]),
            ),
            service(
                "ns",
                "headless",
                "None",
                serde_json::json!([{ "port": 80 }]),
            ),
            service(
                "other",
                "elsewhere",
                "10.96.0.9",
                serde_json::json!([{ "port": 80 }]),
            ),
        ];
        let env: BTreeMap<String, String> = service_environment(&services, "ns", true)
            .into_iter()
            .collect();
        let expected: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("MY_SVC_SERVICE_HOST", "fd00:10:96::5"),
            ("MY_SVC_SERVICE_PORT", "53"),
            ("MY_SVC_PORT", "udp://[fd00:10:96::5]:53"),
            ("MY_SVC_PORT_53_UDP", "udp://[fd00:10:96::5]:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("MY_SVC_PORT_53_UDP_ADDR", "fd00:10:96::5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
        let without_links = service_environment(&services, "ns", false);
        assert!(without_links
            .iter()
            .all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert_eq!(without_links.len(), 8);
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "labels": { "app": "x" } },
            "spec": { "nodeName": "n", "containers": [] },
        }))
        .unwrap();
        let facts = PodFacts {
            pod,
            pod_ips: vec!["10.244.0.2".into(), "fd00::2".into()],
            host_ips: vec!["10.243.0.2".into()],
        };
        assert_eq!(facts.field("metadata.name").unwrap(), "p");
        assert_eq!(facts.field("metadata.namespace").unwrap(), "ns");
        assert_eq!(facts.field("spec.nodeName").unwrap(), "n");
        assert_eq!(facts.field("status.podIP").unwrap(), "10.244.0.2");
        assert_eq!(facts.field("status.podIPs").unwrap(), "10.244.0.2,fd00::2");
        assert_eq!(facts.field("metadata.labels['app']").unwrap(), "x");
        assert_eq!(facts.field("metadata.labels").unwrap(), "app=\"x\"\n");
        assert!(facts.field("spec.bogus").is_err());
    }
}
