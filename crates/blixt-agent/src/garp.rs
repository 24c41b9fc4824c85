//! Gratuitous ARP (an ARP announcement, RFC 5227 section 2.3) and unsolicited neighbour
//! advertisements (RFC 4861 section 7.2.6) for VIPs this node starts announcing.
//!
//! When a VIP moves to this node (its previous owner went away), neighbours still map it to
//! the old owner's MAC until their entry goes stale and they ask again, which can take
//! minutes. Linux updates an existing neighbour entry on a gratuitous ARP request (sender
//! address = target address, `arp_process` in net/ipv4/arp.c) and on an unsolicited NA with
//! the Override flag (`ndisc_recv_na` in net/ipv6/ndisc.c), so one frame of each per VIP and
//! interface moves the traffic at once. The XDP program only answers requests; sending needs
//! an `AF_PACKET` socket (CAP_NET_RAW).

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why announcing failed on an interface.
#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    #[error("interface {iface}: no such interface")]
    NoInterface { iface: String },
    #[error("interface {iface}: reading its MAC address (SIOCGIFHWADDR): {source}")]
    Mac {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("interface {iface}: not an Ethernet interface (hardware type {hw_type})")]
    NotEthernet { iface: String, hw_type: u16 },
    #[error("opening an AF_PACKET socket (needs CAP_NET_RAW): {0}")]
    Socket(#[source] io::Error),
    #[error("interface {iface}: sending the announcement of {vip}: {source}")]
    Send {
        iface: String,
        vip: IpAddr,
        #[source]
        source: io::Error,
    },
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
/// Shortest Ethernet frame without its FCS; shorter ones are padded (802.3).
const ETH_MIN: usize = 60;

/// Sends one gratuitous ARP (IPv4 VIPs) or unsolicited NA (IPv6 VIPs) per VIP on every
/// interface of `ifaces`. Returns the number of frames sent. Stops at the first interface
/// that fails; the caller logs it (neighbours then learn the new owner when they ask again).
pub fn announce(ifaces: &[String], vips: &[IpAddr]) -> Result<usize, GarpError> {
    if vips.is_empty() || ifaces.is_empty() {
        return Ok(0);
    }
    let sock = packet_socket()?;
    let mut sent = 0;
    for iface in ifaces {
        let ifindex = ifindex(iface)?;
        let mac = mac_of(&sock, iface)?;
        for vip in vips {
            let (ethertype, frame) = match vip {
                IpAddr::V4(a) => (ETH_P_ARP, arp_announcement(mac, *a)),
                IpAddr::V6(a) => (ETH_P_IPV6, unsolicited_na(mac, *a)),
            };
            send(&sock, ifindex, ethertype, &frame).map_err(|source| GarpError::Send {
                iface: iface.clone(),
                vip: *vip,
                source,
            })?;
            sent += 1;
        }
    }
    Ok(sent)
}

fn packet_socket() -> Result<OwnedFd, GarpError> {
    // Protocol 0: this socket receives nothing, it only sends.
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(GarpError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a freshly opened descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifindex(iface: &str) -> Result<i32, GarpError> {
    let none = || GarpError::NoInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| none())?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    i32::try_from(index)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(none)
}

/// `struct ifreq` as SIOCGIFHWADDR fills it: the name, then a `struct sockaddr` (family,
/// 14 bytes of address), padded to the size of the kernel's union.
#[repr(C)]
struct IfreqHwaddr {
    name: [u8; 16],
    family: u16,
    data: [u8; 14],
    pad: [u8; 8],
}

/// include/uapi/linux/sockios.h
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
/// include/uapi/linux/if_arp.h
const ARPHRD_ETHER: u16 = 1;

/// The interface's MAC, asked of the kernel through `sock` so that it comes from the
/// agent's network namespace (/sys/class/net is the mount namespace's view, which can be
/// another's).
fn mac_of(sock: &OwnedFd, iface: &str) -> Result<[u8; 6], GarpError> {
    let mut req = IfreqHwaddr {
        name: [0; 16],
        family: 0,
        data: [0; 14],
        pad: [0; 8],
    };
    let name = iface.as_bytes();
    if name.len() >= req.name.len() {
        return Err(GarpError::NoInterface {
            iface: iface.to_owned(),
        });
    }
    req.name[..name.len()].copy_from_slice(name);
    // SAFETY: `req` is a writable ifreq-sized buffer for the whole call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCGIFHWADDR,
            std::ptr::from_mut(&mut req),
        )
    };
    if rc < 0 {
        return Err(GarpError::Mac {
            iface: iface.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    if req.family != ARPHRD_ETHER {
        return Err(GarpError::NotEthernet {
            iface: iface.to_owned(),
            hw_type: req.family,
        });
    }
    let mut mac = [0; 6];
    mac.copy_from_slice(&req.data[..6]);
    Ok(mac)
}

fn send(sock: &OwnedFd, ifindex: i32, ethertype: u16, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: `frame` and `addr` are valid for the lengths given for the whole call.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN + 32);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A broadcast ARP request whose sender and target are both `vip`, from `mac`.
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], mac, ETH_P_ARP);
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f.resize(ETH_MIN, 0);
    f
}

/// An unsolicited neighbour advertisement for `vip` with Override set and the target
/// link-layer address option, from `vip` to all nodes (ff02::1), hop limit 255.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code, checksum (below)
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // flags: Override only
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(vip, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = ethernet([0x33, 0x33, 0, 0, 0, 1], mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255 (RFC 4861 7.1.2)
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum: the one's complement sum over the IPv6 pseudo-header and the message
/// (RFC 8200 section 8.1).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |b| u64::from(*b));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_announcement_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = arp_announcement(mac, Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(f.len(), ETH_MIN);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[192, 0, 2, 7], "sender");
        assert_eq!(&f[38..42], &[192, 0, 2, 7], "target");
    }

    #[test]
    fn na_checksum_verifies() {
        let vip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let f = unsolicited_na([2, 0, 0, 0, 0, 1], vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        let icmp = &f[54..];
        // Summing a message with its checksum in place gives 0 (complemented).
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(vip, dst, icmp), 0);
        assert_eq!(icmp[4], 0x20, "Override, not Solicited");
    }
}
