//! The few system calls the lab makes itself: entering a network namespace, comparing namespace
//! identities, and the ethtool ioctls for GRO and TX checksum offload.
//!
//! Everything `unsafe` in the crate lives here, behind safe functions.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Moves the calling thread into the network namespace referred to by `ns`.
///
/// Only the calling thread moves; threads it spawns afterwards inherit the namespace.
pub(crate) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open descriptor for the whole call; setns does not retain it.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Identity (device, inode) of a namespace file such as `/proc/thread-self/ns/net`.
fn ns_identity(path: &str) -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Whether the calling thread is in a named network namespace (one under `/run/netns`, as
/// `ip netns add` creates). The host's own namespace is not named, and `/proc/1/ns/net` cannot
/// be relied on to identify it (sandboxes often deny reading it). Unknown counts as no, so
/// callers err on the side of refusing.
pub(crate) fn in_named_netns() -> bool {
    let Ok(me) = ns_identity("/proc/thread-self/ns/net") else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::metadata(e.path())
            .map(|m| (m.dev(), m.ino()) == me)
            .unwrap_or(false)
    })
}

/// Identity of the calling thread's network namespace, for tests and diagnostics.
pub(crate) fn current_netns_identity() -> io::Result<(u64, u64)> {
    ns_identity("/proc/thread-self/ns/net")
}

/// Effective user id of the process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `signal` to every process of the process group `pgid`.
pub(crate) fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses a group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open files to the hard limit (best effort): traffic clients may
/// hold thousands of sockets at once.
pub(crate) fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sends `signal` to the process `pid`.
pub(crate) fn kill_pid(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process with this pid exists (zombies included).
pub(crate) fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

// ethtool legacy ioctl commands (include/uapi/linux/ethtool.h). The legacy get/set pairs
// are still served by the kernel and map onto the same feature bits as `ethtool -K`.
const SIOCETHTOOL: u64 = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union; the tail pads the union to its
/// full size (24 bytes on 64-bit, the size of `struct ifmap`).
#[repr(C)]
struct IfReqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    pad: [u8; 24 - std::mem::size_of::<*mut libc::c_void>()],
}

fn ethtool(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let cname = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has NUL"))?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut value as *mut EthtoolValue).cast(),
        pad: [0; 24 - std::mem::size_of::<*mut libc::c_void>()],
    };
    for (dst, src) in req.name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a correctly laid out ifreq whose data pointer refers to `value`; both
    // outlive the call, and SIOCETHTOOL with these commands reads/writes only `value`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns generic receive offload on or off for `ifname` in the calling thread's namespace and
/// returns the state the kernel reports afterwards.
pub(crate) fn set_gro(ifname: &str, on: bool) -> io::Result<bool> {
    ethtool(ifname, ETHTOOL_SGRO, u32::from(on))?;
    Ok(ethtool(ifname, ETHTOOL_GGRO, 0)? != 0)
}

/// Turns TX checksum offload on or off for `ifname` in the calling thread's namespace and
/// returns the state the kernel reports afterwards.
pub(crate) fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<bool> {
    ethtool(ifname, ETHTOOL_STXCSUM, u32::from(on))?;
    Ok(ethtool(ifname, ETHTOOL_GTXCSUM, 0)? != 0)
}

/// Makes `cmd` enter the network namespace `ns` between fork and exec.
pub(crate) fn setns_net_before_exec(cmd: &mut std::process::Command, ns: File) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls setns (async-signal-safe) on an fd the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
