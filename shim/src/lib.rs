//! k3shim's tracer engine: runs a program under ptrace with a seccomp filter
//! that stops only path-taking syscalls, asks a [`Policy`] what to do with each,
//! and carries the decision out (pass, redirect to another path, fail with an
//! errno, hold until a gate opens, emulate writes). It knows nothing of
//! /proc/sys or k3s: the launcher supplies the policy.

pub mod compat;
pub mod decode;
pub mod deep;
pub mod detranslate;
pub mod dirents;
pub mod elsewhere;
pub mod error;
pub mod event;
pub mod fds;
pub mod filter;
pub mod fsnode;
pub mod inspect;
pub mod mem;
pub mod policy;
pub mod probe;
pub mod resolve;
pub mod roots;
pub mod scope;
pub mod scratch;
pub mod spawn;
pub mod sysent;
pub mod tracer;
pub mod wake;

pub use error::Error;
pub use event::{Action, Event, SyscallRecord};
pub use policy::{Decision, HoldRequest, PathOp, PathRequest, Policy, Redirect};
pub use probe::{probe, Facts};
pub use tracer::Tracer;
pub use wake::Waker;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Which syscalls stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// Only path-taking syscalls (and connect when holds need it): the default.
    Paths,
    /// Every syscall, twice (enter and exit), with no seccomp filter: what a plain
    /// PTRACE_SYSCALL interceptor does. Slow; for experiments and `trace --all`.
    Everything,
}

/// Compatibility fixes for sandbox quirks, each on only where its probe shows the need.
#[derive(Debug, Clone, Copy)]
pub struct Fixes {
    pub statx_no_automount: bool,
}

impl Default for Fixes {
    fn default() -> Self {
        Fixes {
            statx_no_automount: true,
        }
    }
}

/// What to run and how.
pub struct Plan {
    /// Absolute path of the program (resolved by the caller).
    pub program: PathBuf,
    /// argv, argv[0] included.
    pub argv: Vec<OsString>,
    /// Environment ("K=V"); None inherits.
    pub env: Option<Vec<OsString>>,
    pub cwd: Option<PathBuf>,
    pub filter: FilterMode,
    /// Stop connect(2) so hold rules can apply.
    pub trap_connect: bool,
    /// Emit an Event::Syscall for every intercepted syscall (trace).
    pub report_syscalls: bool,
    /// Set PR_SET_NO_NEW_PRIVS (needed for seccomp without CAP_SYS_ADMIN).
    pub no_new_privs: bool,
    /// Replacement stdin/stdout/stderr for the target.
    pub stdio: [Option<OwnedFd>; 3],
    pub fixes: Fixes,
    /// Which path syscalls stop (with FilterMode::Paths).
    pub paths: filter::PathTraps,
    /// Start the target in a private mount namespace with these binds.
    pub namespace: Option<spawn::Namespace>,
}

/// How the target ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// The child could not exec: stage ('X' exec, 'S' seccomp, 'C' chdir, 'N' no_new_privs) and errno.
    ExecFailed {
        stage: char,
        errno: i32,
    },
}
