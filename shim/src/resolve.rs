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
    /// What the real file system holds at `path` (absolute, with no symlink
    /// before its last component), as lstat sees it. Asked only for components
    /// outside /proc and the paths `kind` answers for. Node::Unknown (the
    /// default): no file system, the walk stays lexical.
    fn lstat(&mut self, _path: &[u8]) -> Node {
        Node::Unknown
    }
    /// The walk went through a served path and ended outside them
    /// (`/proc/sys/x/../../../etc`): the kernel would walk the real tree
    /// instead, which may lack what was served, so the result must be used as
    /// resolved rather than the raw path passed on.
    fn left_served(&mut self) {}
    /// Does the caller want to be told what each walk goes through (openat2's
    /// RESOLVE_* checks)? Then `walked` is called as it goes.
    fn wants_walk(&self) -> bool {
        false
    }
    fn walked(&mut self, _ev: Walked<'_>) {}
}

/// What a walk went through, told to [`Lookup::walked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked<'a> {
    /// A walk begins at this directory (its root for an absolute path).
    Start(&'a [u8]),
    /// The walk is at this path (after each name, `..` and link).
    At(&'a [u8]),
    /// A symlink was followed (absolute: its target starts at the root).
    Link { absolute: bool },
    /// A magic link (/proc/PID/{cwd,root,fd/N}) was followed.
    Magic,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The process's cwd (AT_FDCWD, or a call without a dirfd).
    Cwd,
    /// A directory fd.
    Fd(i32),
}

/// What is done with a symlink (or magic link) in the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Followed (open, stat, ...).
    Follow,
    /// Not followed, except with a trailing slash, which makes the kernel's
    /// lookup follow it (lstat, readlink, O_NOFOLLOW).
    NoFollow,
    /// Never followed, trailing slash or not: the syscall acts on the name
    /// itself (unlink, rmdir, rename, mkdir, mknod, symlink, link's new name).
    Never,
}

impl Last {
    pub fn from_follow(follow: bool) -> Last {
        if follow {
            Last::Follow
        } else {
            Last::NoFollow
        }
    }
}

const MAX_MAGIC_HOPS: usize = 8;

/// The kernel's limit on symlinks followed in one resolution (MAXSYMLINKS;
/// gVisor's is the same): one more fails with ELOOP.
pub const MAX_SYMLINKS: usize = 40;

/// What the real file system holds at a path, as lstat(2) sees it (a last
/// symlink not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Anything that is neither a directory nor a symlink.
    File,
    /// A symlink, with its target.
    Symlink(Vec<u8>),
    Missing,
    /// A component before it is not a directory.
    NotDir,
    /// Cannot tell (no file system behind the lookup, or an error such as
    /// EACCES): the walk goes on lexically and the kernel decides.
    Unknown,
}

/// Resolves `raw` for thread `tid` of process `pid` as the kernel would.
/// `follow_last`: whether a symlink (or magic link) in the last component is
/// followed (false for readlink, lstat, O_NOFOLLOW...).
///
/// Returns None when the kernel decides alone: the base cannot be known (a bad
/// dirfd), or the walk fails (missing or non-directory component, too many
/// symlinks) in the real file system before reaching anything the caller
/// serves; the caller then passes the syscall through and the kernel reports
/// the same error. Some(Err(errno)) when the walk fails inside what the
/// caller serves (Lookup::kind): a file or missing name walked through
/// (`panic/..`, `panic/`), or a loop after it: ENOTDIR, ENOENT, ELOOP.
///
/// Symlinks: the path is first folded lexically (no file system access);
/// when that cannot differ from the kernel's walk (a /proc path without `..`,
/// a single name below a dirfd or cwd that is not followed) it is the answer.
/// Otherwise each component outside /proc and the served paths is looked up
/// (Lookup::lstat) and symlinks are followed as the kernel does (absolute and
/// relative targets, `..` after them, at most MAX_SYMLINKS), so that a
/// symlink into /proc/sys (`/tmp/l -> /proc/sys/vm`, `/dev/fd/N`) reaches
/// the same decision as the path it names, and a file walked through with
/// `..` (`/tmp/file/../..`) fails with ENOTDIR.
pub fn resolve(
    raw: &[u8],
    base: Base,
    pid: i32,
    tid: i32,
    follow_last: bool,
    lk: &mut dyn Lookup,
) -> Option<Result<PathBuf, i32>> {
    resolve_in(
        raw,
        base,
        pid,
        tid,
        Last::from_follow(follow_last),
        false,
        lk,
    )
}

/// The path as written, folded lexically (cwd or dirfd, `.`, `..`, `//`,
/// /proc magic links) without following other symlinks: how a user names a
/// program in a rule (`exec:/usr/local/bin/kubectl` when kubectl is a symlink
/// to another binary). None when the base cannot be known.
pub fn lexical(raw: &[u8], base: Base, pid: i32, tid: i32, lk: &mut dyn Lookup) -> Option<PathBuf> {
    let mut start: Vec<Vec<u8>> = Vec::new();
    if raw.first() != Some(&b'/') {
        let b = match base {
            Base::Cwd => lk.cwd(tid)?,
            Base::Fd(fd) => lk.fd_path(tid, fd)?,
        };
        if b.first() != Some(&b'/') {
            return None;
        }
        push_all(&mut start, &b);
    }
    let comps: Vec<&[u8]> = raw
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let w = Walk {
        comps: &comps,
        raw,
        pid,
        tid,
        last: Last::Follow,
        root: 0,
    };
    // Served kinds are not asked (only names walked through are, and a missing
    // one there fails): the folded path is what is wanted.
    w.run(start, false, lk)?.ok()
}

/// As [`resolve`]; `in_root`: the base is the root (openat2's
/// RESOLVE_IN_ROOT): absolute paths and symlinks start there and `..` stops there.
pub fn resolve_in(
    raw: &[u8],
    base: Base,
    pid: i32,
    tid: i32,
    last: Last,
    in_root: bool,
    lk: &mut dyn Lookup,
) -> Option<Result<PathBuf, i32>> {
    let follow_last = last == Last::Follow;
    let mut start: Vec<Vec<u8>> = Vec::new();
    if raw.first() != Some(&b'/') || in_root {
        // The calling thread's cwd and fd table, not the leader's: they differ after
        // unshare(CLONE_FS|CLONE_FILES), and the leader's are gone once it has exited.
        let b = match base {
            Base::Cwd => lk.cwd(tid)?,
            Base::Fd(fd) => lk.fd_path(tid, fd)?,
        };
        if b.first() != Some(&b'/') {
            return None;
        }
        push_all(&mut start, &b);
    }
    let comps: Vec<&[u8]> = raw
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let dotdot = comps.iter().any(|c| *c == b"..");
    let root = if in_root { start.len() } else { 0 };
    let w = Walk {
        comps: &comps,
        raw,
        pid,
        tid,
        last,
        root,
    };
    let lexical = w.run(start.clone(), false, lk);
    // The base (from /proc/TID/cwd or fd/N) has no symlink in it. Exact without
    // looking: below /proc (its only symlinks are the magic ones, followed above)
    // with no `..` to climb back out; one name below the base, not followed.
    let names = comps.iter().filter(|c| **c != b".").count();
    let trailing_slash = raw.len() > 1 && raw.last() == Some(&b'/');
    let exact = !dotdot
        && !in_root
        && (matches!(&lexical, Some(Ok(p)) if is_under(p.as_os_str().as_bytes(), b"/proc"))
            || (!start.is_empty() && names == 1 && !follow_last && !trailing_slash));
    if exact {
        return lexical;
    }
    w.run(start, true, lk)
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/')
}

/// One resolution's input.
struct Walk<'a> {
    comps: &'a [&'a [u8]],
    raw: &'a [u8],
    pid: i32,
    tid: i32,
    last: Last,
    /// Components of the start that are the root (RESOLVE_IN_ROOT), else 0.
    root: usize,
}

impl Walk<'_> {
    /// The walk: lexical folding (`fs` false), or with the real file system looked
    /// up for every component outside /proc and the served paths (`fs` true).
    fn run(
        &self,
        mut out: Vec<Vec<u8>>,
        fs: bool,
        lk: &mut dyn Lookup,
    ) -> Option<Result<PathBuf, i32>> {
        let (comps, raw, pid, tid) = (self.comps, self.raw, self.pid, self.tid);
        let follow_last = self.last == Last::Follow;
        // A trailing slash makes a lookup follow the last name, never a removal's.
        let slash_follows = self.last != Last::Never;
        let root: Vec<Vec<u8>> = out[..self.root].to_vec();
        let tell = lk.wants_walk();
        if tell {
            lk.walked(Walked::Start(&join(&out)));
        }
        let mut todo: std::collections::VecDeque<Vec<u8>> =
            comps.iter().map(|c| c.to_vec()).collect();
        let mut trailing_slash = raw.len() > 1 && raw.last() == Some(&b'/');
        let mut hops = 0;
        let mut links = 0;
        // A served path was walked: an error from then on is the caller's to give
        // (the kernel would not see the same tree), not the kernel's.
        let mut served = false;
        let fail = |served: bool, errno: i32| served.then_some(Err(errno));
        while let Some(c) = todo.pop_front() {
            let last = todo.is_empty();
            // Lexical folding drops what the kernel walks: a component followed by
            // `.`, `..` or a trailing slash must be a directory.
            let walked_through = match todo.front() {
                Some(next) => next == b"." || next == b"..",
                None => trailing_slash,
            };
            let (must_dir, follow) = if fs {
                (
                    !last || trailing_slash,
                    !last || follow_last || (trailing_slash && slash_follows),
                )
            } else {
                (walked_through, !last || follow_last)
            };
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    if out.len() > self.root {
                        out.pop();
                    }
                    if tell {
                        lk.walked(Walked::At(&join(&out)));
                    }
                    continue;
                }
                _ => {}
            }
            out.push(c);
            let here = join(&out);
            if tell {
                lk.walked(Walked::At(&here));
            }
            // Lexically, only names walked through are checked (the policy's kind may
            // cost a syscall for a bind); the file system walk asks for every name.
            let kind = if fs || walked_through {
                lk.kind(&here)
            } else {
                None
            };
            match kind {
                Some(k) => {
                    served = true;
                    match k {
                        PathKind::File | PathKind::NotDir if must_dir => {
                            return Some(Err(libc::ENOTDIR))
                        }
                        PathKind::NotDir if fs => return Some(Err(libc::ENOTDIR)),
                        PathKind::Missing if must_dir => return Some(Err(libc::ENOENT)),
                        _ => {}
                    }
                    continue;
                }
                None if out.first().map(Vec::as_slice) == Some(b"proc") => {
                    // procfs: its symlinks that matter are the magic ones.
                    if follow && hops < MAX_MAGIC_HOPS {
                        let hop = magic(&mut out, pid, tid, lk);
                        if hop != Hop::None {
                            hops += 1;
                            links += 1;
                            if tell {
                                lk.walked(if hop == Hop::Magic {
                                    Walked::Magic
                                } else {
                                    Walked::Link { absolute: false }
                                });
                                lk.walked(Walked::At(&join(&out)));
                            }
                        }
                    }
                    continue;
                }
                None if !fs => continue,
                // A last name that is not followed is the kernel's to look at.
                None if last && !follow && !must_dir => continue,
                None => {}
            }
            match lk.lstat(&here) {
                Node::Symlink(target) if follow => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return fail(served, libc::ELOOP);
                    }
                    if target.is_empty() {
                        return fail(served, libc::ENOENT);
                    }
                    out.pop();
                    if target[0] == b'/' {
                        out.clone_from(&root);
                    }
                    if tell {
                        lk.walked(Walked::Link {
                            absolute: target[0] == b'/',
                        });
                    }
                    if last && target.len() > 1 && target.last() == Some(&b'/') {
                        trailing_slash = true;
                    }
                    for t in target.split(|&b| b == b'/').filter(|t| !t.is_empty()).rev() {
                        todo.push_front(t.to_vec());
                    }
                }
                Node::Symlink(_) | Node::Dir | Node::Unknown => {}
                Node::File if must_dir => return fail(served, libc::ENOTDIR),
                Node::File => {}
                Node::Missing if !last => return fail(served, libc::ENOENT),
                Node::Missing => {}
                Node::NotDir => return fail(served, libc::ENOTDIR),
            }
        }
        let path = join(&out);
        if served && lk.kind(&path).is_none() {
            lk.left_served();
        }
        Some(Ok(PathBuf::from(OsStr::from_bytes(&path))))
    }
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

/// What [`magic`] followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    None,
    /// /proc/self, /proc/thread-self: plain symlinks (their text depends on the reader).
    Plain,
    /// /proc/PID/{cwd,root,fd/N}: magic links.
    Magic,
}

/// Replaces a /proc link at the end of `out`: what it followed.
fn magic(out: &mut Vec<Vec<u8>>, pid: i32, tid: i32, lk: &mut dyn Lookup) -> Hop {
    if out.first().map(|c| c.as_slice()) != Some(b"proc") {
        return Hop::None;
    }
    match out.len() {
        2 if out[1] == b"self" => {
            out[1] = pid.to_string().into_bytes();
            Hop::Plain
        }
        2 if out[1] == b"thread-self" => {
            out[1] = pid.to_string().into_bytes();
            out.push(b"task".to_vec());
            out.push(tid.to_string().into_bytes());
            Hop::Plain
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
            let Some(who) = who else { return Hop::None };
            match leaf {
                b"cwd" => match lk.cwd(who) {
                    Some(c) if c.first() == Some(&b'/') => {
                        out.clear();
                        push_all(out, &c);
                        Hop::Magic
                    }
                    _ => Hop::None,
                },
                b"root" => {
                    // The shim does not chroot its tracees: every root is "/".
                    out.clear();
                    Hop::Magic
                }
                _ => Hop::None,
            }
        }
        // /proc/N/fd/M and /proc/N/task/T/fd/M
        4 | 6 => {
            let (who, fdc) = if out.len() == 4 && out[2] == b"fd" {
                (parse_pid(&out[1]), &out[3])
            } else if out.len() == 6 && out[2] == b"task" && out[4] == b"fd" {
                (parse_pid(&out[3]), &out[5])
            } else {
                return Hop::None;
            };
            let (Some(who), Some(fd)) = (who, parse_pid(fdc)) else {
                return Hop::None;
            };
            match lk.fd_path(who, fd) {
                Some(p) if p.first() == Some(&b'/') => {
                    out.clear();
                    push_all(out, &p);
                    Hop::Magic
                }
                _ => Hop::None,
            }
        }
        _ => Hop::None,
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

    /// A file system with symlinks, and a served /proc/sys (vm/panic_on_oom).
    struct Links {
        nodes: HashMap<&'static str, Node>,
        lstats: usize,
    }
    impl Lookup for Links {
        fn cwd(&mut self, _: i32) -> Option<Vec<u8>> {
            Some(b"/tmp".to_vec())
        }
        fn fd_path(&mut self, _: i32, fd: i32) -> Option<Vec<u8>> {
            (fd == 7).then(|| b"/proc/sys/vm".to_vec())
        }
        fn kind(&mut self, path: &[u8]) -> Option<PathKind> {
            match path {
                b"/proc/sys" | b"/proc/sys/vm" => Some(PathKind::Dir),
                b"/proc/sys/vm/panic_on_oom" => Some(PathKind::File),
                p if p.starts_with(b"/proc/sys/") => Some(PathKind::Missing),
                _ => None,
            }
        }
        fn lstat(&mut self, path: &[u8]) -> Node {
            self.lstats += 1;
            let p = std::str::from_utf8(path).unwrap();
            self.nodes.get(p).cloned().unwrap_or(Node::Missing)
        }
    }
    fn links() -> Links {
        let l = |t: &str| Node::Symlink(t.as_bytes().to_vec());
        Links {
            nodes: HashMap::from([
                ("/tmp", Node::Dir),
                ("/tmp/l", l("/proc/sys/vm")),
                ("/tmp/rel", l("../proc/sys/vm")),
                ("/tmp/f", l("l/panic_on_oom")),
                ("/tmp/file", Node::File),
                ("/tmp/loop", l("loop")),
                ("/tmp/self", l("/proc/self")),
                ("/dev", Node::Dir),
                ("/dev/fd", l("/proc/self/fd")),
                ("/usr", Node::Dir),
                ("/usr/lib", Node::Dir),
                ("/usr/lib/os-release", Node::File),
            ]),
            lstats: 0,
        }
    }
    fn w(raw: &str, follow: bool) -> Option<Result<String, i32>> {
        resolve(raw.as_bytes(), Base::Cwd, 10, 10, follow, &mut links())
            .map(|r| r.map(|p| p.to_string_lossy().into_owned()))
    }

    #[test]
    fn symlinks_on_the_way_are_followed_as_the_kernel_does() {
        let ok = |s: &str| Some(Ok(s.to_string()));
        assert_eq!(
            w("/tmp/l/panic_on_oom", true),
            ok("/proc/sys/vm/panic_on_oom")
        );
        assert_eq!(w("l/panic_on_oom", true), ok("/proc/sys/vm/panic_on_oom"));
        assert_eq!(
            w("/tmp/rel/panic_on_oom", true),
            ok("/proc/sys/vm/panic_on_oom")
        );
        assert_eq!(w("/tmp/f", true), ok("/proc/sys/vm/panic_on_oom"));
        // A last symlink not followed (lstat, O_NOFOLLOW) is the link itself.
        assert_eq!(w("/tmp/f", false), ok("/tmp/f"));
        // `..` after a symlink climbs from its target, not from the link's directory.
        assert_eq!(
            w("/tmp/l/../vm/panic_on_oom", true),
            ok("/proc/sys/vm/panic_on_oom")
        );
        // Links to /proc/self and /dev/fd are the tracee's own (magic links).
        assert_eq!(
            w("/dev/fd/7/panic_on_oom", true),
            ok("/proc/sys/vm/panic_on_oom")
        );
        assert_eq!(
            w("/tmp/self/fd/7/panic_on_oom", true),
            ok("/proc/sys/vm/panic_on_oom")
        );
        assert_eq!(w("/usr/lib/os-release", true), ok("/usr/lib/os-release"));
    }

    #[test]
    fn a_trailing_slash_follows_the_last_link_for_a_lookup_but_never_for_a_removal() {
        let r = |raw: &str, last: Last| {
            resolve_in(raw.as_bytes(), Base::Cwd, 10, 10, last, false, &mut links())
                .map(|r| r.map(|p| p.to_string_lossy().into_owned()))
        };
        let ok = |s: &str| Some(Ok(s.to_string()));
        assert_eq!(r("/tmp/l/", Last::NoFollow), ok("/proc/sys/vm"));
        assert_eq!(r("/tmp/l/", Last::Never), ok("/tmp/l"));
        assert_eq!(r("/tmp/l//", Last::Never), ok("/tmp/l"));
        assert_eq!(r("/tmp/f/", Last::Never), ok("/tmp/f"));
        // Links before the last name are followed all the same.
        assert_eq!(r("/tmp/l/x/", Last::Never), Some(Err(libc::ENOENT)));
        assert_eq!(r("/proc/self/cwd/", Last::Never), ok("/proc/10/cwd"));
    }

    #[test]
    fn the_lexical_form_keeps_the_symlinks_as_written() {
        let l = lexical(b"/tmp/./l/panic_on_oom", Base::Cwd, 10, 10, &mut links());
        assert_eq!(l.unwrap().to_str(), Some("/tmp/l/panic_on_oom"));
        assert_eq!(
            w("/tmp/l/panic_on_oom", true),
            Some(Ok("/proc/sys/vm/panic_on_oom".to_string()))
        );
    }

    #[test]
    fn walks_that_fail_in_the_real_file_system_are_left_to_the_kernel() {
        // A file walked through: ENOTDIR; found before anything served: the kernel says it.
        assert_eq!(w("/tmp/file/../l/panic_on_oom", true), None);
        assert_eq!(w("/tmp/missing/../l/panic_on_oom", true), None);
        assert_eq!(w("/tmp/loop/x", true), None);
        // The same after a served path was walked: the caller answers.
        assert_eq!(
            w("/tmp/l/../../../tmp/file/x", true),
            Some(Err(libc::ENOTDIR))
        );
        assert_eq!(w("/tmp/l/nothing/x", true), Some(Err(libc::ENOENT)));
    }

    #[test]
    fn forty_symlinks_are_followed_and_the_forty_first_is_eloop() {
        let mut lk = links();
        let names: Vec<&'static str> = (0..=40)
            .map(|i| &*Box::leak(format!("/tmp/c{i}").into_boxed_str()))
            .collect();
        for i in 0..40 {
            lk.nodes
                .insert(names[i], Node::Symlink(names[i + 1].as_bytes().to_vec()));
        }
        lk.nodes
            .insert(names[40], Node::Symlink(b"/proc/sys/vm".to_vec()));
        let r = |raw: &str, lk: &mut Links| {
            resolve(raw.as_bytes(), Base::Cwd, 10, 10, true, lk)
                .map(|r| r.map(|p| p.to_string_lossy().into_owned()))
        };
        assert_eq!(
            r("/tmp/c1/panic_on_oom", &mut lk),
            Some(Ok("/proc/sys/vm/panic_on_oom".into()))
        );
        assert_eq!(r("/tmp/c0/panic_on_oom", &mut lk), None);
    }

    #[test]
    fn proc_paths_without_dotdot_and_single_unfollowed_names_need_no_lookup() {
        let mut lk = links();
        for (raw, follow) in [
            ("/proc/sys/vm/panic_on_oom", true),
            ("/proc/self/status", true),
            ("name", false),
            ("./name", false),
        ] {
            resolve(raw.as_bytes(), Base::Cwd, 10, 10, follow, &mut lk);
        }
        assert_eq!(lk.lstats, 0);
        resolve(b"name", Base::Cwd, 10, 10, true, &mut lk);
        assert_eq!(lk.lstats, 1, "a followed name may be a symlink");
    }
}
