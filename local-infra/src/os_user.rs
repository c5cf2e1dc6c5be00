//! Running the PostgreSQL binaries as the right operating-system user.
//!
//! `initdb` and `postgres` refuse to run as root (a compromised server must not
//! own the machine). When we are root, as in CI containers, every server command
//! is therefore wrapped to run as the `postgres` account, and the directories it
//! needs are handed over to that account. As an ordinary user nothing changes:
//! the binaries run as ourselves.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The account the server runs as when we are root. Debian's `postgresql`
/// package creates it; it is also the name every distribution uses.
const SERVER_ACCOUNT: &str = "postgres";

/// Where `runuser`/`su` live when they are not on `PATH` (root's `PATH` usually
/// has `/usr/sbin`, a `sudo -E` one may not).
const SYSTEM_BIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Upper bound for the `getpwnam_r` string buffer; real entries are far shorter.
const PASSWD_BUFFER_LEN: usize = 16 * 1024;

/// How a command is switched to the server account.
#[derive(Debug, Clone)]
enum Switcher {
    /// util-linux `runuser -u USER -- PROGRAM ARGS...`: no shell, no quoting.
    Runuser(PathBuf),
    /// `su USER -s /bin/sh -c 'PROGRAM ARGS...'` where `runuser` is missing.
    Su(PathBuf),
}

/// The account to run the server binaries as, when it differs from ourselves.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    /// Account name, passed to `runuser`/`su`.
    name: String,
    /// Numeric user id, for handing directories over with `chown`.
    uid: u32,
    /// Numeric primary group id, for the same `chown`.
    gid: u32,
    /// The tool that performs the switch.
    switcher: Switcher,
}

impl RunAs {
    /// `None` when we are not root (the binaries run as ourselves); otherwise the
    /// `postgres` account, or an error saying how to get one.
    pub(crate) fn detect() -> anyhow::Result<Option<Self>> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let (uid, gid) = lookup_account(SERVER_ACCOUNT)?.with_context(|| {
            format!(
                "running as root, but there is no `{SERVER_ACCOUNT}` OS user to run PostgreSQL as \
                 (initdb refuses root); install the server (Debian/Ubuntu: apt-get install \
                 postgresql) or run as an ordinary user"
            )
        })?;
        let switcher = if let Some(path) = find_system_tool("runuser") {
            Switcher::Runuser(path)
        } else if let Some(path) = find_system_tool("su") {
            Switcher::Su(path)
        } else {
            bail!(
                "running as root, but neither `runuser` nor `su` is available to run PostgreSQL \
                 as `{SERVER_ACCOUNT}`; install util-linux or run as an ordinary user"
            );
        };
        Ok(Some(Self {
            name: SERVER_ACCOUNT.to_owned(),
            uid,
            gid,
            switcher,
        }))
    }

    /// The account name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Gives `path` (not recursively) to the server account, so it can create
    /// the data directory inside it or use it as the data directory.
    pub(crate) fn chown(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("handing {} over to `{}`", path.display(), self.name))
    }

    /// Fails with a clear message if the server account cannot write into
    /// `dir`, typically because a parent directory (such as `/root`) is closed to
    /// other users.
    pub(crate) fn check_access(&self, dir: &Path) -> anyhow::Result<()> {
        let test: [OsString; 6] = [
            "test".into(),
            "-w".into(),
            dir.into(),
            "-a".into(),
            "-x".into(),
            dir.into(),
        ];
        let status = crate::spawn::status(
            self.command(&test)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("checking that `{}` can use {}", self.name, dir.display()))?;
        if !status.success() {
            bail!(
                "the `{}` OS user (PostgreSQL refuses to run as root) cannot write to {}; make \
                 every parent directory searchable by others (chmod o+x) or use a directory under \
                 /tmp",
                self.name,
                dir.display()
            );
        }
        Ok(())
    }

    /// The argument vector that runs `argv` as the server account.
    pub(crate) fn wrap(&self, argv: &[OsString]) -> Vec<OsString> {
        match &self.switcher {
            Switcher::Runuser(runuser) => {
                let mut wrapped: Vec<OsString> = vec![
                    runuser.into(),
                    "-u".into(),
                    self.name.clone().into(),
                    "--".into(),
                ];
                wrapped.extend(argv.iter().cloned());
                wrapped
            }
            Switcher::Su(su) => {
                let script = argv
                    .iter()
                    .map(|arg| shell_quote(arg))
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    su.into(),
                    self.name.clone().into(),
                    "-s".into(),
                    "/bin/sh".into(),
                    "-c".into(),
                    script.into(),
                ]
            }
        }
    }

    /// A [`Command`] running `argv` as the server account.
    pub(crate) fn command(&self, argv: &[OsString]) -> Command {
        command_from_argv(&self.wrap(argv))
    }
}

/// Builds a [`Command`] from a full argument vector (program first).
pub(crate) fn command_from_argv(argv: &[OsString]) -> Command {
    let (program, args) = argv.split_first().expect("argv always names a program");
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// Quotes `arg` for a POSIX shell: single quotes, with embedded single quotes
/// closed, escaped and reopened.
fn shell_quote(arg: &OsStr) -> String {
    let text = String::from_utf8_lossy(arg.as_bytes());
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Finds `tool` on `PATH` or in the usual system directories.
fn find_system_tool(tool: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SYSTEM_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The uid and gid of account `name`, or `None` if it does not exist.
fn lookup_account(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let c_name = CString::new(name).context("account name contains a NUL byte")?;
    let mut buffer = vec![0 as libc::c_char; PASSWD_BUFFER_LEN];
    // SAFETY: an all-zero `passwd` is a valid value of this plain C struct (null
    // pointers, zero ids); getpwnam_r overwrites it on success.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and the buffer
    // length is the real one; getpwnam_r is the thread-safe variant.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("looking up the `{name}` OS user"));
    }
    if found.is_null() {
        return Ok(None);
    }
    Ok(Some((entry.pw_uid, entry.pw_gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn root_account_is_found() {
        assert_eq!(lookup_account("root").unwrap(), Some((0, 0)));
    }

    #[test]
    fn missing_account_is_none() {
        assert_eq!(lookup_account("no-such-user-local-infra").unwrap(), None);
    }
}
