//! Frames as an interface receives them, with the kernel's word on their checksum state, and an
//! independent check of their TCP/UDP checksums: the oracle for a NAT's checksum updates over
//! veth, where the receiving stack may never verify them itself.
//!
//! A receiver over veth trusts a packet whose sender left the checksum to offload
//! (`CHECKSUM_PARTIAL`: the field holds only the pseudo-header sum) and one marked verified
//! (`CHECKSUM_UNNECESSARY`), so wrong arithmetic in a NAT would pass unnoticed by the sockets.
//! An `AF_PACKET` socket with `PACKET_AUXDATA` sees each frame's state (`TP_STATUS_CSUMNOTREADY`
//! for partial) and [`check_l4`] holds the bytes to what that state promises: the full
//! checksum verifies, or the field equals the folded pseudo-header sum.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `TP_STATUS_CSUMNOTREADY` (include/uapi/linux/if_packet.h): the frame's checksum is left to
/// offload (`CHECKSUM_PARTIAL`).
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
/// `TP_STATUS_CSUM_VALID`: the kernel (or the NIC) verified it.
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;
const ETH_P_ALL: u16 = 0x0003;

/// One received frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// Left to checksum offload (`CHECKSUM_PARTIAL`).
    pub partial: bool,
    /// Marked verified (`CHECKSUM_UNNECESSARY`).
    pub verified: bool,
}

/// A raw socket receiving every frame that arrives on one interface.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int we own, of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc, "setsockopt")
}

impl Capture {
    /// Starts capturing frames received on `ifname` in the calling thread's namespace (run it
    /// inside [`crate::NetNs::run_in`]); the socket keeps that namespace. Needs root.
    pub fn open(ifname: &str) -> io::Result<Capture> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname}"),
            ));
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        check(raw, "AF_PACKET socket")?;
        // SAFETY: a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        // room for a burst of a few thousand frames between two drains
        set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20)?;
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: bind reads the sockaddr_ll we own, of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(rc, "bind AF_PACKET")?;
        Ok(Capture { fd })
    }

    /// Every frame received (not sent) since the last call.
    pub fn drain(&self) -> io::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65_600];
        let mut control = [0u64; 16];
        loop {
            // SAFETY: sockaddr_ll and msghdr are plain data; zeroed is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = std::ptr::from_mut(&mut from).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: every buffer msg points at is ours and outlives the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(frames);
                }
                return Err(e);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut status = 0u32;
            // SAFETY: the CMSG_* walk stays within msg_control as the kernel filled it.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux = libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>();
                        status = std::ptr::read_unaligned(aux).tp_status;
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            let len = (n as usize).min(buf.len());
            frames.push(Frame {
                bytes: buf[..len].to_vec(),
                partial: status & TP_STATUS_CSUMNOTREADY != 0,
                verified: status & TP_STATUS_CSUM_VALID != 0,
            });
        }
    }
}

/// What [`check_l4`] found in a TCP or UDP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Check {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// The frame was left to offload (`CHECKSUM_PARTIAL`) and checked as such.
    pub partial: bool,
    /// The checksum is what the frame's state promises.
    pub ok: bool,
}

fn sum16(bytes: &[u8], mut acc: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum verdict of an Ethernet frame carrying TCP or UDP over IPv4 or IPv6 (no VLAN,
/// no extension headers; `None` for anything else, fragments and truncated frames included).
pub fn check_l4(frame: &Frame) -> Option<L4Check> {
    let b = &frame.bytes;
    let ethertype = u16::from_be_bytes([*b.get(12)?, *b.get(13)?]);
    let ip = b.get(14..)?;
    let (src, dst, proto, l4, pseudo) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if ihl < 20 || total < ihl || frag & 0x3fff != 0 {
                return None;
            }
            let proto = *ip.get(9)?;
            let l4 = ip.get(ihl..total)?;
            let pseudo = sum16(&ip[12..20], u64::from(proto) + l4.len() as u64);
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            (IpAddr::from(src), IpAddr::from(dst), proto, l4, pseudo)
        }
        0x86dd => {
            let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            let proto = *ip.get(6)?;
            let l4 = ip.get(40..40 + payload)?;
            let pseudo = sum16(&ip[8..40], u64::from(proto) + l4.len() as u64);
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            (IpAddr::from(src), IpAddr::from(dst), proto, l4, pseudo)
        }
        _ => return None,
    };
    let field_at = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    let field = u16::from_be_bytes([*l4.get(field_at)?, *l4.get(field_at + 1)?]);
    let ok = if frame.partial {
        // the field holds the folded pseudo-header sum, not complemented (the stack's
        // ~csum_tcpudp_magic(saddr, daddr, len, proto, 0)); GSO frames sum a length of 0
        let without_len = pseudo - l4.len() as u64;
        field == fold(pseudo) || field == fold(without_len)
    } else if proto == 17 && field == 0 && matches!(src, IpAddr::V4(_)) {
        true // IPv4 UDP without checksum
    } else {
        fold(sum16(l4, pseudo)) == 0xffff
    };
    Some(L4Check {
        src,
        dst,
        proto,
        partial: frame.partial,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame 10.0.0.1:1000 -> 10.0.0.2:53 with payload "hi" and the
    /// checksum field `check`.
    fn udp4(check: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&1000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&10u16.to_be_bytes());
        f.extend_from_slice(&check.to_be_bytes());
        f.extend_from_slice(b"hi");
        f
    }

    fn frame(bytes: Vec<u8>, partial: bool) -> Frame {
        Frame {
            bytes,
            partial,
            verified: false,
        }
    }

    // pseudo: 0a00+0001+0a00+0002+0011+000a = 0x141e; udp: 03e8+0035+000a+0000+6869 = 0x6c90
    const FULL: u16 = !(0x141eu16 + 0x6c90);
    const PSEUDO: u16 = 0x141e;

    #[test]
    fn a_full_checksum_verifies_and_a_wrong_one_does_not() {
        assert!(check_l4(&frame(udp4(FULL), false)).unwrap().ok);
        assert!(!check_l4(&frame(udp4(FULL ^ 1), false)).unwrap().ok);
        assert!(
            check_l4(&frame(udp4(0), false)).unwrap().ok,
            "v4 UDP without checksum"
        );
    }

    #[test]
    fn a_partial_frame_holds_the_pseudo_header_sum() {
        let c = check_l4(&frame(udp4(PSEUDO), true)).unwrap();
        assert!(c.ok && c.partial);
        assert!(!check_l4(&frame(udp4(FULL), true)).unwrap().ok);
        assert_eq!(c.src, IpAddr::from(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn non_tcp_udp_and_truncated_frames_are_not_judged() {
        let mut f = udp4(FULL);
        f.truncate(40);
        assert_eq!(check_l4(&frame(f, false)), None);
        let mut arp = udp4(FULL);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(check_l4(&frame(arp, false)), None);
    }
}
