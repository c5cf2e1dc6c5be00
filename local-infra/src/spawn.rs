//! Starting child processes without tripping a mock broker going down.
//!
//! A child holds a copy of every descriptor of this process from fork until
//! its exec closes the close-on-exec ones, including a mock broker's
//! listening socket; and the kernel lets the parent run on a moment before
//! that close. librdkafka takes a mock broker down by closing that socket and
//! binding its port again at once (so it can come back on the same port); if
//! a child still holds the socket then, the bind fails and librdkafka aborts
//! the whole process. So the children that start beside a mock broker
//! (Postgres's, and the services the test harness runs) start under a shared
//! guard and close their inherited sockets before exec, and a mock broker
//! goes down under the exclusive guard. (Apache Kafka's processes never run
//! beside a mock broker.)

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static FORKING: RwLock<()> = RwLock::new(());

/// Descriptors above this are not looked at; the processes here open far
/// fewer.
const MAX_FD: libc::c_int = 65_536;

/// Starts `command`, as [`Command::spawn`] does.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    // SAFETY: the hook runs between fork and exec and calls only getrlimit,
    // fstat and close, which are async-signal-safe, and allocates nothing.
    unsafe { command.pre_exec(close_inherited_sockets) };
    let _forking = shared();
    command.spawn()
}

/// Runs `command` to completion with its output captured, as
/// [`Command::output`] does (stdin from /dev/null).
pub fn output(command: &mut Command) -> io::Result<Output> {
    let child = spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    child.wait_with_output()
}

/// Runs `command` to completion, as [`Command::status`] does.
pub fn status(command: &mut Command) -> io::Result<ExitStatus> {
    spawn(command)?.wait()
}

/// In the child, before exec: closes every socket above stdio, so none is
/// held after the parent's `spawn` returns. Children here inherit no socket
/// they use.
fn close_inherited_sockets() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct and on descriptor numbers.
    let last = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        libc::c_int::try_from(limit.rlim_cur).map_or(MAX_FD, |n| n.min(MAX_FD))
    } else {
        MAX_FD
    };
    for fd in 3..last {
        // SAFETY: as above; a zeroed `stat` is a valid value to fill in.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

fn shared() -> RwLockReadGuard<'static, ()> {
    FORKING.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a mock broker's listening socket is closed and bound again:
/// no child is starting meanwhile.
pub(crate) fn no_child_starting() -> RwLockWriteGuard<'static, ()> {
    FORKING.write().unwrap_or_else(PoisonError::into_inner)
}
