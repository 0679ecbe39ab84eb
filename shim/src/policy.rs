//! The policy interface: the engine asks, the policy decides, the engine carries
//! the decision out. The engine knows nothing of /proc/sys or k3s.

use std::path::{Path, PathBuf};

/// What a path-taking syscall is about to do with its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PathOp {
    /// open, openat, openat2, creat. `flags` are the O_* flags as given
    /// (creat is reported as O_CREAT|O_WRONLY|O_TRUNC).
    Open { flags: i32, mode: u32 },
    /// stat family, statx, newfstatat, statfs. `nofollow` for lstat/AT_SYMLINK_NOFOLLOW.
    Stat { nofollow: bool },
    /// access, faccessat, faccessat2.
    Access { mode: i32 },
    /// readlink, readlinkat.
    Readlink,
    /// execve, execveat.
    Exec,
    /// chdir.
    Chdir,
    /// truncate.
    Truncate,
    /// mkdir, mkdirat, mknod, mknodat.
    Create,
    /// symlink/symlinkat target side (the new link's path), link/linkat new path.
    Link,
    /// unlink, unlinkat, rmdir.
    Remove,
    /// rename family (each of the two paths is asked about).
    Rename,
    /// chmod, chown, utimensat, setxattr family and anything else that changes metadata.
    Modify,
}

impl PathOp {
    /// True when the operation can change the file system at this path.
    pub fn is_mutation(&self) -> bool {
        match self {
            PathOp::Open { flags, .. } => {
                let acc = flags & libc::O_ACCMODE;
                acc == libc::O_WRONLY
                    || acc == libc::O_RDWR
                    || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
            }
            PathOp::Truncate
            | PathOp::Create
            | PathOp::Link
            | PathOp::Remove
            | PathOp::Rename
            | PathOp::Modify => true,
            _ => false,
        }
    }
}

/// One path-taking syscall, with the path resolved the way the kernel would.
#[derive(Debug)]
pub struct PathRequest<'a> {
    pub pid: i32,
    pub tid: i32,
    /// Syscall name, e.g. "openat".
    pub syscall: &'static str,
    pub op: PathOp,
    /// Absolute, lexically normalized path (cwd and dirfd applied, `.`/`..`/`//`
    /// folded, /proc/self|thread-self|PID forms rewritten to /proc/PID).
    pub path: &'a Path,
    /// The bytes the program passed.
    pub raw: &'a [u8],
}

/// A redirect: the syscall runs on `to` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub to: PathBuf,
    /// O_* flags to add to an open (e.g. O_TRUNC: procfs replaces the whole value).
    pub add_flags: i32,
    /// O_* flags to remove from an open (e.g. O_CREAT|O_EXCL on a file that exists in the fake tree).
    pub clear_flags: i32,
    /// Set when the open gives a writable fd onto an emulated entry: the engine
    /// then traps writes on that fd and asks [`Policy::on_write`] with this token.
    pub write_token: Option<u64>,
    /// `to` is a directory whose listing the engine gives as procfs does:
    /// `.` and `..` first, then the entries by name (the host file system's
    /// own order can be anything).
    pub listing: bool,
}

impl Redirect {
    pub fn to(p: impl Into<PathBuf>) -> Self {
        Redirect {
            to: p.into(),
            add_flags: 0,
            clear_flags: 0,
            write_token: None,
            listing: false,
        }
    }
}

/// What the engine does with a path-taking syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the syscall run untouched.
    Pass,
    /// Run it on another path.
    Redirect(Redirect),
    /// Do not run it; it returns -errno.
    Fail(i32),
}

/// A connect(2) or execve(2) that a hold rule may keep waiting.
#[derive(Debug, Clone)]
pub enum HoldRequest {
    /// connect to an IPv4/IPv6 address.
    ConnectInet { addr: std::net::SocketAddr },
    /// connect to a unix socket path (abstract names start with '@').
    ConnectUnix { path: PathBuf },
    /// execve of this absolute path.
    Exec { path: PathBuf },
}

/// The policy the engine consults. All calls come from the tracer thread.
pub trait Policy {
    /// Decide what a path-taking syscall does. Called at the syscall's seccomp stop.
    fn on_path(&mut self, req: &PathRequest<'_>) -> Decision;

    /// Paths the engine sees in a dirfd or cwd that the policy created by a
    /// redirect (e.g. a fake directory) are mapped back to the path the program
    /// believes it opened, so that later relative lookups resolve as the kernel would.
    fn untranslate(&self, _host: &Path) -> Option<PathBuf> {
        None
    }

    /// What a path the policy serves names (directory, file, missing), so that
    /// `name/..` and `name/` fail as the kernel would when the name is not a
    /// directory. None for paths it does not serve: the kernel decides those.
    fn kind(&self, _path: &Path) -> Option<crate::resolve::PathKind> {
        None
    }

    /// A write to an fd opened through a redirect with a `write_token`.
    /// `offset` is the fd's position (0 for the first write after open).
    /// Return the byte count the write reports, or an errno.
    fn on_write(
        &mut self,
        _token: u64,
        _pid: i32,
        _offset: u64,
        _data: &[u8],
    ) -> Result<usize, i32> {
        Err(libc::EBADF)
    }

    /// Should this connect/exec wait for the gate? Only asked when the plan
    /// traps connect or exec.
    fn should_hold(&mut self, _req: &HoldRequest) -> bool {
        false
    }

    /// Is the gate open? Held syscalls are released once this returns true.
    fn gate_open(&mut self) -> bool {
        true
    }

    /// Every event the engine produces (exec, exit, signal, redirect, hold, syscall lines...).
    fn on_event(&mut self, _ev: &crate::event::Event) {}
}
