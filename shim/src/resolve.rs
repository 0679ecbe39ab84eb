//! Path resolution as the kernel does it, lexically: cwd or dirfd as the base,
//! `.`, `..` and `//` folded, and the /proc magic links (self, thread-self,
//! PID/cwd, PID/root, PID/fd/N) replaced by what they point to, so that every
//! spelling of a /proc/sys path reaches the same decision.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What the resolver needs to know about the tracee.
pub trait Lookup {
    /// Absolute cwd of task `task`: a thread id (/proc/TID is that thread's own
    /// view: a thread may have its own cwd after unshare(CLONE_FS)), or a pid
    /// named in a /proc/PID/cwd path (the kernel answers for that task).
    fn cwd(&mut self, task: i32) -> Option<Vec<u8>>;
    /// Absolute path behind fd `fd` of task `task` (None if not a path: socket,
    /// pipe...). As for cwd, a thread's own fd table (unshare(CLONE_FILES)).
    fn fd_path(&mut self, task: i32, fd: i32) -> Option<Vec<u8>>;
    /// What an absolute path names, when the caller knows (the paths it serves);
    /// None: not known, the kernel will find out.
    fn kind(&mut self, _path: &[u8]) -> Option<PathKind> {
        None
    }
}

/// What a path names, for the components that lexical folding would drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Dir,
    File,
    Missing,
    /// A component before it is not a directory.
    NotDir,
}

/// Where a relative path starts.
pub enum Base {
    /// The process's cwd (AT_FDCWD, or a call without a dirfd).
    Cwd,
    /// A directory fd.
    Fd(i32),
}

const MAX_MAGIC_HOPS: usize = 8;

/// Resolves `raw` for thread `tid` of process `pid`. `follow_last`: whether a
/// magic link in the last component is followed (false for readlink and lstat).
/// Returns None when the base cannot be known (a bad dirfd): the caller then
/// passes the syscall through and lets the kernel report the error.
/// Some(Err(errno)) when a component that `.`, `..` or a trailing slash
/// requires to be a directory is known (Lookup::kind) to be a file or missing:
/// the kernel fails such a path (`panic/..`, `panic/`) with ENOTDIR or ENOENT
/// where folding alone would name an existing directory.
pub fn resolve(
    raw: &[u8],
    base: Base,
    pid: i32,
    tid: i32,
    follow_last: bool,
    lk: &mut dyn Lookup,
) -> Option<Result<PathBuf, i32>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    if raw.first() != Some(&b'/') {
        // The calling thread's cwd and fd table, not the leader's: they differ after
        // unshare(CLONE_FS|CLONE_FILES), and the leader's are gone once it has exited.
        let b = match base {
            Base::Cwd => lk.cwd(tid)?,
            Base::Fd(fd) => lk.fd_path(tid, fd)?,
        };
        if b.first() != Some(&b'/') {
            return None;
        }
        push_all(&mut out, &b);
    }
    let comps: Vec<&[u8]> = raw
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let trailing_slash = raw.len() > 1 && raw.last() == Some(&b'/');
    let mut hops = 0;
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        // Lexical folding drops what the kernel walks: a component followed by
        // `.`, `..` or a trailing slash must be a directory.
        let walked_through = match comps.get(i + 1) {
            Some(next) => *next == b"." || *next == b"..",
            None => trailing_slash,
        };
        if walked_through && *c != b"." && *c != b".." {
            let mut here = out.clone();
            here.push(c.to_vec());
            match lk.kind(&join(&here)) {
                Some(PathKind::File) | Some(PathKind::NotDir) => return Some(Err(libc::ENOTDIR)),
                Some(PathKind::Missing) => return Some(Err(libc::ENOENT)),
                Some(PathKind::Dir) | None => {}
            }
        }
        match *c {
            b"." => {}
            b".." => {
                out.pop();
            }
            c => {
                out.push(c.to_vec());
                if (!last || follow_last) && hops < MAX_MAGIC_HOPS && magic(&mut out, pid, tid, lk)
                {
                    hops += 1;
                }
            }
        }
    }
    Some(Ok(PathBuf::from(OsStr::from_bytes(&join(&out)))))
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum::<usize>().max(1));
    for c in comps {
        s.push(b'/');
        s.extend_from_slice(c);
    }
    if s.is_empty() {
        s.push(b'/');
    }
    s
}

fn push_all(out: &mut Vec<Vec<u8>>, abs: &[u8]) {
    for c in abs.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
        match c {
            b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
}

fn parse_pid(c: &[u8]) -> Option<i32> {
    if c.is_empty() || !c.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(c).ok()?.parse().ok()
}

/// Replaces a magic /proc link at the end of `out`. Returns true if it did.
fn magic(out: &mut Vec<Vec<u8>>, pid: i32, tid: i32, lk: &mut dyn Lookup) -> bool {
    if out.first().map(|c| c.as_slice()) != Some(b"proc") {
        return false;
    }
    match out.len() {
        2 if out[1] == b"self" => {
            out[1] = pid.to_string().into_bytes();
            true
        }
        2 if out[1] == b"thread-self" => {
            out[1] = pid.to_string().into_bytes();
            out.push(b"task".to_vec());
            out.push(tid.to_string().into_bytes());
            true
        }
        // /proc/N/{cwd,root} and /proc/N/task/T/{cwd,root}
        3 | 5 => {
            let (who, leaf) = if out.len() == 3 {
                (parse_pid(&out[1]), out[2].as_slice())
            } else if out[2] == b"task" {
                (parse_pid(&out[3]), out[4].as_slice())
            } else {
                (None, &b""[..])
            };
            let Some(who) = who else { return false };
            match leaf {
                b"cwd" => match lk.cwd(who) {
                    Some(c) if c.first() == Some(&b'/') => {
                        out.clear();
                        push_all(out, &c);
                        true
                    }
                    _ => false,
                },
                b"root" => {
                    // The shim does not chroot its tracees: every root is "/".
                    out.clear();
                    true
                }
                _ => false,
            }
        }
        // /proc/N/fd/M and /proc/N/task/T/fd/M
        4 | 6 => {
            let (who, fdc) = if out.len() == 4 && out[2] == b"fd" {
                (parse_pid(&out[1]), &out[3])
            } else if out.len() == 6 && out[2] == b"task" && out[4] == b"fd" {
                (parse_pid(&out[3]), &out[5])
            } else {
                return false;
            };
            let (Some(who), Some(fd)) = (who, parse_pid(fdc)) else {
                return false;
            };
            match lk.fd_path(who, fd) {
                Some(p) if p.first() == Some(&b'/') => {
                    out.clear();
                    push_all(out, &p);
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        cwd: HashMap<i32, &'static str>,
        fds: HashMap<(i32, i32), &'static str>,
    }
    impl Lookup for Fake {
        fn cwd(&mut self, pid: i32) -> Option<Vec<u8>> {
            self.cwd.get(&pid).map(|s| s.as_bytes().to_vec())
        }
        fn fd_path(&mut self, pid: i32, fd: i32) -> Option<Vec<u8>> {
            self.fds.get(&(pid, fd)).map(|s| s.as_bytes().to_vec())
        }
    }
    fn fake() -> Fake {
        Fake {
            // Thread 12 of process 10 has its own cwd and fd table.
            cwd: HashMap::from([
                (10, "/proc/sys"),
                (11, "/proc/sys"),
                (12, "/proc"),
                (20, "/tmp"),
            ]),
            fds: HashMap::from([
                ((10, 3), "/proc/sys/vm"),
                ((10, 4), "socket:[123]"),
                ((12, 3), "/proc/sys/kernel"),
                ((20, 5), "/proc"),
            ]),
        }
    }
    fn r(raw: &str, base: Base, pid: i32) -> Option<String> {
        resolve(raw.as_bytes(), base, pid, pid, true, &mut fake())
            .map(|p| p.expect("resolves").to_string_lossy().into_owned())
    }

    #[test]
    fn absolute_paths_fold_dots_and_slashes() {
        assert_eq!(
            r("/proc//sys/./vm/../vm/panic_on_oom", Base::Cwd, 10).unwrap(),
            "/proc/sys/vm/panic_on_oom"
        );
        assert_eq!(r("/../../proc/sys/", Base::Cwd, 10).unwrap(), "/proc/sys");
        assert_eq!(r("/", Base::Cwd, 10).unwrap(), "/");
    }

    #[test]
    fn relative_paths_start_at_cwd_or_dirfd() {
        assert_eq!(
            r("vm/panic_on_oom", Base::Cwd, 10).unwrap(),
            "/proc/sys/vm/panic_on_oom"
        );
        assert_eq!(
            r("panic_on_oom", Base::Fd(3), 10).unwrap(),
            "/proc/sys/vm/panic_on_oom"
        );
        assert_eq!(
            r("sys/kernel/panic", Base::Fd(5), 20).unwrap(),
            "/proc/sys/kernel/panic"
        );
        assert_eq!(r("../../etc/passwd", Base::Cwd, 10).unwrap(), "/etc/passwd");
    }

    #[test]
    fn relative_paths_use_the_calling_threads_own_cwd_and_fd_table() {
        let t = |raw: &str, base| {
            resolve(raw.as_bytes(), base, 10, 12, true, &mut fake())
                .map(|p| p.unwrap().to_string_lossy().into_owned())
        };
        assert_eq!(
            t("sys/vm/panic_on_oom", Base::Cwd).unwrap(),
            "/proc/sys/vm/panic_on_oom"
        );
        assert_eq!(t("panic", Base::Fd(3)).unwrap(), "/proc/sys/kernel/panic");
        // /proc/self/cwd is the process's (the leader's), as in the kernel.
        assert_eq!(t("/proc/self/cwd/x", Base::Cwd).unwrap(), "/proc/sys/x");
        assert_eq!(t("/proc/thread-self/cwd/x", Base::Cwd).unwrap(), "/proc/x");
    }

    #[test]
    fn unknown_or_non_path_dirfd_gives_none() {
        assert!(r("x", Base::Fd(9), 10).is_none());
        assert!(r("x", Base::Fd(4), 10).is_none());
        // An absolute path ignores the dirfd, as in the kernel.
        assert_eq!(r("/proc/sys/x", Base::Fd(9), 10).unwrap(), "/proc/sys/x");
    }

    #[test]
    fn proc_magic_links_are_followed() {
        assert_eq!(
            r("/proc/self/cwd/vm/x", Base::Cwd, 10).unwrap(),
            "/proc/sys/vm/x"
        );
        assert_eq!(
            r("/proc/self/root/proc/sys/x", Base::Cwd, 10).unwrap(),
            "/proc/sys/x"
        );
        assert_eq!(
            r("/proc/10/fd/3/x", Base::Cwd, 20).unwrap(),
            "/proc/sys/vm/x"
        );
        assert_eq!(r("/proc/self/fd/3", Base::Cwd, 10).unwrap(), "/proc/sys/vm");
        assert_eq!(
            r("/proc/thread-self/root/proc/sys/x", Base::Cwd, 10).unwrap(),
            "/proc/sys/x"
        );
        assert_eq!(
            r("/proc/self/../sys/x", Base::Cwd, 10).unwrap(),
            "/proc/sys/x"
        );
        assert_eq!(
            r("/proc/10/task/11/cwd/x", Base::Cwd, 10).unwrap(),
            "/proc/sys/x"
        );
        // Not a magic link: stays as written.
        assert_eq!(
            r("/proc/self/status", Base::Cwd, 10).unwrap(),
            "/proc/10/status"
        );
        assert_eq!(r("/proc/10/fd/4", Base::Cwd, 10).unwrap(), "/proc/10/fd/4");
    }

    #[test]
    fn last_magic_link_is_kept_when_not_followed() {
        let p = resolve(b"/proc/self/fd/3", Base::Cwd, 10, 10, false, &mut fake())
            .unwrap()
            .unwrap();
        assert_eq!(p.to_str().unwrap(), "/proc/10/fd/3");
    }

    /// Knows /proc/sys/kernel (a directory) and /proc/sys/kernel/panic (a file).
    struct Kinds(Fake);
    impl Lookup for Kinds {
        fn cwd(&mut self, pid: i32) -> Option<Vec<u8>> {
            self.0.cwd(pid)
        }
        fn fd_path(&mut self, pid: i32, fd: i32) -> Option<Vec<u8>> {
            self.0.fd_path(pid, fd)
        }
        fn kind(&mut self, path: &[u8]) -> Option<PathKind> {
            match path {
                b"/proc/sys" | b"/proc/sys/kernel" => Some(PathKind::Dir),
                b"/proc/sys/kernel/panic" => Some(PathKind::File),
                p if p.starts_with(b"/proc/sys/kernel/panic/") => Some(PathKind::NotDir),
                p if p.starts_with(b"/proc/sys/") => Some(PathKind::Missing),
                _ => None,
            }
        }
    }

    #[test]
    fn a_file_or_missing_name_before_dot_dotdot_or_a_trailing_slash_fails_as_in_the_kernel() {
        let k = |raw: &[u8]| resolve(raw, Base::Cwd, 10, 10, true, &mut Kinds(fake())).unwrap();
        assert_eq!(k(b"/proc/sys/kernel/panic/.."), Err(libc::ENOTDIR));
        assert_eq!(k(b"/proc/sys/kernel/panic/"), Err(libc::ENOTDIR));
        assert_eq!(k(b"/proc/sys/kernel/panic/."), Err(libc::ENOTDIR));
        assert_eq!(k(b"kernel/panic//"), Err(libc::ENOTDIR));
        assert_eq!(k(b"/proc/sys/kernel/\xff/../panic"), Err(libc::ENOENT));
        assert_eq!(k(b"/proc/sys/kernel/panic/x/.."), Err(libc::ENOTDIR));
        // Directories, unknown paths and plain names fold as before.
        assert_eq!(
            k(b"/proc/sys/kernel/../kernel/panic").unwrap().to_str(),
            Some("/proc/sys/kernel/panic")
        );
        assert_eq!(
            k(b"/proc/sys/kernel/").unwrap().to_str(),
            Some("/proc/sys/kernel")
        );
        assert_eq!(k(b"/tmp/file/../x").unwrap().to_str(), Some("/tmp/x"));
        assert_eq!(
            k(b"/proc/sys/kernel/panic").unwrap().to_str(),
            Some("/proc/sys/kernel/panic")
        );
    }
}
