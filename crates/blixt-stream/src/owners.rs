//! Which agent announces each VIP (answers ARP / NDP for it): one owner per VIP among the
//! agents subscribed to the server, by rendezvous (highest-random-weight) hashing of the VIP
//! over the node names. Every node scores every VIP; the highest score owns it. When a node
//! leaves, only the VIPs it owned move (each to its next-highest node); when one joins, it
//! takes over only the VIPs it now scores highest on. The hash is fixed (no per-process seed),
//! so every controller replica computes the same owners from the same set of nodes, and a
//! leader change moves nothing once the agents have reconnected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// FNV-1a over `bytes`, continuing from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// The weight of `node` for `vip`. FNV-1a alone mixes the last bytes poorly (node names often
/// differ only in a trailing digit), so its result goes through the splitmix64 finalizer.
fn score(vip: IpAddr, node: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = match vip {
        IpAddr::V4(a) => fnv1a(fnv1a(h, &[4]), &a.octets()),
        IpAddr::V6(a) => fnv1a(fnv1a(h, &[6]), &a.octets()),
    };
    h = fnv1a(h, node.as_bytes());
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node among `nodes` that announces `vip`; `None` without nodes. Equal scores (never seen
/// in practice) go to the greater name, so the answer never depends on the order of `nodes`.
pub fn owner<'a, I>(vip: IpAddr, nodes: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    nodes
        .into_iter()
        .max_by_key(|node| (score(vip, node), *node))
}

/// The owner of every VIP of `vips` among `nodes` (VIPs without an owner when `nodes` is
/// empty are left out).
pub fn owners<'a>(
    vips: impl IntoIterator<Item = &'a IpAddr>,
    nodes: &BTreeSet<String>,
) -> BTreeMap<IpAddr, String> {
    vips.into_iter()
        .filter_map(|vip| {
            Some((
                *vip,
                owner(*vip, nodes.iter().map(String::as_str))?.to_owned(),
            ))
        })
        .collect()
}

/// The VIPs of `vips` that `node` announces when `nodes` are subscribed.
pub fn announced_by<'a>(
    node: &str,
    vips: impl IntoIterator<Item = &'a IpAddr>,
    nodes: &BTreeSet<String>,
) -> BTreeSet<IpAddr> {
    vips.into_iter()
        .filter(|vip| owner(**vip, nodes.iter().map(String::as_str)) == Some(node))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn vips(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200u32 + i))
                } else {
                    IpAddr::from(std::net::Ipv6Addr::from(
                        0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
                    ))
                }
            })
            .collect()
    }

    #[test]
    fn one_owner_per_vip_whatever_the_order() {
        let v = vips(200);
        let all = nodes(&["node-a", "node-b", "node-c"]);
        let owners = owners(&v, &all);
        assert_eq!(owners.len(), v.len());
        for vip in &v {
            let reversed = owner(*vip, ["node-c", "node-b", "node-a"]);
            assert_eq!(reversed, Some(owners[vip].as_str()), "{vip}");
        }
        let split: usize = all.iter().map(|n| announced_by(n, &v, &all).len()).sum();
        assert_eq!(split, v.len(), "every VIP announced by exactly one node");
        // Spread: each of three nodes gets a fair share of 200 VIPs.
        for n in &all {
            let mine = announced_by(n, &v, &all).len();
            assert!((30..=110).contains(&mine), "{n} owns {mine} of 200");
        }
        assert!(owner(v[0], std::iter::empty()).is_none());
    }

    #[test]
    fn a_departure_moves_only_the_departed_nodes_vips() {
        let v = vips(300);
        let before = owners(&v, &nodes(&["node-1", "node-2", "node-3"]));
        let after = owners(&v, &nodes(&["node-1", "node-3"]));
        let mut moved = 0;
        for vip in &v {
            if before[vip] == "node-2" {
                assert_ne!(after[vip], "node-2");
                moved += 1;
            } else {
                assert_eq!(
                    before[vip], after[vip],
                    "{vip} moved though its owner stayed"
                );
            }
        }
        assert!(moved > 0);
        // And back: the returning node takes exactly its VIPs again.
        assert_eq!(owners(&v, &nodes(&["node-1", "node-2", "node-3"])), before);
    }
}
