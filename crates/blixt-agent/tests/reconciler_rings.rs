//! The reconciler rebuilds and rewrites only the Maglev rings whose input changed: a snapshot
//! that changes one frontend's backends builds one table and writes one ring, every other
//! frontend keeps its ring index and bytes, and the next apply of the same snapshot writes
//! nothing. Checked on a real (unattached) dataplane, reading the rings back from the map.

use std::net::{IpAddr, Ipv4Addr};

use blixt_agent::{NodeConfig, Reconciler};
use blixt_bpf::{Dataplane, DataplaneOptions};
use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};

const RING: u32 = 251;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (loading BPF maps): run as root, as `make test` does");
    }
}

fn frontend(port: u16, backends: &[(u8, u32)]) -> Frontend {
    Frontend {
        name: format!("fe-{port}"),
        key: FrontendKey {
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port,
            protocol: Protocol::Tcp,
        },
        backends: backends
            .iter()
            .map(|&(i, weight)| Backend {
                addr: BackendAddr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)),
                    port: 8080,
                },
                weight,
                state: BackendState::Active,
            })
            .collect(),
        reject_weight: 0,
    }
}

fn snapshot(generation: u64, frontends: Vec<Frontend>) -> Snapshot {
    Snapshot {
        generation,
        frontends,
    }
}

/// (ring index, ring bytes) of every frontend, by port.
fn rings(rec: &mut Reconciler) -> Vec<(u16, u32, Vec<u32>)> {
    let view = rec.view();
    view.iter()
        .map(|f| {
            let table = rec.dataplane().maps.rings.read(f.ring).to_vec();
            (f.key.port, f.ring, table)
        })
        .collect()
}

#[test]
fn only_changed_frontends_get_a_new_table_and_ring() {
    require_root();
    let dp = Dataplane::load(DataplaneOptions {
        max_frontends: 8,
        max_backends: 64,
        ring_size: RING,
        conntrack_entries: 1024,
        pin_dir: None,
        ..DataplaneOptions::default()
    })
    .expect("load dataplane");
    let mut rec = Reconciler::new(dp).expect("reconciler");
    rec.set_node_config(&NodeConfig {
        snat_v4: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ..NodeConfig::default()
    })
    .expect("node config");

    let fes = |w: u32| {
        vec![
            frontend(80, &[(1, 1), (2, 1)]),
            frontend(81, &[(1, 1), (2, w)]),
            frontend(82, &[(3, 1)]),
        ]
    };
    let first = rec.apply(&snapshot(1, fes(1))).expect("first apply");
    assert_eq!((first.tables_built, first.rings_written), (3, 3));
    let before = rings(&mut rec);

    // the same frontends again: nothing built, nothing written
    let same = rec.apply(&snapshot(2, fes(1))).expect("same apply");
    assert_eq!((same.tables_built, same.rings_written), (0, 0), "{same:?}");
    assert_eq!(rings(&mut rec), before);

    // one weight changes: one table, one ring, the others untouched
    let changed = rec.apply(&snapshot(3, fes(3))).expect("changed apply");
    assert_eq!(
        (
            changed.tables_built,
            changed.rings_written,
            changed.frontends_changed
        ),
        (1, 1, 1),
        "{changed:?}"
    );
    let after = rings(&mut rec);
    for ((port, ring, table), (port_b, ring_b, table_b)) in after.iter().zip(&before) {
        assert_eq!(port, port_b);
        if *port == 81 {
            assert_ne!(ring, ring_b, "the changed frontend flips to another ring");
            assert_ne!(table, table_b, "weights 1:3 give another table");
        } else {
            assert_eq!(
                (ring, table),
                (ring_b, table_b),
                "frontend {port} untouched"
            );
        }
    }
    let shares = rec
        .view()
        .into_iter()
        .find(|f| f.key.port == 81)
        .expect("frontend 81")
        .backends;
    let slots: Vec<u32> = shares.iter().map(|b| b.3).collect();
    assert!(
        slots[1] > 2 * slots[0],
        "weight 3 backend has most slots: {slots:?}"
    );

    // a removed backend whose table turns out the same is still a rebuild, not a write:
    // frontend 82 keeps backend 3 and gains a weight-0 one (never in the table)
    let mut fes4 = fes(3);
    fes4[2] = frontend(82, &[(3, 1), (4, 0)]);
    let zero = rec.apply(&snapshot(4, fes4)).expect("weight-0 apply");
    assert_eq!((zero.tables_built, zero.rings_written), (1, 0), "{zero:?}");
}
