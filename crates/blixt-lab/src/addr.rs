//! Small address types: IP prefixes and MAC addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP prefix such as `10.99.100.0/24`; the address is always the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix of `addr` with `len` bits; host bits are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            bail!("prefix length {len} is too long for {addr}");
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Prefix { addr, len })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the default route (`/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Prefix::new(ip, self.len)
                    .map(|p| p.addr == self.addr)
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    /// The `n`th address of the prefix (`host(1)` of `10.99.0.0/24` is `10.99.0.1`).
    ///
    /// # Panics
    /// If `n` does not fit in the host part.
    pub fn host(&self, n: u32) -> IpAddr {
        let host_bits = if self.addr.is_ipv4() { 32 } else { 128 } - u32::from(self.len);
        assert!(
            host_bits >= 32 || u64::from(n) < (1u64 << host_bits),
            "host {n} does not fit in {self}"
        );
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | n)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | u128::from(n))),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s.split_once('/').context("prefix needs a /length")?;
        let addr: IpAddr = addr
            .parse()
            .with_context(|| format!("bad address in {s}"))?;
        let len: u8 = len.parse().with_context(|| format!("bad length in {s}"))?;
        Prefix::new(addr, len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().with_context(|| format!("short MAC {s}"))?;
            *byte = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s}"))?;
        }
        if parts.next().is_some() {
            bail!("long MAC {s}");
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hosts_and_contains() {
        let p: Prefix = "10.99.100.7/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.99.100.0/24");
        assert_eq!(p.host(5), "10.99.100.5".parse::<IpAddr>().unwrap());
        assert!(p.contains("10.99.100.200".parse().unwrap()));
        assert!(!p.contains("10.99.101.1".parse().unwrap()));
        assert!(!p.contains("fd99:100::1".parse().unwrap()));

        let p6: Prefix = "fd99:100::/64".parse().unwrap();
        assert_eq!(p6.host(1), "fd99:100::1".parse::<IpAddr>().unwrap());
        assert!(p6.contains("fd99:100::ffff".parse().unwrap()));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn prefix_host_out_of_range() {
        let p: Prefix = "10.0.0.0/24".parse().unwrap();
        let _ = p.host(256);
    }

    #[test]
    fn mac_round_trips() {
        let m: Mac = "02:b1:00:0a:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0xb1, 0, 10, 0, 1]);
        assert_eq!(m.to_string(), "02:b1:00:0a:00:01");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            "\"02:b1:00:0a:00:01\"".to_string()
        );
        assert!("02:b1".parse::<Mac>().is_err());
    }
}
