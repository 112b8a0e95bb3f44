//! Telling systemd how the agent is, for a unit of `Type=notify`: sd_notify's protocol, one
//! datagram of `KEY=value` lines to the socket in `$NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`). Without that variable (not under such a unit) it does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` ("READY=1", "STOPPING=1") to systemd; `Ok(false)` when nothing listens for it.
/// Never waits: a socket whose queue is full is an error, not a stalled agent.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|socket| !socket.is_empty()) else {
        return Ok(false);
    };
    let address = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&socket)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}
