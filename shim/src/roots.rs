//! The root directory each traced thread resolves absolute paths from. After
//! chroot or pivot_root (a container runtime does both before it writes the
//! container's sysctls), a thread's "/" is not the tracer's: the resolver must
//! look at its files through /proc/TID/root, its cwd and fds are shown (by
//! readlink from the tracer) below that root's host path, and a redirect
//! target (a path in the state directory) does not exist there. Such a target
//! is reached through /proc/TRACER/root/... when the thread sees the tracer
//! (same pid namespace, a procfs in its root); otherwise the tracer answers
//! for the file itself (roots.rs only tells which case applies).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

/// A thread's root, as far as resolution and redirects are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// The tracer's own root.
    Same,
    /// Another root (chroot, pivot_root, setns).
    Other {
        tid: i32,
        /// Its host path, when the tracer can name it (readlink of
        /// /proc/TID/root): cwd and fd paths read by the tracer are below it.
        host: Option<Vec<u8>>,
        /// /proc/TRACER/root is reachable from that root: redirect targets can
        /// be named there.
        tracer_visible: bool,
    },
}

impl Root {
    /// The prefix under which the tracer finds this thread's absolute path `p`.
    pub fn tracer_path(&self, p: &[u8]) -> Vec<u8> {
        match self {
            Root::Same => p.to_vec(),
            Root::Other { tid, .. } => {
                let mut v = format!("/proc/{tid}/root").into_bytes();
                if p != b"/" {
                    v.extend_from_slice(p);
                }
                v
            }
        }
    }

    /// The host's name for the thread's absolute path `p`, when its root is a
    /// directory other than "/" that the tracer can name: after chroot("/proc")
    /// the thread's "/sys/vm/x" is the host's /proc/sys/vm/x.
    pub fn host_view(&self, p: &[u8]) -> Option<Vec<u8>> {
        match self {
            Root::Other { host: Some(h), .. } if h.as_slice() != b"/" => {
                let mut v = h.clone();
                if p != b"/" {
                    v.extend_from_slice(p);
                }
                Some(v)
            }
            _ => None,
        }
    }

    /// A cwd or fd path as read by the tracer (host view) in the thread's view;
    /// None when it is outside the thread's root (the kernel decides then).
    pub fn guest_path(&self, host_view: Vec<u8>) -> Option<Vec<u8>> {
        match self {
            Root::Same => Some(host_view),
            Root::Other { host: Some(h), .. } => {
                if h.as_slice() == b"/" {
                    return Some(host_view);
                }
                let rest = host_view.strip_prefix(h.as_slice())?;
                match rest.first() {
                    None => Some(b"/".to_vec()),
                    Some(b'/') => Some(rest.to_vec()),
                    _ => None,
                }
            }
            Root::Other { host: None, .. } => None,
        }
    }
}

/// Roots of the traced threads, looked up once per thread and forgotten when
/// any of them calls chroot, pivot_root or setns.
pub struct Roots {
    ours: Option<(u64, u64)>,
    our_pidns: Option<std::path::PathBuf>,
    tracer: i32,
    known: HashMap<i32, Root>,
}

fn dev_ino(p: &str) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl Roots {
    pub fn new() -> Roots {
        Roots {
            ours: dev_ino("/"),
            our_pidns: std::fs::read_link("/proc/self/ns/pid").ok(),
            tracer: std::process::id() as i32,
            known: HashMap::new(),
        }
    }

    /// The root of thread `tid` (one stat the first time; more when it differs).
    pub fn of(&mut self, tid: i32) -> Root {
        if let Some(r) = self.known.get(&tid) {
            return r.clone();
        }
        let theirs = dev_ino(&format!("/proc/{tid}/root"));
        let root = if theirs.is_none() || theirs == self.ours {
            Root::Same
        } else {
            let host = std::fs::read_link(format!("/proc/{tid}/root"))
                .ok()
                .map(|p| p.into_os_string().into_encoded_bytes())
                .filter(|p| p.first() == Some(&b'/'));
            let same_pidns = self.our_pidns.is_some()
                && std::fs::read_link(format!("/proc/{tid}/ns/pid")).ok() == self.our_pidns;
            let tracer_visible = same_pidns
                && std::fs::symlink_metadata(format!("/proc/{tid}/root/proc/{}/root", self.tracer))
                    .is_ok();
            Root::Other {
                tid,
                host,
                tracer_visible,
            }
        };
        if self.known.len() > 65536 {
            self.known.clear();
        }
        self.known.insert(tid, root.clone());
        root
    }

    /// A thread is gone.
    pub fn forget(&mut self, tid: i32) {
        self.known.remove(&tid);
    }

    /// A chroot, pivot_root or setns ran somewhere: every root is looked up again.
    pub fn forget_all(&mut self) {
        self.known.clear();
    }

    /// `target` (a path in the tracer's root) as the thread with `root` names it,
    /// when it can.
    pub fn target_for(&self, root: &Root, target: &[u8]) -> Option<Vec<u8>> {
        match root {
            Root::Same => Some(target.to_vec()),
            Root::Other {
                tracer_visible: true,
                ..
            } => {
                let mut v = format!("/proc/{}/root", self.tracer).into_bytes();
                v.extend_from_slice(target);
                Some(v)
            }
            Root::Other { .. } => None,
        }
    }
}

impl Default for Roots {
    fn default() -> Self {
        Roots::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_by_the_tracer_are_shown_below_the_threads_root() {
        let r = Root::Other {
            tid: 7,
            host: Some(b"/srv/rootfs".to_vec()),
            tracer_visible: false,
        };
        assert_eq!(
            r.guest_path(b"/srv/rootfs/etc".to_vec()),
            Some(b"/etc".to_vec())
        );
        assert_eq!(r.guest_path(b"/srv/rootfs".to_vec()), Some(b"/".to_vec()));
        assert_eq!(r.guest_path(b"/srv/rootfs2".to_vec()), None);
        assert_eq!(r.guest_path(b"/home".to_vec()), None);
        assert_eq!(r.tracer_path(b"/etc/x"), b"/proc/7/root/etc/x".to_vec());
        assert_eq!(r.host_view(b"/etc/x"), Some(b"/srv/rootfs/etc/x".to_vec()));
        assert_eq!(r.host_view(b"/"), Some(b"/srv/rootfs".to_vec()));
        assert_eq!(Root::Same.host_view(b"/etc/x"), None);
        assert_eq!(Root::Same.tracer_path(b"/etc/x"), b"/etc/x".to_vec());
    }

    #[test]
    fn this_process_has_the_tracers_root() {
        let mut roots = Roots::new();
        assert_eq!(roots.of(std::process::id() as i32), Root::Same);
    }
}
