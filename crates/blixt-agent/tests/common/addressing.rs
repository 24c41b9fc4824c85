//! The fixture network's addressing, shared by the packet fixtures and the fuzzer: a client on
//! `fx0`, backends behind `fx1`, one VIP per family and the node's SNAT addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const FX0_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 0];
pub const FX1_MAC: [u8; 6] = [2, 0, 0, 0, 0xb, 0];

pub fn backend_mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, i]
}
pub fn client4() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2)
}
pub fn client6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}
pub fn vip4() -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, 10)
}
pub fn vip6() -> Ipv6Addr {
    "fd00:200::10".parse().unwrap()
}
pub fn snat4() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 254)
}
pub fn snat6() -> Ipv6Addr {
    "fd01::fe".parse().unwrap()
}
pub fn be4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, i)
}
pub fn be6(i: u8) -> Ipv6Addr {
    format!("fd01::{i}").parse().unwrap()
}
