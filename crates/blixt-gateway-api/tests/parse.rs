//! The generated types read real manifests (shapes taken from the upstream conformance
//! suite) and keep the fields the translator relies on.

use blixt_gateway_api::gateways::GatewayListenersTlsMode;
use blixt_gateway_api::{Gateway, GatewayClass, ReferenceGrant, TcpRoute, TlsRoute, UdpRoute};
use kube::Resource;

#[test]
fn gateway_with_tls_passthrough_listener() {
    let gw: Gateway = serde_yaml::from_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: infra
spec:
  gatewayClassName: blixt
  addresses:
  - value: 192.0.2.10
  listeners:
  - name: tls
    protocol: TLS
    port: 443
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels:
            team: a
      kinds:
      - kind: TLSRoute
    tls:
      mode: Passthrough
"#,
    )
    .expect("gateway parses");
    let l = &gw.spec.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.port, l.protocol.as_str()),
        ("tls", 443, "TLS")
    );
    assert_eq!(l.hostname.as_deref(), Some("*.example.com"));
    assert_eq!(
        l.tls.as_ref().and_then(|t| t.mode.clone()),
        Some(GatewayListenersTlsMode::Passthrough)
    );
    let ar = l.allowed_routes.as_ref().expect("allowedRoutes");
    let sel = ar
        .namespaces
        .as_ref()
        .and_then(|n| n.selector.as_ref())
        .expect("selector");
    assert_eq!(sel.match_labels.as_ref().expect("labels")["team"], "a");
    assert_eq!(
        gw.spec.addresses.as_ref().expect("addresses")[0]
            .value
            .as_deref(),
        Some("192.0.2.10")
    );
}

#[test]
fn routes_and_grant_parse() {
    let tcp: TcpRoute = serde_yaml::from_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: tcp, port: 9000}]
  rules:
  - backendRefs: [{name: svc, port: 3000, weight: 70}, {name: other, namespace: web, port: 3000}]
"#,
    )
    .expect("tcproute parses");
    let p = &tcp.spec.parent_refs.as_ref().expect("parentRefs")[0];
    assert_eq!(
        (p.section_name.as_deref(), p.port),
        (Some("tcp"), Some(9000))
    );
    let refs = &tcp.spec.rules[0].backend_refs;
    assert_eq!((refs[0].weight, refs[1].weight), (Some(70), None));
    assert_eq!(refs[1].namespace.as_deref(), Some("web"));

    let udp: UdpRoute = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {name: u}\nspec:\n  rules: [{backendRefs: [{name: dns, port: 53}]}]\n",
    )
    .expect("udproute parses");
    assert!(udp.spec.parent_refs.is_none());

    let tls: TlsRoute = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: t}\nspec:\n  hostnames: [abc.example.com]\n  rules: [{backendRefs: [{name: b, port: 443}]}]\n",
    )
    .expect("tlsroute parses");
    assert_eq!(tls.spec.hostnames, vec!["abc.example.com".to_string()]);

    let grant: ReferenceGrant = serde_yaml::from_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: infra}]
  to: [{group: "", kind: Service}]
"#,
    )
    .expect("grant parses");
    assert_eq!(grant.spec.to[0].name, None);
}

#[test]
fn api_versions_are_v1() {
    assert_eq!(Gateway::api_version(&()), "gateway.networking.k8s.io/v1");
    assert_eq!(GatewayClass::kind(&()), "GatewayClass");
    assert_eq!(TcpRoute::kind(&()), "TCPRoute");
    assert_eq!(UdpRoute::kind(&()), "UDPRoute");
    assert_eq!(TlsRoute::kind(&()), "TLSRoute");
    assert_eq!(
        ReferenceGrant::api_version(&()),
        "gateway.networking.k8s.io/v1"
    );
}
