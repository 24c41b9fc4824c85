//! The file provider against the fixtures: a good directory (counts, filled-in metadata, the
//! NodeConfig, a full translation) and one broken file per kind of problem (the exact message,
//! naming file, line, document and field).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use blixt_core::snapshot::{Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol};
use blixt_core::translator::ObjectKey;
use blixt_standalone::config::{
    self, load, load_sources, AddressBlock, AttachSetting, NodeConfigSpec, PortRange, ProblemKind,
    Seconds, Source,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Paths relative to the package root (cargo runs tests there), so messages are stable.
fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures").join(name)
}

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn conds(c: &[Condition]) -> Vec<(String, String, String)> {
    c.iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn cond(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.into(), status.into(), reason.into())
}

/// The Display of a failed load, one problem per line.
fn errors(path: &str) -> String {
    match load(&fixture(path)) {
        Ok(_) => panic!("{path} loaded, but is broken"),
        Err(e) => e.to_string(),
    }
}

fn backend(addr: &str, port: u16, weight: u32, state: BackendState) -> Backend {
    Backend {
        addr: BackendAddr {
            addr: addr.parse().unwrap(),
            port,
        },
        weight,
        state,
    }
}

#[test]
fn good_directory_loads_every_object() {
    let c = load(&fixture("good")).unwrap_or_else(|e| panic!("{e}"));
    // Hidden files and files without a YAML extension are not read.
    let names: Vec<String> = c
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00-node.yaml",
            "10-gateway.yaml",
            "20-routes.yaml",
            "30-backends.yaml"
        ]
    );
    let o = &c.objects;
    assert_eq!(o.gateway_classes.len(), 1);
    assert_eq!(o.gateways.len(), 1);
    assert_eq!(o.tcp_routes.len(), 2);
    assert_eq!(o.udp_routes.len(), 1);
    assert_eq!(o.tls_routes.len(), 0);
    assert_eq!(o.reference_grants.len(), 1, "v1beta1 ReferenceGrant");
    assert_eq!(o.services.len(), 4);
    assert_eq!(o.endpoint_slices.len(), 4);
    assert_eq!(o.namespaces.len(), 1);
    assert_eq!(
        c.node_origin.as_ref().map(|o| o.to_string()).as_deref(),
        Some("tests/fixtures/good/00-node.yaml:3 (document 1)")
    );
}

#[test]
fn metadata_is_filled_in_as_an_api_server_would() {
    let c = load(&fixture("good")).unwrap_or_else(|e| panic!("{e}"));
    let app = &c.objects.tcp_routes[0].metadata;
    assert_eq!(app.name.as_deref(), Some("app"));
    assert_eq!(
        app.namespace.as_deref(),
        Some("default"),
        "namespace defaults"
    );
    assert_eq!(app.generation, Some(1));
    // 00-node.yaml holds document 1, 10-gateway.yaml 2 and 3: the TCPRoute is the 4th.
    assert_eq!(
        app.creation_timestamp.as_ref().unwrap().0.to_string(),
        "2000-01-01T00:00:04Z"
    );
    let canary = &c.objects.tcp_routes[1].metadata;
    assert!(canary.creation_timestamp > app.creation_timestamp);
    // Cluster-scoped kinds have no namespace.
    assert_eq!(c.objects.gateway_classes[0].metadata.namespace, None);
    assert_eq!(c.objects.namespaces[0].metadata.namespace, None);
    assert_eq!(
        c.objects.reference_grants[0].metadata.namespace.as_deref(),
        Some("shared")
    );
}

#[test]
fn given_metadata_is_kept_and_status_in_files_is_ignored() {
    let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: edge
  generation: 7
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  gatewayClassName: blixt
  listeners: [{name: tcp, protocol: TCP, port: 80}]
status:
  addresses: [{type: IPAddress, value: 198.51.100.1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: edge, namespace: ignored-for-cluster-scoped-kinds}
"#;
    let c = load_sources(&[Source {
        path: "inline.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let gw = &c.objects.gateways[0];
    assert_eq!(gw.metadata.namespace.as_deref(), Some("edge"));
    assert_eq!(gw.metadata.generation, Some(7));
    assert_eq!(
        gw.metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .to_string(),
        "2024-05-01T10:00:00Z"
    );
    assert!(gw.status.is_none());
    assert_eq!(c.objects.namespaces[0].metadata.namespace, None);
    // No NodeConfig: defaults, and the caller can tell.
    assert!(c.node_origin.is_none());
    assert_eq!(c.node, NodeConfigSpec::default());
    assert!(c.translator.address_pool.is_empty());
}

#[test]
fn node_config_is_parsed_with_defaults_for_the_rest() {
    let c = load(&fixture("good")).unwrap_or_else(|e| panic!("{e}"));
    let n = &c.node;
    assert_eq!(n.interfaces, ["eth0"]);
    assert_eq!(n.snat_v4, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(n.snat_v6, None);
    assert_eq!(
        n.address_pool,
        [
            AddressBlock::Range("192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()),
            AddressBlock::Prefix("192.0.2.16/31".parse().unwrap()),
        ]
    );
    assert_eq!(
        n.port_range,
        PortRange {
            min: 20000,
            max: 29999
        }
    );
    assert!(n.announce);
    assert_eq!(n.timeouts.tcp_established, Seconds(3600));
    assert_eq!(n.timeouts.udp, Seconds(30));
    assert_eq!(n.timeouts.tcp_syn, Seconds(60), "default");
    assert_eq!(n.maps.max_frontends, 64);
    assert_eq!(n.maps.max_backends, 16384, "default");
    assert_eq!(n.maps.conntrack_entries, 65536);
    assert_eq!(n.maps.maglev_table_size, 4093);
    assert_eq!(
        n.pin_dir.as_deref(),
        Some(Path::new("/sys/fs/bpf/blixt-test"))
    );
    assert_eq!(n.metrics_address, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(
        n.status_socket.as_deref(),
        Some(Path::new("/run/blixt-test/status.sock"))
    );

    let pool: Vec<IpAddr> = ["192.0.2.10", "192.0.2.11", "192.0.2.16", "192.0.2.17"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(c.translator.address_pool, pool);
    assert_eq!(c.translator.max_frontends, Some(64));
    assert_eq!(
        c.translator.controller_name,
        blixt_core::translator::CONTROLLER_NAME
    );
}

#[test]
fn node_config_nulls_turn_things_off() {
    let text = "apiVersion: blixt.dev/v1alpha1\nkind: NodeConfig\nmetadata: {name: n}\n\
                spec: {pinDir: null, metricsAddress: null, statusSocket: null, announce: false}\n";
    let c = load_sources(&[Source {
        path: "node.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.node.pin_dir, None);
    assert_eq!(c.node.metrics_address, None);
    assert_eq!(c.node.status_socket, None);
    assert!(!c.node.announce);
}

#[test]
fn node_config_attach_mode() {
    let node = |attach: &str| {
        load_sources(&[Source {
            path: "node.yaml".into(),
            text: format!(
                "apiVersion: blixt.dev/v1alpha1\nkind: NodeConfig\nmetadata: {{name: n}}\n\
                 spec: {{attach: {attach}}}\n"
            ),
        }])
    };
    assert_eq!(
        load_sources(&[]).map(|c| c.node.attach).ok(),
        Some(AttachSetting::Auto),
        "default"
    );
    for (text, want) in [
        ("auto", AttachSetting::Auto),
        ("xdp", AttachSetting::Xdp),
        ("tc", AttachSetting::Tc),
    ] {
        let c = node(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.node.attach, want);
    }
    let e = node("bpf").unwrap_err().to_string();
    assert!(
        e.contains("spec.attach") && e.contains("auto") && e.contains("tc"),
        "{e}"
    );
}

#[test]
fn good_directory_translates_to_weighted_frontends() {
    let c = load(&fixture("good")).unwrap_or_else(|e| panic!("{e}"));
    let t = c.translate(&now());
    t.snapshot.validate().expect("valid snapshot");
    let vip: IpAddr = "192.0.2.10".parse().unwrap();
    use BackendState::{Active, Terminating};
    // Sorted by (VIP, port, protocol).
    assert_eq!(
        t.snapshot.frontends,
        vec![
            Frontend {
                name: "default/edge/udp".into(),
                key: FrontendKey {
                    vip,
                    port: 53,
                    protocol: Protocol::Udp
                },
                // Through the ReferenceGrant, to the slice's target port.
                backends: vec![
                    backend("10.0.4.1", 5353, 1, Active),
                    backend("10.0.4.2", 5353, 1, Active),
                ],
                reject_weight: 0,
            },
            Frontend {
                name: "default/edge/tcp".into(),
                key: FrontendKey {
                    vip,
                    port: 80,
                    protocol: Protocol::Tcp
                },
                // app-a:app-b:app-c = 2:1:1; app-a's draining endpoint keeps its flows
                // (weight 0), its not-serving one is gone. app-canary (a later document)
                // carries nothing.
                backends: vec![
                    backend("10.0.1.1", 8080, 2, Active),
                    backend("10.0.1.2", 8080, 0, Terminating),
                    backend("10.0.2.1", 8080, 1, Active),
                    backend("10.0.3.1", 8080, 1, Active),
                ],
                reject_weight: 0,
            },
        ]
    );

    let s = &t.statuses;
    let gw = &s.gateways[&ObjectKey::new("default", "edge")];
    assert_eq!(
        conds(gw.conditions.as_deref().unwrap()),
        [
            cond("Accepted", "True", "Accepted"),
            cond("Programmed", "True", "Programmed")
        ]
    );
    let attached: Vec<(&str, i32)> = gw
        .listeners
        .iter()
        .flatten()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(attached, [("tcp", 2), ("udp", 1)]);
    let healthy = [
        cond("Accepted", "True", "Accepted"),
        cond("ResolvedRefs", "True", "ResolvedRefs"),
    ];
    for status in s.tcp_routes.values() {
        assert_eq!(conds(&status.parents[0].conditions), healthy);
    }
    for status in s.udp_routes.values() {
        assert_eq!(conds(&status.parents[0].conditions), healthy);
    }
    assert_eq!(s.tcp_routes.len(), 2);
    assert_eq!(s.udp_routes.len(), 1);
}

#[test]
fn carried_over_statuses_keep_pool_addresses_sticky() {
    let mut sources: Vec<Source> = config::config_files(&fixture("good"))
        .unwrap()
        .into_iter()
        .map(|path| Source {
            text: std::fs::read_to_string(&path).unwrap(),
            path,
        })
        .collect();
    let first = load_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
    let before = first.translate(&now());

    // A new Gateway that sorts before `edge` would take the first pool address if nothing
    // remembered who has it.
    sources.push(Source {
        path: "40-more.yaml".into(),
        text: "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: aaa}\n\
               spec:\n  gatewayClassName: blixt\n  listeners: [{name: tcp, protocol: TCP, port: 81}]\n"
            .into(),
    });
    let address = |t: &blixt_core::translator::Translation, name: &str| {
        t.statuses.gateways[&ObjectKey::new("default", name)]
            .addresses
            .as_ref()
            .unwrap()[0]
            .value
            .clone()
    };
    let fresh = load_sources(&sources).unwrap().translate(&now());
    assert_eq!(address(&fresh, "aaa"), "192.0.2.10", "without carry-over");

    let mut second = load_sources(&sources).unwrap();
    second.carry_over(&before.statuses);
    let after = second.translate(&now());
    assert_eq!(address(&after, "edge"), "192.0.2.10");
    assert_eq!(address(&after, "aaa"), "192.0.2.11");
    // Unchanged conditions keep their transition time.
    let later = Time(Timestamp::from_second(1_700_000_600).unwrap());
    let again = {
        let mut c = load_sources(&sources).unwrap();
        c.carry_over(&after.statuses);
        c.translate(&later)
    };
    assert_eq!(again.statuses, after.statuses);
}

#[test]
fn missing_path() {
    let e = load(Path::new("tests/fixtures/nope")).unwrap_err();
    assert_eq!(e.problems[0].kind, ProblemKind::Io);
    assert_eq!(
        e.to_string(),
        "tests/fixtures/nope: No such file or directory (os error 2)"
    );
}

#[test]
fn syntax_error() {
    assert_eq!(
        errors("broken/syntax.yaml"),
        "tests/fixtures/broken/syntax.yaml:10:13: document 2 (line 6): \
         mapping values are not allowed in this context"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        errors("broken/bad-type.yaml"),
        "tests/fixtures/broken/bad-type.yaml:19:7: document 2 (line 8), TCPRoute default/app: \
         spec.rules[0].backendRefs[0].port: invalid type: string \"x\", expected i32"
    );
}

#[test]
fn unknown_kind() {
    assert_eq!(
        errors("broken/unknown-kind.yaml"),
        "tests/fixtures/broken/unknown-kind.yaml:2:1: document 1 (line 1): unsupported kind \
         \"HTTPRoute\" (gateway.networking.k8s.io/v1); Blixt reads gateway.networking.k8s.io/v1 \
         GatewayClass, Gateway, TCPRoute, UDPRoute, TLSRoute, ReferenceGrant; v1 Service, \
         Namespace; discovery.k8s.io/v1 EndpointSlice; blixt.dev/v1alpha1 NodeConfig"
    );
}

#[test]
fn unknown_api_version() {
    assert_eq!(
        errors("broken/wrong-version.yaml"),
        "tests/fixtures/broken/wrong-version.yaml:2:1: document 1 (line 2): unsupported \
         apiVersion \"gateway.networking.k8s.io/v1alpha2\" for TCPRoute; use \
         gateway.networking.k8s.io/v1"
    );
}

#[test]
fn missing_name() {
    assert_eq!(
        errors("broken/missing-name.yaml"),
        "tests/fixtures/broken/missing-name.yaml:4:3: document 1 (line 1), Service \
         default/(unnamed): metadata.name: missing; every object needs a name"
    );
}

#[test]
fn duplicate_object() {
    assert_eq!(
        errors("broken/duplicate.yaml"),
        "tests/fixtures/broken/duplicate.yaml:13:3: document 2 (line 10), Service default/app-a: \
         metadata.name: defined twice; the first is at tests/fixtures/broken/duplicate.yaml:1 \
         (document 1)"
    );
}

#[test]
fn unknown_field_and_the_missing_field_it_hides() {
    let e = load(&fixture("broken/unknown-field.yaml")).unwrap_err();
    let kinds: Vec<ProblemKind> = e.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [ProblemKind::UnknownField, ProblemKind::InvalidField]
    );
    assert_eq!(
        e.to_string(),
        "tests/fixtures/broken/unknown-field.yaml:9:5: document 1 (line 1), UDPRoute default/dns: \
         spec.rules[0].backendRef: unknown field\n\
         tests/fixtures/broken/unknown-field.yaml:9:5: document 1 (line 1), UDPRoute default/dns: \
         spec.rules[0]: missing field `backendRefs`"
    );
}

#[test]
fn not_an_object() {
    assert_eq!(
        errors("broken/not-an-object.yaml"),
        "tests/fixtures/broken/not-an-object.yaml:1: document 1 (line 1): not a Kubernetes \
         object (a mapping with apiVersion, kind and metadata)\n\
         tests/fixtures/broken/not-an-object.yaml:4:1: document 2 (line 4): missing field \
         `apiVersion`"
    );
}

#[test]
fn invalid_node_config_lists_every_problem() {
    let e = load(&fixture("broken/node-invalid.yaml")).unwrap_err();
    assert!(e
        .problems
        .iter()
        .all(|p| p.kind == ProblemKind::InvalidValue));
    let f = "tests/fixtures/broken/node-invalid.yaml";
    assert_eq!(
        e.to_string(),
        [
            format!("{f}:6:22: document 1 (line 1), NodeConfig node: spec.interfaces[1]: \"eth0\" is listed twice (also interfaces[0])"),
            format!("{f}:7:3: document 1 (line 1), NodeConfig node: spec.snatV4: 2001:db8::1 is not an IPv4 address"),
            format!("{f}:9:5: document 1 (line 1), NodeConfig node: spec.addressPool[0]: 192.0.2.0/24 contains the reserved address 192.0.2.254 (reservedAddresses)"),
            format!("{f}:10:5: document 1 (line 1), NodeConfig node: spec.addressPool[1]: 192.0.2.128-192.0.2.130 overlaps addressPool[0]"),
            format!("{f}:12:5: document 1 (line 1), NodeConfig node: spec.maps.maglevTableSize: 65536 is not a prime of at least 7 (e.g. 16381, 65537)"),
        ]
        .join("\n")
    );
}

#[test]
fn node_config_bad_port_range() {
    assert_eq!(
        errors("broken/node-bad-port-range.yaml"),
        "tests/fixtures/broken/node-bad-port-range.yaml:6:3: document 1 (line 1), NodeConfig \
         node: spec.portRange: port range \"30000-2000\" is empty or starts at 0: MIN must be 1 \
         or more and at most MAX"
    );
}

#[test]
fn at_most_one_node_config() {
    assert_eq!(
        errors("broken/two-node-configs.yaml"),
        "tests/fixtures/broken/two-node-configs.yaml:9:1: document 2 (line 8), NodeConfig \
         node-b: a second NodeConfig; there must be at most one (the first is at \
         tests/fixtures/broken/two-node-configs.yaml:1 (document 1))"
    );
}

#[test]
fn a_directory_reports_the_problems_of_every_file() {
    let e = load(&fixture("broken-dir")).unwrap_err();
    let d = "tests/fixtures/broken-dir";
    assert_eq!(
        e.to_string(),
        [
            format!("{d}/a.yaml:8:5: document 1 (line 1), Service default/app-a: spec.ports[0].targetPort: invalid type: map, expected IntOrString"),
            // The first definition did not deserialize, but it still holds the name.
            format!("{d}/b.yml:4:3: document 1 (line 1), Service default/app-a: metadata.name: defined twice; the first is at {d}/a.yaml:1 (document 1)"),
            format!("{d}/b.yml:10:1: document 2 (line 9): unsupported kind \"Deployment\" (apps/v1); Blixt reads gateway.networking.k8s.io/v1 GatewayClass, Gateway, TCPRoute, UDPRoute, TLSRoute, ReferenceGrant; v1 Service, Namespace; discovery.k8s.io/v1 EndpointSlice; blixt.dev/v1alpha1 NodeConfig"),
            format!("{d}/c.yaml: not UTF-8 text (invalid byte at offset 50)"),
        ]
        .join("\n")
    );
    let kinds: Vec<ProblemKind> = e.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            ProblemKind::InvalidField,
            ProblemKind::Duplicate,
            ProblemKind::UnknownKind,
            ProblemKind::Io
        ]
    );
}

#[test]
fn problems_carry_their_parts() {
    let e = load(&fixture("broken/bad-type.yaml")).unwrap_err();
    let p = &e.problems[0];
    assert_eq!(p.file, fixture("broken/bad-type.yaml"));
    assert_eq!(p.document, Some(2));
    assert_eq!(p.document_line, Some(8));
    assert_eq!(p.position, Some((19, 7)));
    assert_eq!(p.object.as_deref(), Some("TCPRoute default/app"));
    assert_eq!(
        p.field.as_deref(),
        Some("spec.rules[0].backendRefs[0].port")
    );
    assert_eq!(p.kind, ProblemKind::InvalidField);
}

#[test]
fn yaml_anchors_and_merge_keys_work() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports:
  - &http {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  ports:
  - <<: {name: http, protocol: TCP, targetPort: 8080}
    port: 81
"#;
    let c = load_sources(&[Source {
        path: "anchors.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let ports = |i: usize| {
        c.objects.services[i]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .clone()
    };
    assert_eq!(ports(0).port, 80);
    assert_eq!(ports(1).port, 81);
    assert_eq!(ports(1).name.as_deref(), Some("http"));
}
