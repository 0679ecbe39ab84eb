//! Engine errors: one line each, naming what failed and what to do.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{call} failed ({err}) while {what}")]
    Os {
        call: &'static str,
        what: String,
        err: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Spawn(String),
    #[error("filter: {0}")]
    Filter(#[from] seccompiler::BackendError),
    #[error("{0}")]
    Unsupported(String),
    /// A tracer already follows the process (strace -f, gdb, another k3shim).
    #[error("{0}")]
    AlreadyTraced(String),
    /// The target's mount namespace could not be set up (see [`crate::spawn::Namespace`]).
    #[error("{}", describe_setup(.0))]
    Namespace(crate::spawn::SetupFailure),
}

fn describe_setup(f: &crate::spawn::SetupFailure) -> String {
    let e = std::io::Error::from_raw_os_error(f.errno);
    match f.stage {
        b'U' => format!("unshare(CLONE_NEWNS) failed ({e}): no private mount namespace here (needs CAP_SYS_ADMIN)"),
        b'P' => format!("mount(\"/\", MS_REC|MS_PRIVATE) failed ({e}): mounts would not stay private"),
        b'B' => format!("bind mount number {} failed ({e})", f.step),
        _ => format!("read-only remount of bind number {} failed ({e})", f.step),
    }
}

impl Error {
    pub fn os(call: &'static str, what: &str) -> Error {
        Error::Os {
            call,
            what: what.to_string(),
            err: std::io::Error::last_os_error(),
        }
    }
}
