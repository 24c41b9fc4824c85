//! The configuration suite 4 loads: N TCPRoutes, each the only route of its own listener (so
//! its own frontend), Gateways of 64 listeners each (the Gateway API's limit per Gateway) with
//! static addresses, and one Service per route whose EndpointSlice holds E ready endpoints.
//! Files are split the way an operator would keep them: a NodeConfig, the Gateways, then
//! Services and routes in files of [`PER_FILE`] objects, so a route change rewrites one small
//! file, as an edit or a GitOps sync does.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Listeners per Gateway (the Gateway API's `maxItems` for `spec.listeners`).
pub const LISTENERS_PER_GATEWAY: usize = 64;
/// Port of each Gateway's first listener.
pub const FIRST_PORT: u16 = 10000;
/// Routes, or Services with their EndpointSlices, per file.
pub const PER_FILE: usize = 100;
/// Port of every Service and endpoint.
pub const BACKEND_PORT: u16 = 8080;
/// The node's full-NAT source address.
pub const SNAT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// What to generate.
#[derive(Debug, Clone)]
pub struct Layout {
    pub routes: usize,
    /// Ready endpoints per Service.
    pub endpoints: usize,
    pub pin_dir: PathBuf,
}

impl Layout {
    /// Number of Gateways.
    pub fn gateways(&self) -> usize {
        self.routes.div_ceil(LISTENERS_PER_GATEWAY)
    }

    /// The frontend (VIP, port) route `route` is the only route of.
    pub fn frontend(&self, route: usize) -> (Ipv4Addr, u16) {
        (
            gateway_vip(route / LISTENERS_PER_GATEWAY),
            FIRST_PORT + (route % LISTENERS_PER_GATEWAY) as u16,
        )
    }

    /// Endpoint `e` of Service `service`: consecutive addresses from 10.128.0.0 (100,000
    /// endpoints fit in 10.128.0.0/15).
    pub fn endpoint(&self, service: usize, e: usize) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (service * self.endpoints + e) as u32,
        )
    }

    /// Whether `addr` is an endpoint of `service`.
    pub fn is_endpoint_of(&self, addr: Ipv4Addr, service: usize) -> bool {
        (0..self.endpoints).any(|e| self.endpoint(service, e) == addr)
    }

    /// Name of the file holding route `route`.
    pub fn routes_file(&self, route: usize) -> String {
        format!("30-routes-{:04}.yaml", route / PER_FILE)
    }

    /// Writes every file into `dir`; route `r` sends to Service `targets[r]`.
    pub fn write_all(&self, dir: &Path, targets: &[usize]) -> Result<()> {
        write(dir, "00-node.yaml", &self.node())?;
        write(dir, "10-gateways.yaml", &self.gateways_yaml())?;
        for chunk in 0..self.routes.div_ceil(PER_FILE) {
            write(
                dir,
                &format!("20-services-{chunk:04}.yaml"),
                &self.services_yaml(chunk),
            )?;
            write(
                dir,
                &self.routes_file(chunk * PER_FILE),
                &self.routes_yaml(chunk, targets),
            )?;
        }
        Ok(())
    }

    /// Frontends the dataplane is sized for: every route's, with room to spare.
    pub fn max_frontends(&self) -> usize {
        self.routes + 16
    }

    /// Backends the dataplane is sized for. Backend ids of a changed frontend are taken before
    /// the old ones are released: room for one frontend's worth beside the rest.
    pub fn max_backends(&self) -> usize {
        self.routes * self.endpoints + 4 * self.endpoints + 16
    }

    fn node(&self) -> String {
        format!(
            "apiVersion: blixt.dev/v1alpha1\nkind: NodeConfig\nmetadata:\n  name: bench\nspec:\n  \
             snatV4: {SNAT}\n  staticAddressRanges: [{STATIC_RANGE}]\n  maps:\n    maxFrontends: {}\n    maxBackends: {}\n    \
             conntrackEntries: 1024\n  pinDir: {}\n  metricsAddress: null\n  statusSocket: null\n",
            self.max_frontends(),
            self.max_backends(),
            self.pin_dir.display()
        )
    }

    /// The GatewayClass and Gateways.
    pub fn gateways_yaml(&self) -> String {
        let mut s = String::from(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: blixt\n\
             spec:\n  controllerName: blixt.dev/gateway-controller\n",
        );
        for g in 0..self.gateways() {
            let listeners = (self.routes - g * LISTENERS_PER_GATEWAY).min(LISTENERS_PER_GATEWAY);
            let _ = write!(
                s,
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  \
                 name: gw{g}\n  namespace: default\nspec:\n  gatewayClassName: blixt\n  \
                 addresses:\n  - type: IPAddress\n    value: {}\n  listeners:\n",
                gateway_vip(g)
            );
            for l in 0..listeners {
                let port = FIRST_PORT + l as u16;
                let _ = writeln!(s, "  - name: l{port}\n    protocol: TCP\n    port: {port}");
            }
        }
        s
    }

    /// Services `chunk * PER_FILE ..` with their EndpointSlices.
    pub fn services_yaml(&self, chunk: usize) -> String {
        let mut s = String::new();
        for svc in chunk * PER_FILE..((chunk + 1) * PER_FILE).min(self.routes) {
            let _ = write!(
                s,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc{svc}\n  namespace: \
                 default\nspec:\n  ports:\n  - name: tcp\n    protocol: TCP\n    port: \
                 {BACKEND_PORT}\n    targetPort: {BACKEND_PORT}\n---\napiVersion: \
                 discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc{svc}-1\n  \
                 namespace: default\n  labels:\n    kubernetes.io/service-name: svc{svc}\n\
                 addressType: IPv4\nports:\n- name: tcp\n  protocol: TCP\n  port: \
                 {BACKEND_PORT}\nendpoints:\n"
            );
            for e in 0..self.endpoints {
                let _ = writeln!(
                    s,
                    "- addresses: [\"{}\"]\n  conditions:\n    ready: true",
                    self.endpoint(svc, e)
                );
            }
        }
        s
    }

    /// The routes file of routes `chunk * PER_FILE ..`, route `r` sending to `targets[r]`.
    pub fn routes_yaml(&self, chunk: usize, targets: &[usize]) -> String {
        let mut s = String::new();
        let first = chunk * PER_FILE;
        let last = ((chunk + 1) * PER_FILE).min(self.routes);
        for (r, target) in targets.iter().enumerate().take(last).skip(first) {
            let (_, port) = self.frontend(r);
            let _ = write!(
                s,
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  \
                 name: r{r}\n  namespace: default\nspec:\n  parentRefs:\n  - name: gw{}\n    \
                 sectionName: l{port}\n  rules:\n  - backendRefs:\n    - name: svc{}\n      \
                 port: {BACKEND_PORT}\n",
                r / LISTENERS_PER_GATEWAY,
                target
            );
        }
        s
    }
}

/// Where the Gateways' static addresses lie: allowed explicitly (the address policy keeps static
/// addresses to the class's pool otherwise), in the NodeConfig and as the controller's
/// `--static-address-range`.
pub const STATIC_RANGE: &str = "10.250.0.0/16";

/// Address of Gateway `g`: 10.250.0.1 onwards.
fn gateway_vip(g: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + g as u32)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Replaces `dir/name` with `text` the way an editor saves: a temporary dot-file (which the
/// loader skips) renamed over the original. Returns after the rename, the change's moment.
pub fn replace(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming onto {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_load_and_translate_into_one_frontend_per_route() {
        let dir =
            std::env::temp_dir().join(format!("blixt-bench-cp-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout {
            routes: 130,
            endpoints: 3,
            pin_dir: PathBuf::from("/sys/fs/bpf/blixt-bench-unused"),
        };
        let targets: Vec<usize> = (0..layout.routes).collect();
        layout.write_all(&dir, &targets).unwrap();
        let loaded = blixt_standalone::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let snap = loaded.translate(&now).snapshot;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(snap.frontends.len(), 130);
        for r in [0, 63, 64, 129] {
            let (vip, port) = layout.frontend(r);
            let fe = snap
                .frontends
                .iter()
                .find(|f| f.key.vip == std::net::IpAddr::V4(vip) && f.key.port == port)
                .unwrap_or_else(|| panic!("route {r}: no frontend {vip}:{port}"));
            assert_eq!(fe.backends.len(), 3);
            for b in &fe.backends {
                let std::net::IpAddr::V4(a) = b.addr.addr else {
                    panic!("IPv6 backend")
                };
                assert!(layout.is_endpoint_of(a, r), "route {r}: {a}");
            }
        }
    }
}
