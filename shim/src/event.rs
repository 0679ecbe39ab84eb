//! Events the engine emits. The launcher turns them into timeline lines and trace output.

use serde::Serialize;
use std::path::PathBuf;

/// What the engine did with an intercepted syscall.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Passed,
    Redirected,
    Emulated,
    Failed,
    Held,
}

/// One decoded syscall, sent when trace output is asked for (Plan::report_syscalls).
#[derive(Debug, Clone, Serialize)]
pub struct SyscallRecord {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub name: &'static str,
    /// Decoded arguments, strace style: `AT_FDCWD, "/proc/sys/vm/x", O_RDONLY|O_CLOEXEC`.
    pub args: String,
    /// The path the program gave, if any (first path argument).
    pub path: Option<String>,
    pub action: Action,
    /// The file actually used, when redirected.
    pub backing: Option<PathBuf>,
    /// Return value (>= 0) or -errno.
    pub ret: i64,
    /// Time from the seccomp stop to the exit (or to resume, without an exit stop), in microseconds.
    pub dur_us: u64,
}

/// Events of a traced tree.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A successful execve anywhere in the tree.
    Exec { pid: i32, path: String },
    /// A process or thread started (fork, vfork, clone).
    Spawn {
        parent: i32,
        child: i32,
        thread: bool,
    },
    /// A path was redirected (every time; the launcher de-duplicates).
    Redirect {
        pid: i32,
        tid: i32,
        syscall: &'static str,
        path: PathBuf,
        backing: PathBuf,
    },
    /// A syscall was held until the gate opens.
    Hold {
        pid: i32,
        tid: i32,
        comm: String,
        what: String,
    },
    /// A held syscall continued, or (`gone`) its thread ended before it could:
    /// killed, or replaced by another thread's execve.
    Release {
        pid: i32,
        tid: i32,
        comm: String,
        what: String,
        waited_ms: u64,
        gone: bool,
    },
    /// A signal was delivered to a tracee.
    Signal { pid: i32, tid: i32, signal: i32 },
    /// The engine sent `signal` to these traced processes, as asked through
    /// [`Waker::signal_tree`](crate::wake::Waker::signal_tree).
    SignalTree { signal: i32, pids: Vec<i32> },
    /// A process of the tree ended. `code` for exit, `signal` when killed.
    ProcessExit {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Decoded syscall (only with Plan::report_syscalls).
    Syscall(SyscallRecord),
    /// A compatibility fix was applied for the first time in this run.
    Fix { name: &'static str, detail: String },
    /// Something the engine could not handle cleanly (logged, never fatal for the tree).
    Warning { pid: i32, message: String },
}
