use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use prost::Message;

use super::*;

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn arb_backend() -> impl Strategy<Value = Backend> {
    (arb_ip(), any::<u16>(), any::<u32>(), any::<bool>()).prop_map(|(addr, port, weight, t)| {
        Backend {
            addr: BackendAddr { addr, port },
            weight,
            state: if t {
                BackendState::Terminating
            } else {
                BackendState::Active
            },
        }
    })
}

fn arb_frontend() -> impl Strategy<Value = Frontend> {
    (
        ".{0,20}",
        arb_ip(),
        any::<u16>(),
        any::<bool>(),
        proptest::collection::vec(arb_backend(), 0..6),
        any::<u32>(),
    )
        .prop_map(|(name, vip, port, udp, backends, reject_weight)| Frontend {
            name,
            key: FrontendKey {
                vip,
                port,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            },
            backends,
            reject_weight,
        })
}

fn arb_sni_route() -> impl Strategy<Value = SniRoute> {
    (
        "(\\*\\.)?[a-z]{1,8}\\.example",
        "[a-z-]{0,8}",
        proptest::option::of("[a-z]{1,5}/[a-z]{1,5}"),
        proptest::collection::vec(arb_backend(), 0..4),
        any::<u32>(),
    )
        .prop_map(
            |(hostname, listener, route, backends, reject_weight)| SniRoute {
                hostname,
                listener,
                route,
                backends,
                reject_weight,
            },
        )
}

fn arb_tls_frontend() -> impl Strategy<Value = TlsFrontend> {
    (
        ".{0,20}",
        arb_ip(),
        any::<u16>(),
        proptest::collection::vec(arb_sni_route(), 0..4),
    )
        .prop_map(|(name, vip, port, routes)| TlsFrontend {
            name,
            vip,
            port,
            routes,
        })
}

fn arb_update() -> impl Strategy<Value = Generation> {
    (
        any::<u64>(),
        proptest::collection::vec(arb_frontend(), 0..5),
        proptest::collection::vec(arb_tls_frontend(), 0..3),
        proptest::option::of(proptest::collection::btree_set(arb_ip(), 0..4)),
    )
        .prop_map(|(generation, frontends, tls, announce)| Generation {
            snapshot: Snapshot {
                generation,
                frontends,
            },
            tls,
            announce,
        })
}

proptest! {
    /// Domain -> wire -> bytes -> wire -> domain is the identity.
    #[test]
    fn update_round_trips_through_bytes(update in arb_update()) {
        let wire = pb::SnapshotUpdate::from(&update);
        let bytes = wire.encode_to_vec();
        let decoded = pb::SnapshotUpdate::decode(bytes.as_slice()).expect("decode");
        prop_assert_eq!(&decoded, &wire);
        prop_assert_eq!(Generation::try_from(decoded).expect("to core"), update);
    }

    /// Any address length other than 4 or 16 is refused, naming the field and the length.
    #[test]
    fn bad_address_lengths_are_named(len in (0usize..40).prop_filter("valid", |l| *l != 4 && *l != 16)) {
        let mut wire = pb::SnapshotUpdate::from(&sample());
        wire.snapshot.as_mut().unwrap().frontends[0].backends[1].addr = vec![1; len];
        let err = Generation::try_from(&wire).unwrap_err();
        prop_assert_eq!(err.field, "snapshot.frontends[0].backends[1].addr");
        prop_assert_eq!(err.problem, Problem::AddressLength { len });
    }
}

fn be(addr: &str, port: u16) -> Backend {
    Backend {
        addr: BackendAddr {
            addr: addr.parse().unwrap(),
            port,
        },
        weight: 1,
        state: BackendState::Active,
    }
}

fn sample() -> Generation {
    Generation {
        snapshot: Snapshot {
            generation: 3,
            frontends: vec![Frontend {
                name: "default/gw/tcp".into(),
                key: FrontendKey {
                    vip: "192.0.2.1".parse().unwrap(),
                    port: 80,
                    protocol: Protocol::Tcp,
                },
                backends: vec![be("10.0.0.1", 8080), be("10.0.0.2", 8080)],
                reject_weight: 0,
            }],
        },
        tls: vec![TlsFrontend {
            name: "default/gw/tls".into(),
            vip: "2001:db8::1".parse().unwrap(),
            port: 443,
            routes: vec![
                SniRoute {
                    hostname: "a.example".into(),
                    listener: "tls".into(),
                    route: Some("default/a".into()),
                    backends: vec![be("2001:db8::10", 8443)],
                    reject_weight: 0,
                },
                SniRoute {
                    hostname: "*.example".into(),
                    listener: "tls".into(),
                    route: None,
                    backends: vec![],
                    reject_weight: 0,
                },
            ],
        }],
        announce: Some(["192.0.2.1".parse().unwrap()].into()),
    }
}

#[test]
fn announce_absent_means_every_vip_and_bad_lengths_are_named() {
    let mut wire = pb::SnapshotUpdate::from(&sample());
    assert_eq!(
        Generation::try_from(&wire).unwrap().announce,
        Some(["192.0.2.1".parse().unwrap()].into())
    );
    wire.announce = None;
    assert_eq!(Generation::try_from(&wire).unwrap().announce, None);
    wire.announce = Some(pb::Announce {
        vips: vec![vec![192, 0, 2, 1], vec![1, 2, 3]],
    });
    let err = Generation::try_from(&wire).unwrap_err();
    assert_eq!(err.field, "announce.vips[1]");
    assert_eq!(err.problem, Problem::AddressLength { len: 3 });
}

/// Applies `edit` to the wire form of [`sample`] and returns the conversion error.
fn error_after(edit: impl FnOnce(&mut pb::Snapshot)) -> ConversionError {
    let mut wire = pb::SnapshotUpdate::from(&sample());
    edit(wire.snapshot.as_mut().unwrap());
    Generation::try_from(&wire).expect_err("malformed message accepted")
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(ConversionError, &str, Problem)> = vec![
        (
            error_after(|s| s.frontends[0].vip = vec![]),
            "snapshot.frontends[0].vip",
            Problem::AddressLength { len: 0 },
        ),
        (
            error_after(|s| s.frontends[0].port = 70000),
            "snapshot.frontends[0].port",
            Problem::PortRange { value: 70000 },
        ),
        (
            error_after(|s| s.frontends[0].protocol = 0),
            "snapshot.frontends[0].protocol",
            Problem::Unspecified,
        ),
        (
            error_after(|s| s.frontends[0].protocol = 9),
            "snapshot.frontends[0].protocol",
            Problem::UnknownEnum { value: 9 },
        ),
        (
            error_after(|s| s.frontends[0].backends[1].port = 65536),
            "snapshot.frontends[0].backends[1].port",
            Problem::PortRange { value: 65536 },
        ),
        (
            error_after(|s| s.frontends[0].backends[0].state = 0),
            "snapshot.frontends[0].backends[0].state",
            Problem::Unspecified,
        ),
        (
            error_after(|s| s.tls_frontends[0].vip = vec![0; 5]),
            "snapshot.tls_frontends[0].vip",
            Problem::AddressLength { len: 5 },
        ),
        (
            error_after(|s| s.tls_frontends[0].port = u32::MAX),
            "snapshot.tls_frontends[0].port",
            Problem::PortRange { value: u32::MAX },
        ),
        (
            error_after(|s| s.tls_frontends[0].routes[0].backends[0].state = -1),
            "snapshot.tls_frontends[0].routes[0].backends[0].state",
            Problem::UnknownEnum { value: -1 },
        ),
    ];
    for (err, field, problem) in cases {
        assert_eq!(
            (err.field.as_str(), &err.problem),
            (field, &problem),
            "{err}"
        );
    }
}

#[test]
fn a_message_converted_on_its_own_names_fields_from_itself() {
    let wire = pb::SnapshotUpdate::from(&sample());
    let mut frontend = wire.snapshot.unwrap().frontends[0].clone();
    frontend.backends[1].addr = vec![1, 2, 3];
    let err = Frontend::try_from(&frontend).unwrap_err();
    assert_eq!(err.field, "backends[1].addr");
    let err = Backend::try_from(&frontend.backends[1]).unwrap_err();
    assert_eq!(err.field, "addr");
}

#[test]
fn missing_snapshot_is_named() {
    let err = Generation::try_from(pb::SnapshotUpdate {
        generation: 1,
        snapshot: None,
        announce: None,
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "snapshot: missing");
}

#[test]
fn errors_become_invalid_argument_with_the_path() {
    let err = error_after(|s| s.frontends[0].backends[1].addr = vec![1, 2, 3]);
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "snapshot.frontends[0].backends[1].addr: 3 bytes, expected 4 (IPv4) or 16 (IPv6)"
    );
}

#[test]
fn single_messages_convert_with_relative_paths() {
    let wire = pb::Backend {
        addr: vec![10, 0, 0, 1],
        port: 1 << 20,
        weight: 1,
        state: pb::BackendState::Active.into(),
    };
    assert_eq!(
        Backend::try_from(&wire).unwrap_err().to_string(),
        "port: 1048576 is not a port (0..=65535)"
    );
    let fe = &sample().snapshot.frontends[0];
    assert_eq!(&Frontend::try_from(&pb::Frontend::from(fe)).unwrap(), fe);
    let t = &sample().tls[0];
    assert_eq!(
        &TlsFrontend::try_from(&pb::TlsFrontend::from(t)).unwrap(),
        t
    );
}

#[test]
fn ipv4_mapped_ipv6_keeps_its_family() {
    let ip: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(ip_to_bytes(ip).len(), 16);
    assert_eq!(ip_from_bytes(&ip_to_bytes(ip), NO_PATH).unwrap(), ip);
}
