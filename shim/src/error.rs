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
