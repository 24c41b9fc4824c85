//! Issue 19, item 1 in standalone mode: files loaded as `blixt run` and `blixt status --config`
//! load them, translated twice with the statuses carried over as `blixt run` does on a reload.
//! A newer Gateway cannot take an older one's pool address, nor the node's address (`snatV4`),
//! the router's (`reservedAddresses`), an address outside the pool and `staticAddressRanges`,
//! or loopback: each is `Programmed=False/AddressNotUsable` and has no frontend.

use std::collections::BTreeSet;
use std::net::IpAddr;

use blixt_core::translator::{ObjectKey, Translation};
use blixt_standalone::config::{load_sources, Source};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

const NODE: &str = "apiVersion: blixt.dev/v1alpha1
kind: NodeConfig
metadata: {name: node}
spec:
  snatV4: 192.0.2.1
  addressPool: [192.0.2.10]
  staticAddressRanges: [192.0.2.0/24]
  reservedAddresses: [192.0.2.254]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: blixt}
spec: {controllerName: blixt.dev/gateway-controller}
";

fn gateway(name: &str, address: Option<&str>) -> String {
    let addresses = address.map_or(String::new(), |a| {
        format!("  addresses: [{{type: IPAddress, value: \"{a}\"}}]\n")
    });
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: t}}\nspec:\n  gatewayClassName: blixt\n{addresses}  listeners: [{{name: tcp, protocol: TCP, port: 80}}]\n"
    )
}

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn programmed(t: &Translation, name: &str) -> (String, String, String) {
    let c = t.statuses.gateways[&ObjectKey::new("t", name)]
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Programmed")
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

fn addresses(t: &Translation, name: &str) -> Vec<String> {
    t.statuses.gateways[&ObjectKey::new("t", name)]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.value.clone())
        .collect()
}

#[test]
fn hostile_static_addresses_are_refused_in_standalone_mode() {
    let mut sources = vec![Source {
        path: "00-node.yaml".into(),
        text: NODE.to_string() + &gateway("victim", None),
    }];
    let first = load_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
    let before = first.translate(&now());
    assert_eq!(addresses(&before, "victim"), ["192.0.2.10"]);

    let hostile = [
        ("a-thief", "192.0.2.10"),
        ("on-node", "192.0.2.1"),
        ("on-router", "192.0.2.254"),
        ("outside", "203.0.113.5"),
        ("loopback", "127.0.0.1"),
    ];
    sources.push(Source {
        path: "10-tenants.yaml".into(),
        text: hostile
            .iter()
            .map(|(name, ip)| gateway(name, Some(ip)))
            .collect(),
    });
    let mut second = load_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
    second.carry_over(&before.statuses);
    let t = second.translate(&now());

    let vips: BTreeSet<IpAddr> = t
        .snapshot
        .frontends
        .iter()
        .map(|f| f.key.vip)
        .chain(t.tls.iter().map(|f| f.vip))
        .collect();
    let mut assigned = 0;
    for (name, ip) in hostile {
        let (status, reason, message) = programmed(&t, name);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "AddressNotUsable"),
            "{name}: {message}"
        );
        assert!(message.contains(ip), "{name}: {message}");
        assigned += addresses(&t, name).len();
        assert!(
            !t.snapshot
                .frontends
                .iter()
                .any(|f| f.name.starts_with(&format!("t/{name}/"))),
            "{name} has a frontend"
        );
    }
    println!(
        "hostile static addresses tried: {}, assigned: {assigned}",
        hostile.len()
    );
    assert_eq!(assigned, 0);
    // the older claim keeps its address, and only it is in the dataplane
    assert_eq!(addresses(&t, "victim"), ["192.0.2.10"]);
    assert_eq!(programmed(&t, "victim").0, "True");
    assert_eq!(vips, BTreeSet::from(["192.0.2.10".parse().unwrap()]));
    assert!(programmed(&t, "on-node")
        .2
        .contains("the node's address (snatV4)"));
    assert!(programmed(&t, "on-router").2.contains("reservedAddresses"));
}
