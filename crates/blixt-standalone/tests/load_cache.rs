//! `LoadCache` gives what `load` gives, load after load, while files change: an edit in one
//! file, a document inserted (every later object's synthetic creation timestamp shifts), a
//! name defined in two files and a broken file (errors exactly as `load` reports them), and
//! the fix of both.

use std::path::{Path, PathBuf};

use blixt_standalone::{load, LoadCache};

fn route(name: &str, backend: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  name: \
         {name}\nspec:\n  parentRefs:\n  - name: gw\n  rules:\n  - backendRefs:\n    - name: \
         {backend}\n      port: 80\n"
    )
}

fn service(name: &str, addr: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - \
         port: 80\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
         name: {name}-1\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: \
         IPv4\nendpoints:\n- addresses: [\"{addr}\"]\nports:\n- port: 80\n"
    )
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  \
    name: blixt\nspec:\n  controllerName: blixt.dev/gateway-controller\n---\napiVersion: \
    gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  \
    gatewayClassName: blixt\n  listeners:\n  - name: tcp\n    protocol: TCP\n    port: 80\n";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// The cached load equals the uncached one: same objects (timestamps included), same node
/// settings, same files; or the same errors.
fn same(cache: &mut LoadCache, dir: &Path, what: &str) -> bool {
    let cached = cache.load(dir);
    let plain = load(dir);
    match (cached, plain) {
        (Ok(c), Ok(p)) => {
            assert_eq!(
                format!("{:?}", c.objects),
                format!("{:?}", p.objects),
                "{what}: objects"
            );
            assert_eq!(c.node, p.node, "{what}: node");
            assert_eq!(c.files, p.files, "{what}: files");
            assert_eq!(
                format!("{:?}", c.node_origin),
                format!("{:?}", p.node_origin),
                "{what}: node origin"
            );
            true
        }
        (Err(c), Err(p)) => {
            assert_eq!(c.to_string(), p.to_string(), "{what}: errors");
            false
        }
        (c, p) => panic!("{what}: cached {c:?} but uncached {p:?}"),
    }
}

#[test]
fn cached_loads_equal_uncached_loads_across_edits() {
    let dir = Dir(std::env::temp_dir().join(format!("blixt-load-cache-{}", std::process::id())));
    let d = dir.0.as_path();
    std::fs::create_dir_all(d).unwrap();
    write(d, "00-node.yaml", "apiVersion: blixt.dev/v1alpha1\nkind: NodeConfig\nmetadata:\n  name: n\nspec:\n  snatV4: 10.0.0.1\n");
    write(d, "10-gw.yaml", GATEWAY);
    write(
        d,
        "20-svc.yaml",
        &(service("a", "10.1.0.1") + &service("b", "10.1.0.2")),
    );
    write(d, "30-routes.yaml", &(route("r1", "a") + &route("r2", "b")));
    write(d, "40-routes.yaml", &route("r3", "a"));

    let mut cache = LoadCache::default();
    assert!(same(&mut cache, d, "first load"));
    assert!(same(&mut cache, d, "nothing changed"));

    write(d, "30-routes.yaml", &(route("r1", "b") + &route("r2", "b")));
    assert!(same(&mut cache, d, "one backendRef changed"));

    // one more document before 40-routes.yaml: r3 becomes one second younger
    write(
        d,
        "30-routes.yaml",
        &(route("r0", "a") + &route("r1", "b") + &route("r2", "b")),
    );
    assert!(same(&mut cache, d, "a document inserted"));

    write(d, "40-routes.yaml", &(route("r3", "a") + &route("r1", "a")));
    assert!(
        !same(&mut cache, d, "r1 defined in two files"),
        "a duplicate loads"
    );

    write(d, "40-routes.yaml", "kind: [");
    assert!(
        !same(&mut cache, d, "a syntax error"),
        "a broken file loads"
    );

    write(d, "40-routes.yaml", &route("r3", "b"));
    assert!(same(&mut cache, d, "fixed"));

    std::fs::remove_file(d.join("20-svc.yaml")).unwrap();
    write(d, "25-svc.yaml", &service("a", "10.1.0.9"));
    assert!(same(&mut cache, d, "a file removed, another added"));

    write(
        d,
        "50-node.yaml",
        "apiVersion: blixt.dev/v1alpha1\nkind: NodeConfig\nmetadata:\n  name: m\n",
    );
    assert!(
        !same(&mut cache, d, "two NodeConfigs"),
        "two NodeConfigs load"
    );
}
