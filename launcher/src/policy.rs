//! The launcher's policy: wires fakefs decisions, hold rules and the gate into
//! the engine, and turns engine events into timeline lines and trace output.

use crate::holds::{HoldRule, Release};
use crate::interrupt::Interrupt;
use crate::timeline::Timeline;
use crate::trace::TraceSink;
use fakefs::{FakeFs, Op, Outcome};
use serde_json::json;
use shim::{Decision, Event, HoldRequest, PathOp, PathRequest, Policy, Redirect};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the mount backend's files are, as k3shim sees them.
pub struct MountView {
    /// The view bound over /proc/sys (updated after each accepted write).
    pub tree: PathBuf,
    /// The real /proc/sys as bound in CMD's namespace.
    pub real: PathBuf,
}

pub struct ShimPolicy {
    pub fs: FakeFs,
    /// Set with the mount backend.
    pub mount: Option<MountView>,
    pub holds: Vec<HoldRule>,
    /// Whether held syscalls may continue (gate, hooks, a signal for k3shim).
    pub release: Release,
    pub interrupt: Option<Interrupt>,
    pub timeline: Timeline,
    pub trace: Option<TraceSink>,
    seen: HashSet<PathBuf>,
    pub redirects: u64,
    pub writes: u64,
}

impl ShimPolicy {
    pub fn new(
        fs: FakeFs,
        holds: Vec<HoldRule>,
        release: Release,
        timeline: Timeline,
        trace: Option<TraceSink>,
    ) -> Self {
        ShimPolicy {
            fs,
            mount: None,
            holds,
            release,
            interrupt: None,
            timeline,
            trace,
            seen: HashSet::new(),
            redirects: 0,
            writes: 0,
        }
    }

    fn journal(&mut self) {
        for j in self.fs.drain_journal() {
            self.writes += 1;
            if let Some(t) = self.trace.as_mut() {
                t.note_write(&j.path);
            }
            let result = if j.accepted {
                "ok".to_string()
            } else {
                j.errno.clone().unwrap_or_else(|| "error".into())
            };
            self.timeline.emit("write", json!({"pid": j.pid, "comm": j.comm, "path": j.path, "old": j.old, "new": j.new, "result": result}));
            if let (Some(m), true) = (&self.mount, j.accepted) {
                if let Some(rel) = j.path.strip_prefix("/proc/sys/") {
                    if let Err(e) = self.fs.update_view(&m.tree, rel) {
                        tracing::warn!("mount backend: {}: cannot update the view ({e}): reads show the old value", j.path);
                    }
                }
            }
        }
    }
}

/// The engine's view of an operation, in fakefs terms. `syscall` and `raw`
/// (the path as given) tell apart what procfs answers differently: rmdir and
/// unlink, chmod and utime, xattrs, symlink (a new name), a trailing slash.
pub fn fakefs_op(op: PathOp, syscall: &str, raw: &[u8]) -> Op {
    match op {
        PathOp::Open { flags, .. } => {
            let acc = flags & libc::O_ACCMODE;
            if flags & libc::O_CREAT != 0 {
                Op::CreateFile {
                    excl: flags & libc::O_EXCL != 0,
                }
            } else if flags & libc::O_DIRECTORY != 0 && acc == libc::O_RDONLY {
                Op::OpenDir
            } else if flags & libc::O_PATH != 0 {
                Op::Stat
            } else if flags & libc::O_DIRECT != 0 {
                Op::Direct {
                    read: acc != libc::O_WRONLY,
                    write: acc != libc::O_RDONLY,
                }
            } else if acc == libc::O_WRONLY {
                Op::Write {
                    trunc: flags & libc::O_TRUNC != 0,
                }
            } else if acc == libc::O_RDWR {
                Op::ReadWrite
            } else {
                Op::Read
            }
        }
        PathOp::Stat { .. } => match syscall {
            "getxattr" | "lgetxattr" => Op::Xattr { write: false },
            _ => Op::Stat,
        },
        PathOp::Access { mode } => Op::Access { mode },
        PathOp::Readlink => Op::Readlink,
        PathOp::Exec => Op::Exec,
        PathOp::Chdir => Op::OpenDir,
        PathOp::Truncate => Op::Truncate,
        PathOp::Create => Op::Mkdir,
        PathOp::Link => match syscall {
            "symlink" | "symlinkat" => Op::Mkdir,
            _ => Op::Link,
        },
        PathOp::Remove => Op::Remove {
            rmdir: match syscall {
                "rmdir" => Some(true),
                "unlink" => Some(false),
                _ => None,
            },
            slash: raw.len() > 1 && raw.ends_with(b"/"),
        },
        PathOp::Rename => Op::Rename,
        PathOp::Modify => match syscall {
            "utime" | "utimes" | "utimensat" | "futimesat" => Op::Utime,
            s if s.contains("xattr") => Op::Xattr { write: true },
            _ => Op::Chmod,
        },
    }
}

fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Signals too frequent or too ordinary to be milestones.
fn noisy_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGPROF
            | libc::SIGALRM
            | libc::SIGVTALRM
            | libc::SIGCONT
    )
}

impl Policy for ShimPolicy {
    fn on_path(&mut self, req: &PathRequest<'_>) -> Decision {
        // The real tree's bind in the run directory is k3shim's way to the
        // kernel's entries, not CMD's.
        if self.mount.is_some()
            && req.op.is_mutation()
            && req.path.starts_with(crate::mount_backend::rundir::RUN_ROOT)
        {
            return Decision::Fail(libc::EACCES);
        }
        if !self.fs.covers(req.path) {
            return Decision::Pass;
        }
        // Mount backend: what changes nothing is the kernel's, on the view
        // (openat2 and creat stop whatever their flags); access(W_OK) is
        // fakefs's (the view is read-only), and so is O_DIRECT (procfs
        // refuses it, the view's plain files would not).
        let op = fakefs_op(req.op, req.syscall, req.raw);
        let write_check = matches!(req.op, PathOp::Access { mode } if mode & libc::W_OK != 0);
        let direct = matches!(op, Op::Direct { .. });
        if self.mount.is_some() && !req.op.is_mutation() && !write_check && !direct {
            return Decision::Pass;
        }
        let tid = req.tid;
        match self
            .fs
            .decide_as(req.path, op, &mut || crate::caller::of_thread(tid))
        {
            // Under the mount backend /proc/sys is the view: what the real tree
            // answers goes to the real tree's bind.
            Outcome::Real => match (&self.mount, req.path.strip_prefix("/proc/sys")) {
                (Some(m), Ok(rel)) => Decision::Redirect(Redirect::to(m.real.join(rel))),
                _ => Decision::Pass,
            },
            Outcome::Error(e) => Decision::Fail(e),
            // The engine skips a failed syscall and returns -errno: -0 is success.
            Outcome::Done => Decision::Fail(0),
            Outcome::Fake {
                backing,
                add_flags,
                clear_flags,
                write_token,
                listing,
            } => Decision::Redirect(Redirect {
                to: backing,
                add_flags,
                clear_flags,
                write_token,
                listing,
            }),
        }
    }

    fn untranslate(&self, host: &Path) -> Option<PathBuf> {
        self.fs.untranslate(host)
    }

    fn kind(&self, path: &Path) -> Option<shim::resolve::PathKind> {
        use shim::resolve::PathKind;
        self.fs.kind(path).map(|k| match k {
            fakefs::Kind::Dir => PathKind::Dir,
            fakefs::Kind::File => PathKind::File,
            fakefs::Kind::Missing => PathKind::Missing,
            fakefs::Kind::NotDir => PathKind::NotDir,
        })
    }

    fn on_write(&mut self, token: u64, pid: i32, offset: u64, data: &[u8]) -> Result<usize, i32> {
        let comm = comm_of(pid);
        let r = self.fs.write(token, pid, &comm, offset, data);
        self.journal();
        r
    }

    fn should_hold(&mut self, req: &HoldRequest) -> bool {
        self.holds.iter().any(|h| h.matches(req))
    }

    fn gate_open(&mut self) -> bool {
        self.release.is_open()
    }

    fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Exec { pid, path } => self
                .timeline
                .emit("exec", json!({"pid": pid, "path": path})),
            Event::Redirect {
                pid,
                tid,
                syscall,
                path,
                backing,
            } => {
                self.redirects += 1;
                if self.seen.insert(path.clone()) {
                    self.timeline.emit("redirect", json!({"pid": pid, "tid": tid, "syscall": syscall, "path": path, "backing": backing}));
                }
            }
            Event::Hold {
                pid,
                tid,
                comm,
                what,
            } => {
                self.release.note_held(*tid, Some(what));
                self.timeline.emit(
                    "hold",
                    json!({"pid": pid, "tid": tid, "comm": comm, "what": what}),
                )
            }
            Event::Release {
                pid,
                tid,
                comm,
                what,
                waited_ms,
                gone,
            } => {
                self.release.note_held(*tid, None);
                let mut f = json!({"pid": pid, "tid": tid, "comm": comm, "what": what, "waited_ms": waited_ms});
                if *gone {
                    // The thread ended (killed, or replaced by another thread's execve).
                    f["gone"] = json!(true);
                } else if let Some(r) = self.release.reason() {
                    f["reason"] = json!(r);
                }
                self.timeline.emit("release", f)
            }
            Event::Signal { pid, tid, signal } if !noisy_signal(*signal) => self
                .timeline
                .emit("signal", json!({"pid": pid, "tid": tid, "signal": signal})),
            Event::ProcessExit { pid, code, signal } => {
                self.timeline.emit(
                    "process_exit",
                    json!({"pid": pid, "code": code, "signal": signal}),
                );
                if let Some(i) = &self.interrupt {
                    i.process_exited(*pid);
                }
            }
            Event::SignalTree { signal, pids } => {
                let n = pids.len();
                let (s, verb) = if n == 1 { ("", "gets") } else { ("es", "get") };
                let then = if *signal == libc::SIGKILL {
                    String::new()
                } else {
                    format!(", SIGKILL in {} s", crate::interrupt::GRACE.as_secs())
                };
                tracing::info!(
                    target: crate::log::NOTICE,
                    "tree: the command has ended; {n} traced process{s} left {verb} {}{then}",
                    crate::interrupt::signal_name(*signal)
                );
                self.timeline
                    .emit("end_tree", json!({"signal": signal, "pids": pids}));
            }
            Event::Fix { name, detail } => {
                tracing::info!(target: crate::log::NOTICE, "fix: {name}: {detail}");
                self.timeline
                    .emit("fix", json!({"name": name, "detail": detail}))
            }
            Event::Warning { pid, message } => {
                tracing::warn!(pid, "{message}");
                self.timeline
                    .emit("warning", json!({"pid": pid, "message": message}));
            }
            Event::Syscall(r) => {
                if let Some(t) = self.trace.as_mut() {
                    t.record(r);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_map_to_fakefs_operations() {
        let o = |flags| fakefs_op(PathOp::Open { flags, mode: 0 }, "openat", b"x");
        assert_eq!(o(libc::O_RDONLY), Op::Read);
        assert_eq!(o(libc::O_WRONLY | libc::O_TRUNC), Op::Write { trunc: true });
        assert_eq!(
            o(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            Op::CreateFile { excl: false }
        );
        assert_eq!(
            o(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL),
            Op::CreateFile { excl: true }
        );
        assert_eq!(o(libc::O_RDONLY | libc::O_DIRECTORY), Op::OpenDir);
        assert_eq!(o(libc::O_RDWR), Op::ReadWrite);
        assert_eq!(
            o(libc::O_WRONLY | libc::O_DIRECT),
            Op::Direct {
                read: false,
                write: true
            }
        );
        assert_eq!(o(libc::O_PATH | libc::O_DIRECT), Op::Stat);
        assert_eq!(fakefs_op(PathOp::Chdir, "chdir", b"x"), Op::OpenDir);
    }

    #[test]
    fn syscalls_procfs_answers_differently_are_told_apart() {
        let f = |op, sys: &str, raw: &[u8]| fakefs_op(op, sys, raw);
        assert_eq!(
            f(PathOp::Remove, "unlink", b"/proc/sys/vm/"),
            Op::Remove {
                rmdir: Some(false),
                slash: true
            }
        );
        assert_eq!(
            f(PathOp::Remove, "unlinkat", b"vm"),
            Op::Remove {
                rmdir: None,
                slash: false
            }
        );
        assert_eq!(f(PathOp::Link, "symlinkat", b"x"), Op::Mkdir);
        assert_eq!(f(PathOp::Link, "linkat", b"x"), Op::Link);
        assert_eq!(f(PathOp::Modify, "utimensat", b"x"), Op::Utime);
        assert_eq!(f(PathOp::Modify, "fchownat", b"x"), Op::Chmod);
        assert_eq!(
            f(PathOp::Modify, "lremovexattr", b"x"),
            Op::Xattr { write: true }
        );
        assert_eq!(
            f(PathOp::Stat { nofollow: false }, "getxattr", b"x"),
            Op::Xattr { write: false }
        );
        assert_eq!(
            f(PathOp::Stat { nofollow: false }, "listxattr", b"x"),
            Op::Stat
        );
    }
}
