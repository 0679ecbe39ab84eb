//! The mount backend: CMD starts in a private mount namespace where a view
//! of the fake tree (fakefs's [`fakefs::view`]) is bound read-only over
//! /proc/sys, so that reads, stat, access, readlink and listings are the
//! kernel's own, at native speed, with the kernel's path resolution. The
//! seccomp filter stops only what may change something (shim's
//! `PathTraps::Mutations`); those go through fakefs as with ptrace, and an
//! accepted write is copied into the view.
//!
//! Where mount namespaces do not isolate (this gVisor: a bind made after
//! unshare is seen by every process and outlives it), `auto` keeps ptrace;
//! `--backend mount` then binds sandbox-wide, says so, and removes every
//! mount at the end (a killed run's are removed by the next run and by
//! `k3shim doctor`).

pub mod probe;
pub mod rundir;
mod watch;

use crate::cli::BackendArg;
use crate::timeline::Timeline;
use anyhow::{Context, Result};
use fakefs::FakeFs;
use serde_json::json;
use shim::spawn::{Bind, Namespace};
use std::path::{Path, PathBuf};

/// The backend a run uses, and why.
#[derive(Debug, Clone)]
pub enum Choice {
    Ptrace { reason: String },
    Mount { isolated: bool, reason: String },
}

impl Choice {
    pub fn name(&self) -> &'static str {
        match self {
            Choice::Ptrace { .. } => "ptrace",
            Choice::Mount { .. } => "mount",
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Choice::Ptrace { reason } | Choice::Mount { reason, .. } => reason,
        }
    }
}

/// The backend asked for: the flag, else K3SHIM_BACKEND, else auto.
pub fn requested(flag: Option<BackendArg>) -> Result<BackendArg> {
    if let Some(b) = flag {
        return Ok(b);
    }
    match std::env::var("K3SHIM_BACKEND").ok().as_deref() {
        None | Some("") | Some("auto") => Ok(BackendArg::Auto),
        Some("mount") => Ok(BackendArg::Mount),
        Some("ptrace") => Ok(BackendArg::Ptrace),
        Some(o) => anyhow::bail!("K3SHIM_BACKEND={o:?}: expected auto, mount or ptrace"),
    }
}

/// Picks the backend. `blocker` is why this run needs ptrace whatever the
/// probe says (trace, --filter none, --bind). Err: `--backend mount` cannot
/// be had (the caller exits 2).
pub fn choose(asked: BackendArg, blocker: Option<&str>) -> Result<Choice, String> {
    match (asked, blocker) {
        (BackendArg::Ptrace, _) => Ok(Choice::Ptrace {
            reason: "asked for (--backend ptrace)".into(),
        }),
        (BackendArg::Mount, Some(b)) => Err(format!("--backend mount: {b}")),
        (BackendArg::Auto, Some(b)) => Ok(Choice::Ptrace { reason: b.into() }),
        (BackendArg::Auto, None) => {
            let p = probe::probe();
            let (mount, why) = p.auto_choice();
            Ok(if mount {
                Choice::Mount {
                    isolated: true,
                    reason: format!("auto: {why}"),
                }
            } else {
                Choice::Ptrace {
                    reason: format!("auto: {why}"),
                }
            })
        }
        (BackendArg::Mount, None) => {
            let p = probe::probe();
            if !p.can_mount {
                return Err(format!("--backend mount: {}", p.detail));
            }
            let isolated = p.isolated && p.readonly;
            Ok(Choice::Mount {
                isolated,
                reason: format!("asked for (--backend mount); {}", p.detail),
            })
        }
    }
}

/// A run's mounts: made by CMD's first process before exec, removed here.
pub struct MountRun {
    run: rundir::RunDir,
    isolated: bool,
    watch: Option<watch::Watch>,
    /// Empty files made for a stand-in to cover (sandbox-wide only), removed at the end.
    created: Vec<PathBuf>,
}

impl MountRun {
    /// Writes the view and plans the binds. Nothing is mounted yet: the
    /// child makes the binds (shim::spawn) in its new namespace.
    pub fn prepare(fs: &mut FakeFs, isolated: bool) -> Result<(MountRun, Namespace)> {
        let run = rundir::RunDir::create()?;
        let tree = run.tree();
        let view = fs.write_view(&tree)?;
        let sys = PathBuf::from("/proc/sys");
        let mut binds = Vec::new();
        // Writable: what fakefs leaves to the kernel (write-through, and a
        // rename or link it cannot do) is redirected here; the policy refuses
        // CMD's own mutations of paths in the run directory.
        std::fs::create_dir(run.real())?;
        binds.push(Bind {
            src: sys.clone(),
            dst: run.real(),
            readonly: false,
        });
        binds.push(Bind {
            src: tree.clone(),
            dst: sys.clone(),
            readonly: true,
        });
        for rel in &view.real {
            binds.push(Bind {
                src: run.real().join(rel),
                dst: sys.join(rel),
                readonly: true,
            });
        }
        // Stand-ins (/dev/kmsg: kubelet dies without it) are the state
        // directory's own files, bound read-only where the mount is private.
        // Where it is sandbox-wide, other processes could write the state
        // directory through such a bind, so a copy in the run directory is
        // bound instead (removed with it). A mount needs something to cover:
        // natively only existing paths are covered.
        let mut created = Vec::new();
        for e in fs.entries() {
            if e.rule != "file" || e.path.starts_with("/proc/sys") {
                continue;
            }
            let dst = Path::new(&e.path);
            if !dst.exists() {
                // Sandbox-wide (gVisor has no /dev/kmsg): an empty file to
                // cover, made for this run and removed at its end.
                let made = !isolated
                    && dst.parent().is_some_and(|d| d.is_dir())
                    && std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(dst)
                        .is_ok();
                if !made {
                    continue;
                }
                created.push(dst.to_path_buf());
            }
            let own = fs.state_dir().join("files").join(&e.path[1..]);
            let src = if isolated {
                own
            } else {
                let copy = run.path().join("files").join(&e.path[1..]);
                if let Some(dir) = copy.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                std::fs::copy(&own, &copy).with_context(|| {
                    format!("cannot copy {} to {}", own.display(), copy.display())
                })?;
                copy
            };
            binds.push(Bind {
                src,
                dst: PathBuf::from(&e.path),
                readonly: true,
            });
        }
        Ok((
            MountRun {
                run,
                isolated,
                watch: None,
                created,
            },
            Namespace {
                binds,
                strict: isolated,
            },
        ))
    }

    /// The view's directory (bound over /proc/sys in CMD's namespace).
    pub fn tree(&self) -> PathBuf {
        self.run.tree()
    }

    /// The real /proc/sys as CMD's namespace has it (for writes that reach the kernel).
    pub fn real(&self) -> PathBuf {
        self.run.real()
    }

    /// Records the first read of each fake entry (inotify on the view).
    pub fn watch_reads(&mut self, timeline: Timeline) {
        match watch::Watch::start(&self.run.tree(), timeline) {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::warn!("mount backend: reads of the view are not recorded: inotify: {e}")
            }
        }
    }

    /// Removes the mounts where they are visible here (they are not where
    /// the namespace was private: it ended with its last process), then the
    /// run directory. Returns what could not be removed.
    pub fn finish(mut self, timeline: &Timeline) -> Vec<String> {
        if let Some(w) = self.watch.take() {
            w.stop();
        }
        let mut failed = Vec::new();
        if !self.isolated {
            let name = self
                .run
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mine = rundir::mounts_of(&rundir::mounts(), &name);
            failed = rundir::unmount(&mine);
            timeline.emit(
                "backend_cleanup",
                json!({"detached": mine.iter().map(|m| m.point.clone()).collect::<Vec<_>>(), "failed": failed}),
            );
            if !failed.is_empty() {
                self.run.keep();
            } else {
                for f in &self.created {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        failed
    }
}

/// The one line printed where mounts are seen by the whole sandbox.
pub const SANDBOX_WIDE: &str = "k3shim: warning: --backend mount: mount namespaces do not isolate here, so every process of this sandbox sees the fake /proc/sys (read-only copies of the fake values) and the profile's stand-in files (such as /dev/kmsg) until this run ends; the mounts are removed at the end (or by the next run or `k3shim doctor` if k3shim is killed)";

/// A namespace setup that failed part-way: what the child left mounted
/// (only visible here where namespaces do not isolate) is removed.
pub fn undo(m: MountRun, timeline: &Timeline) {
    let failed = m.finish(timeline);
    for f in failed {
        eprintln!("k3shim: warning: could not remove a mount: {f}");
    }
}
