//! The socket options the proxy sets that neither std nor tokio offer. Everything `unsafe` in
//! the crate lives here, behind safe functions.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// `TCP_DEFER_ACCEPT`: the listener wakes the proxy for a connection only once its first data
/// (the ClientHello) has arrived, so accepting and reading the hello take one wake-up instead
/// of two. A connection that sends nothing within `timeout` is still handed over (the kernel
/// rounds up to its SYN-ACK retransmission schedule), and the proxy's own handshake timeout
/// applies as before.
pub(crate) fn set_defer_accept(socket: &impl AsFd, timeout: Duration) -> io::Result<()> {
    let secs = libc::c_int::try_from(timeout.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
}

fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let fd = socket.as_fd();
    // SAFETY: the descriptor stays open for the call (borrowed), and the option value points
    // to a live c_int whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
