//! Forgets the kernel's neighbour entries of backends that are new in a generation.
//!
//! The dataplane forwards with `bpf_fib_lookup`, which takes a REACHABLE or STALE neighbour
//! entry as it is and, unlike the stack's own output path, never starts its revalidation. An
//! address that comes back as a backend with a new MAC (Kubernetes: a pod deleted and its IP
//! given at once to a new pod) would keep getting frames for the old MAC. Deleting the dynamic
//! entries of such an address when it becomes a backend makes the first packet to it miss the
//! neighbour table (`BPF_FIB_LKUP_RET_NO_NEIGH`), so the dataplane sends it through
//! `bpf_redirect_neigh` and the kernel resolves the address afresh.
//!
//! Raw rtnetlink on a `NETLINK_ROUTE` socket of the calling thread's network namespace: an
//! `RTM_GETNEIGH` dump per family, then one `RTM_DELNEIGH` per matching entry. PERMANENT and
//! NOARP entries are left alone (someone configured them), and so is every entry of another
//! address (gateways). Failures are logged, never returned: a neighbour entry that stays is
//! the situation before this module existed, not a reason to refuse a generation.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tracing::{debug, warn};

const NLMSG_HDRLEN: usize = 16;
const NDMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// One neighbour entry as a dump reports it (the parts this module needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub family: u8,
    pub ifindex: i32,
    /// `NUD_*` bits.
    pub state: u16,
    pub dst: IpAddr,
}

impl Neighbour {
    /// Whether the kernel learnt this entry (not PERMANENT, not NOARP): the ones to forget.
    pub fn is_dynamic(&self) -> bool {
        self.state & (NUD_PERMANENT | NUD_NOARP) == 0
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_header(buf: &mut Vec<u8>, len: usize, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
}

fn push_ndmsg(buf: &mut Vec<u8>, family: u8, ifindex: i32, state: u16) {
    buf.extend_from_slice(&[family, 0, 0, 0]); // family, pad1, pad2
    buf.extend_from_slice(&ifindex.to_ne_bytes());
    buf.extend_from_slice(&state.to_ne_bytes());
    buf.extend_from_slice(&[0, 0]); // ndm_flags, ndm_type
}

/// `RTM_GETNEIGH` dump of one family.
pub fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NDMSG_LEN;
    let mut buf = Vec::with_capacity(len);
    push_header(&mut buf, len, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq);
    push_ndmsg(&mut buf, family, 0, 0);
    buf
}

/// `RTM_DELNEIGH` of one entry (family, interface, `NDA_DST`), acknowledged.
pub fn delete_request(n: &Neighbour, seq: u32) -> Vec<u8> {
    let addr: Vec<u8> = match n.dst {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let rta_len = 4 + addr.len();
    let len = NLMSG_HDRLEN + NDMSG_LEN + align4(rta_len);
    let mut buf = Vec::with_capacity(len);
    push_header(&mut buf, len, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq);
    push_ndmsg(&mut buf, n.family, n.ifindex, 0);
    buf.extend_from_slice(&(rta_len as u16).to_ne_bytes());
    buf.extend_from_slice(&NDA_DST.to_ne_bytes());
    buf.extend_from_slice(&addr);
    buf.resize(len, 0);
    buf
}

/// What one received datagram held for the request of sequence `seq`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub neighbours: Vec<Neighbour>,
    /// `NLMSG_DONE`, or an `NLMSG_ERROR` (an ack when `error` is `None`): the request is over.
    pub done: bool,
    /// The errno of an `NLMSG_ERROR` that was not an ack (positive).
    pub error: Option<i32>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the netlink messages of one datagram; messages of other sequence numbers are
/// skipped.
pub fn parse(buf: &[u8], seq: u32) -> io::Result<Parsed> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    let mut out = Parsed::default();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(bad("message length out of bounds"));
        }
        let kind = u16_at(buf, at + 4);
        let msg_seq = u32_at(buf, at + 8);
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => out.done = true,
            NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(bad("short error message"));
                }
                let errno = -(u32_at(body, 0) as i32);
                out.done = true;
                if errno != 0 {
                    out.error = Some(errno);
                }
            }
            RTM_NEWNEIGH => {
                if body.len() < NDMSG_LEN {
                    return Err(bad("short ndmsg"));
                }
                let family = body[0];
                let ifindex = u32_at(body, 4) as i32;
                let state = u16_at(body, 8);
                let mut dst = None;
                let mut a = NDMSG_LEN;
                while a + 4 <= body.len() {
                    let rta_len = u16_at(body, a) as usize;
                    let rta_type = u16_at(body, a + 2);
                    if rta_len < 4 || a + rta_len > body.len() {
                        return Err(bad("attribute length out of bounds"));
                    }
                    let data = &body[a + 4..a + rta_len];
                    if rta_type == NDA_DST {
                        dst = match (family, data.len()) {
                            (AF_INET, 4) => {
                                Some(IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes")))
                            }
                            (AF_INET6, 16) => {
                                Some(IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes")))
                            }
                            _ => None,
                        };
                    }
                    a += align4(rta_len);
                }
                if let Some(dst) = dst {
                    out.neighbours.push(Neighbour {
                        family,
                        ifindex,
                        state,
                        dst,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The entries to delete: dynamic ones whose address is one of `addrs`.
pub fn to_forget(entries: &[Neighbour], addrs: &BTreeSet<IpAddr>) -> Vec<Neighbour> {
    entries
        .iter()
        .filter(|n| n.is_dynamic() && addrs.contains(&n.dst))
        .copied()
        .collect()
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: the option value is a timeval of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is a valid buffer of msg.len() bytes; an unconnected netlink socket
        // sends to the kernel.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives datagrams until the request `seq` is done.
    fn collect(&mut self, seq: u32) -> io::Result<Parsed> {
        let mut all = Parsed::default();
        while !all.done {
            // SAFETY: buf is ours, of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink: message truncated"));
            }
            let p = parse(&self.buf[..n], seq)?;
            all.neighbours.extend(p.neighbours);
            all.done = p.done;
            all.error = p.error;
        }
        Ok(all)
    }

    fn dump(&mut self, family: u8) -> io::Result<Vec<Neighbour>> {
        let seq = self.next_seq();
        self.send(&dump_request(family, seq))?;
        let p = self.collect(seq)?;
        match p.error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(p.neighbours),
        }
    }

    /// Deletes one entry; `false` when it was gone already.
    fn delete(&mut self, n: &Neighbour) -> io::Result<bool> {
        let seq = self.next_seq();
        self.send(&delete_request(n, seq))?;
        match self.collect(seq)?.error {
            None => Ok(true),
            Some(libc::ENOENT) => Ok(false),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Deletes the dynamic neighbour entries of `addrs` on every interface of the calling
/// thread's network namespace; returns how many were deleted. Failures are logged as
/// warnings naming the addresses concerned.
pub fn forget(addrs: &BTreeSet<IpAddr>) -> usize {
    if addrs.is_empty() {
        return 0;
    }
    let mut sock = match Socket::open() {
        Ok(s) => s,
        Err(e) => {
            warn!(
                ?addrs,
                "neighbour entries of new backends not flushed: netlink: {e}"
            );
            return 0;
        }
    };
    let mut deleted = 0;
    for family in [AF_INET, AF_INET6] {
        let wanted: BTreeSet<IpAddr> = addrs
            .iter()
            .filter(|a| a.is_ipv4() == (family == AF_INET))
            .copied()
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let entries = match sock.dump(family) {
            Ok(e) => e,
            Err(e) => {
                warn!(addrs = ?wanted, "neighbour entries of new backends not flushed: dump: {e}");
                continue;
            }
        };
        for n in to_forget(&entries, &wanted) {
            match sock.delete(&n) {
                Ok(true) => {
                    deleted += 1;
                    debug!(addr = %n.dst, ifindex = n.ifindex, state = n.state, "neighbour entry of a new backend deleted");
                }
                Ok(false) => {}
                Err(e) => warn!(
                    addr = %n.dst,
                    ifindex = n.ifindex,
                    "neighbour entry of a new backend not deleted: {e}"
                ),
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn header(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut b = Vec::new();
        push_header(&mut b, len as usize, kind, flags, seq);
        b
    }

    /// An RTM_NEWNEIGH as the kernel dumps it: ndmsg, NDA_DST, NDA_LLADDR.
    fn newneigh(seq: u32, family: u8, ifindex: i32, state: u16, dst: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        push_ndmsg(&mut body, family, ifindex, state);
        body.extend_from_slice(&((4 + dst.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&NDA_DST.to_ne_bytes());
        body.extend_from_slice(dst);
        body.resize(align4(body.len()), 0);
        body.extend_from_slice(&10u16.to_ne_bytes()); // NDA_LLADDR, 6 bytes + padding
        body.extend_from_slice(&2u16.to_ne_bytes());
        body.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        let mut m = header((NLMSG_HDRLEN + body.len()) as u32, RTM_NEWNEIGH, 2, seq);
        m.extend(body);
        m
    }

    #[test]
    fn dump_request_is_a_header_and_an_ndmsg() {
        let b = dump_request(AF_INET6, 7);
        assert_eq!(b.len(), 28);
        assert_eq!(u32_at(&b, 0), 28);
        assert_eq!(u16_at(&b, 4), RTM_GETNEIGH);
        assert_eq!(u16_at(&b, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_at(&b, 8), 7);
        assert_eq!(u32_at(&b, 12), 0);
        assert_eq!(&b[16..], &[AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn delete_request_names_family_interface_and_address() {
        let n = Neighbour {
            family: AF_INET,
            ifindex: 5,
            state: 0x02,
            dst: "10.99.10.2".parse().unwrap(),
        };
        let b = delete_request(&n, 9);
        assert_eq!(b.len(), 16 + 12 + 8);
        assert_eq!(u32_at(&b, 0), 36);
        assert_eq!(u16_at(&b, 4), RTM_DELNEIGH);
        assert_eq!(u16_at(&b, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&b, 8), 9);
        assert_eq!(b[16], AF_INET);
        assert_eq!(u32_at(&b, 20), 5);
        assert_eq!(u16_at(&b, 24), 0, "no state in a delete");
        assert_eq!(u16_at(&b, 28), 8);
        assert_eq!(u16_at(&b, 30), NDA_DST);
        assert_eq!(&b[32..], &[10, 99, 10, 2]);

        let v6 = Neighbour {
            family: AF_INET6,
            ifindex: 3,
            state: 0x04,
            dst: "fd99:10::2".parse().unwrap(),
        };
        let b = delete_request(&v6, 1);
        assert_eq!(b.len(), 16 + 12 + 20);
        assert_eq!(u16_at(&b, 28), 20);
        let Neighbour { dst, .. } = v6;
        let IpAddr::V6(a) = dst else { unreachable!() };
        assert_eq!(&b[32..], &a.octets());
    }

    #[test]
    fn a_dump_round_trips_through_parse() {
        let v4 = [10, 99, 10, 2];
        let v6: Ipv6Addr = "fd99:10::2".parse().unwrap();
        let mut buf = newneigh(4, AF_INET, 5, 0x02, &v4);
        buf.extend(newneigh(4, AF_INET6, 6, NUD_PERMANENT, &v6.octets()));
        buf.extend(newneigh(3, AF_INET, 7, 0x04, &[10, 0, 0, 1])); // another request
        let p = parse(&buf, 4).unwrap();
        assert!(!p.done);
        assert_eq!(
            p.neighbours,
            vec![
                Neighbour {
                    family: AF_INET,
                    ifindex: 5,
                    state: 0x02,
                    dst: IpAddr::from(v4),
                },
                Neighbour {
                    family: AF_INET6,
                    ifindex: 6,
                    state: NUD_PERMANENT,
                    dst: v6.into(),
                },
            ]
        );

        let mut done = header(20, NLMSG_DONE, 2, 4);
        done.extend_from_slice(&0i32.to_ne_bytes());
        let p = parse(&done, 4).unwrap();
        assert!(p.done);
        assert_eq!(p.error, None);
    }

    #[test]
    fn errors_and_acks_end_a_request() {
        let mut ack = header(36, NLMSG_ERROR, 0, 2);
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend(header(16, RTM_DELNEIGH, 5, 2)); // the request echoed back
        let p = parse(&ack, 2).unwrap();
        assert!(p.done);
        assert_eq!(p.error, None);

        let mut nack = header(36, NLMSG_ERROR, 0, 2);
        nack.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        nack.extend(header(16, RTM_DELNEIGH, 5, 2));
        assert_eq!(parse(&nack, 2).unwrap().error, Some(libc::ENOENT));

        let mut short = header(40, NLMSG_ERROR, 0, 2);
        short.extend_from_slice(&0i32.to_ne_bytes());
        assert!(parse(&short, 2).is_err(), "length beyond the datagram");
    }

    #[test]
    fn only_dynamic_entries_of_the_addresses_are_forgotten() {
        let be: IpAddr = "10.99.10.2".parse().unwrap();
        let gw: IpAddr = "10.99.10.1".parse().unwrap();
        let n = |dst, state, ifindex| Neighbour {
            family: AF_INET,
            ifindex,
            state,
            dst,
        };
        let entries = [
            n(be, 0x02, 4),          // REACHABLE
            n(be, 0x04, 5),          // STALE, another interface
            n(be, NUD_PERMANENT, 6), // configured
            n(be, NUD_NOARP, 7),
            n(gw, 0x02, 4), // a gateway
        ];
        let addrs = BTreeSet::from([be]);
        assert_eq!(
            to_forget(&entries, &addrs),
            vec![entries[0], entries[1]],
            "REACHABLE and STALE of the backend only"
        );
    }
}
