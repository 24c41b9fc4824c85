//! The status view: golden tables (plain and wide) for a healthy configuration and for one
//! where everything goes wrong, the YAML/JSON forms, and determinism.

use std::path::Path;

use blixt_standalone::config::{load, load_sources, LoadedConfig, Source};
use blixt_standalone::status::{
    render, render_table, report, OutputFormat, StatusItem, StatusReport,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn loaded(fixture: &str) -> LoadedConfig {
    load(&Path::new("tests/fixtures").join(fixture)).unwrap_or_else(|e| panic!("{e}"))
}

fn report_of(c: &LoadedConfig) -> StatusReport {
    report(&c.objects, &c.translate(&now()).statuses)
}

/// Compares line by line first, so a failure points at the line that differs.
fn same(actual: &str, expected: &str) {
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "line {} differs; whole output:\n{actual}", i + 1);
    }
    assert_eq!(actual, expected, "whole output:\n{actual}");
}

const GOOD_TABLE: &str = "\
GATEWAYCLASS   CONTROLLER                     ACCEPTED
blixt          blixt.dev/gateway-controller   True

GATEWAY        CLASS   ADDRESSES    ACCEPTED   PROGRAMMED
default/edge   blixt   192.0.2.10   True       True

LISTENER           PROTOCOL   PORT   ROUTES   ACCEPTED   PROGRAMMED   RESOLVEDREFS   CONFLICTED
default/edge/tcp   TCP        80     2        True       True         True           False
default/edge/udp   UDP        53     1        True       True         True           False

ROUTE                         PARENT             ACCEPTED   RESOLVEDREFS
TCPRoute default/app          default/edge/tcp   True       True
TCPRoute default/app-canary   default/edge/tcp   True       True
UDPRoute default/dns          default/edge:53    True       True
";

const GOOD_WIDE: &str = "\
GATEWAYCLASS   CONTROLLER                     ACCEPTED   GEN   MESSAGE
blixt          blixt.dev/gateway-controller   True       1     -

GATEWAY        CLASS   ADDRESSES    ACCEPTED   PROGRAMMED   GEN   MESSAGE
default/edge   blixt   192.0.2.10   True       True         1     -

LISTENER           PROTOCOL   PORT   ROUTES   ACCEPTED   PROGRAMMED   RESOLVEDREFS   CONFLICTED   HOSTNAME   KINDS      MESSAGE
default/edge/tcp   TCP        80     2        True       True         True           False        -          TCPRoute   -
default/edge/udp   UDP        53     1        True       True         True           False        -          UDPRoute   -

ROUTE                         PARENT             ACCEPTED   RESOLVEDREFS   HOSTNAMES   BACKENDS                                                        GEN   MESSAGE
TCPRoute default/app          default/edge/tcp   True       True           -           app-a:80 (weight 2), app-b:80 (weight 1), app-c:80 (weight 1)   1     -
TCPRoute default/app-canary   default/edge/tcp   True       True           -           app-c:80 (weight 1)                                             1     -
UDPRoute default/dns          default/edge:53    True       True           -           shared/dns:53 (weight 1)                                        1     -
";

const PROBLEMS_TABLE: &str = "\
GATEWAYCLASS   CONTROLLER                     ACCEPTED
blixt          blixt.dev/gateway-controller   True

GATEWAY   CLASS   ADDRESSES      ACCEPTED                 PROGRAMMED
prod/gw   blixt   198.51.100.7   True/ListenersNotValid   True

LISTENER        PROTOCOL   PORT   ROUTES   ACCEPTED                    PROGRAMMED      RESOLVEDREFS   CONFLICTED
prod/gw/tcp-a   TCP        9000   1        False/ProtocolConflict      False/Invalid   True           True/ProtocolConflict
prod/gw/tcp-b   TCP        9000   0        False/ProtocolConflict      False/Invalid   True           True/ProtocolConflict
prod/gw/web     HTTP       80     0        False/UnsupportedProtocol   False/Invalid   True           False
prod/gw/tls     TLS        443    1        True                        True            True           False

ROUTE                PARENT          ACCEPTED                 RESOLVEDREFS
TCPRoute prod/db     prod/gw/tcp-a   True                     False/BackendNotFound
TCPRoute prod/db     prod/gw/nope    False/NoMatchingParent   False/BackendNotFound
TLSRoute prod/shop   prod/gw         True                     True

IGNORED               REASON
GatewayClass other    controllerName \"example.com/other\" is not Blixt's
Gateway prod/theirs   gatewayClassName \"other\" is not a GatewayClass of Blixt's
UDPRoute prod/stray   no parentRef names a Gateway of Blixt's
";

#[test]
fn healthy_table() {
    same(
        &render(&report_of(&loaded("good")), OutputFormat::Table),
        GOOD_TABLE,
    );
}

#[test]
fn healthy_wide() {
    same(
        &render(&report_of(&loaded("good")), OutputFormat::Wide),
        GOOD_WIDE,
    );
}

#[test]
fn problems_table() {
    same(
        &render(
            &report_of(&loaded("status-problems.yaml")),
            OutputFormat::Table,
        ),
        PROBLEMS_TABLE,
    );
}

#[test]
fn problems_wide_show_the_messages() {
    let wide = render_table(&report_of(&loaded("status-problems.yaml")), true);
    let line = |prefix: &str| {
        wide.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{wide}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("LISTENER"),
        "LISTENER PROTOCOL PORT ROUTES ACCEPTED PROGRAMMED RESOLVEDREFS CONFLICTED HOSTNAME KINDS MESSAGE"
    );
    assert_eq!(
        line("prod/gw/web"),
        "prod/gw/web HTTP 80 0 False/UnsupportedProtocol False/Invalid True False - - \
         Accepted: protocol \"HTTP\" is not supported: Blixt serves TCP, UDP and TLS \
         (Passthrough); Programmed: the listener is not accepted"
    );
    assert_eq!(
        line("prod/gw/tls"),
        "prod/gw/tls TLS 443 1 True True True False *.example.com TLSRoute -"
    );
    assert_eq!(
        line("TCPRoute prod/db     prod/gw/nope"),
        "TCPRoute prod/db prod/gw/nope False/NoMatchingParent False/BackendNotFound - \
         missing:5432 (weight 1) 1 Accepted: Gateway prod/gw: no listener named \"nope\"; \
         ResolvedRefs: Service prod/missing not found"
    );
    assert_eq!(
        line("TLSRoute prod/shop"),
        "TLSRoute prod/shop prod/gw True True shop.example.com shop:443 (weight 1) 1 -"
    );
    assert_eq!(
        line("prod/gw "),
        "prod/gw blixt 198.51.100.7 True/ListenersNotValid True 1 \
         Accepted: listener(s) tcp-a, tcp-b, web are invalid; the others are served"
    );
}

#[test]
fn yaml_is_the_objects_with_their_statuses() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt}
spec: {controllerName: blixt.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
";
    let c = load_sources(&[Source {
        path: "classes.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    same(
        &render(&report_of(&c), OutputFormat::Yaml),
        "\
apiVersion: blixt.dev/v1alpha1
kind: StatusReport
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: GatewayClass
  metadata:
    creationTimestamp: 2000-01-01T00:00:01Z
    generation: 1
    name: blixt
  spec:
    controllerName: blixt.dev/gateway-controller
  status:
    conditions:
    - lastTransitionTime: 2023-11-14T22:13:20Z
      message: GatewayClass accepted by Blixt
      observedGeneration: 1
      reason: Accepted
      status: 'True'
      type: Accepted
    supportedFeatures:
    - name: Gateway
    - name: GatewayAddressEmpty
    - name: GatewayRouteHostnameIntersectionPrecedence
    - name: GatewayStaticAddresses
    - name: ReferenceGrant
    - name: TCPRoute
    - name: TLSRoute
    - name: UDPRoute
ignored:
- kind: GatewayClass
  name: other
  reason: controllerName \"example.com/other\" is not Blixt's
",
    );
}

#[test]
fn json_round_trips_and_renders_the_same() {
    for fixture in ["good", "status-problems.yaml"] {
        let r = report_of(&loaded(fixture));
        let json = render(&r, OutputFormat::Json);
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r, "{fixture}");
        assert_eq!(render_table(&back, true), render_table(&r, true));
        let yaml = render(&r, OutputFormat::Yaml);
        let back: StatusReport = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, r, "{fixture}");
    }
}

#[test]
fn items_are_sorted_and_carry_identity() {
    let r = report_of(&loaded("good"));
    let items: Vec<String> = r
        .items
        .iter()
        .map(|i| {
            let m = i.metadata();
            format!(
                "{} {}/{} gen {}",
                i.kind(),
                m.namespace.as_deref().unwrap_or("-"),
                m.name.as_deref().unwrap_or_default(),
                m.generation.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            "GatewayClass -/blixt gen 1",
            "Gateway default/edge gen 1",
            "TCPRoute default/app gen 1",
            "TCPRoute default/app-canary gen 1",
            "UDPRoute default/dns gen 1",
        ]
    );
    let StatusItem::Gateway(gw) = &r.items[1] else {
        panic!("second item is the Gateway")
    };
    let status = gw.status.as_ref().expect("the translator's status");
    assert_eq!(status.addresses.as_ref().unwrap()[0].value, "192.0.2.10");
}

#[test]
fn output_does_not_depend_on_object_order() {
    let c = loaded("status-problems.yaml");
    let mut shuffled = c.clone();
    let o = &mut shuffled.objects;
    o.gateway_classes.reverse();
    o.gateways.reverse();
    o.tcp_routes.reverse();
    o.tls_routes.reverse();
    o.udp_routes.reverse();
    o.services.reverse();
    for format in [OutputFormat::Wide, OutputFormat::Json] {
        assert_eq!(
            render(&report_of(&shuffled), format),
            render(&report_of(&c), format)
        );
    }
}

#[test]
fn nothing_to_show() {
    let r = report(&Default::default(), &Default::default());
    assert_eq!(render_table(&r, false), "No Blixt objects found.\n");
}

#[test]
fn output_formats_parse_like_kubectl() {
    assert_eq!("wide".parse(), Ok(OutputFormat::Wide));
    assert_eq!("yaml".parse(), Ok(OutputFormat::Yaml));
    assert_eq!("json".parse(), Ok(OutputFormat::Json));
    assert_eq!("".parse(), Ok(OutputFormat::Table));
    assert!("xml".parse::<OutputFormat>().is_err());
}
