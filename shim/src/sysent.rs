//! The table of syscalls the engine intercepts: which arguments hold a dirfd and
//! a path, and what the syscall does with that path. x86_64 only for now; an
//! aarch64 table goes beside it (no open/stat/... legacy calls there).

use crate::policy::PathOp;
use syscalls::Sysno;

/// How a path argument is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathArg {
    /// Register index of the dirfd, or None for AT_FDCWD-relative calls.
    pub dirfd: Option<u8>,
    /// Register index of the path pointer.
    pub path: u8,
}

/// How to derive the operation from the registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Open with flags in register `flags` (u8::MAX: creat) and mode in `mode`.
    Open {
        flags: u8,
        mode: u8,
    },
    /// openat2: struct open_how at register 2.
    Openat2,
    /// Stat; `nofollow_flags`: register holding AT_* flags (AT_SYMLINK_NOFOLLOW), if any.
    Stat {
        lstat: bool,
        flags: Option<u8>,
    },
    Access {
        mode: u8,
    },
    Readlink,
    Exec,
    Chdir,
    Truncate,
    Create,
    Link,
    Remove,
    Rename,
    Modify,
    /// Fixed op (xattr reads).
    StatLike,
}

/// One intercepted syscall.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub sysno: Sysno,
    pub kind: OpKind,
    /// Path arguments (rename/link have two).
    pub paths: &'static [PathArg],
}

const fn p(path: u8) -> PathArg {
    PathArg { dirfd: None, path }
}
const fn dp(dirfd: u8, path: u8) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
    }
}

/// Path-taking syscalls, x86_64.
pub static PATH_SYSCALLS: &[Entry] = &[
    Entry {
        sysno: Sysno::open,
        kind: OpKind::Open { flags: 1, mode: 2 },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::creat,
        kind: OpKind::Open {
            flags: u8::MAX,
            mode: 1,
        },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::openat,
        kind: OpKind::Open { flags: 2, mode: 3 },
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::openat2,
        kind: OpKind::Openat2,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::stat,
        kind: OpKind::Stat {
            lstat: false,
            flags: None,
        },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::lstat,
        kind: OpKind::Stat {
            lstat: true,
            flags: None,
        },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::newfstatat,
        kind: OpKind::Stat {
            lstat: false,
            flags: Some(3),
        },
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::statx,
        kind: OpKind::Stat {
            lstat: false,
            flags: Some(2),
        },
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::statfs,
        kind: OpKind::Stat {
            lstat: false,
            flags: None,
        },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::access,
        kind: OpKind::Access { mode: 1 },
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::faccessat,
        kind: OpKind::Access { mode: 2 },
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::faccessat2,
        kind: OpKind::Access { mode: 2 },
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::readlink,
        kind: OpKind::Readlink,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::readlinkat,
        kind: OpKind::Readlink,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::execve,
        kind: OpKind::Exec,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::execveat,
        kind: OpKind::Exec,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::chdir,
        kind: OpKind::Chdir,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::truncate,
        kind: OpKind::Truncate,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::mkdir,
        kind: OpKind::Create,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::mkdirat,
        kind: OpKind::Create,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::mknod,
        kind: OpKind::Create,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::mknodat,
        kind: OpKind::Create,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::unlink,
        kind: OpKind::Remove,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::unlinkat,
        kind: OpKind::Remove,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::rmdir,
        kind: OpKind::Remove,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::rename,
        kind: OpKind::Rename,
        paths: &[p(0), p(1)],
    },
    Entry {
        sysno: Sysno::renameat,
        kind: OpKind::Rename,
        paths: &[dp(0, 1), dp(2, 3)],
    },
    Entry {
        sysno: Sysno::renameat2,
        kind: OpKind::Rename,
        paths: &[dp(0, 1), dp(2, 3)],
    },
    Entry {
        sysno: Sysno::link,
        kind: OpKind::Link,
        paths: &[p(0), p(1)],
    },
    Entry {
        sysno: Sysno::linkat,
        kind: OpKind::Link,
        paths: &[dp(0, 1), dp(2, 3)],
    },
    // symlink's first argument is the link's content, not a path that is looked up.
    Entry {
        sysno: Sysno::symlink,
        kind: OpKind::Link,
        paths: &[p(1)],
    },
    Entry {
        sysno: Sysno::symlinkat,
        kind: OpKind::Link,
        paths: &[dp(1, 2)],
    },
    Entry {
        sysno: Sysno::chmod,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::fchmodat,
        kind: OpKind::Modify,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::chown,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::lchown,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::fchownat,
        kind: OpKind::Modify,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::utime,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::utimes,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::utimensat,
        kind: OpKind::Modify,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::futimesat,
        kind: OpKind::Modify,
        paths: &[dp(0, 1)],
    },
    Entry {
        sysno: Sysno::setxattr,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::lsetxattr,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::removexattr,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::lremovexattr,
        kind: OpKind::Modify,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::getxattr,
        kind: OpKind::StatLike,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::lgetxattr,
        kind: OpKind::StatLike,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::listxattr,
        kind: OpKind::StatLike,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::llistxattr,
        kind: OpKind::StatLike,
        paths: &[p(0)],
    },
    Entry {
        sysno: Sysno::inotify_add_watch,
        kind: OpKind::StatLike,
        // Its first argument is the inotify fd, not a dirfd: the path is cwd-relative.
        paths: &[p(1)],
    },
];

/// Index: syscall number -> table entry. Built once.
pub fn lookup(nr: i64) -> Option<&'static Entry> {
    use std::sync::OnceLock;
    static MAP: OnceLock<Vec<Option<&'static Entry>>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let mut v = vec![None; 512];
        for e in PATH_SYSCALLS {
            v[e.sysno.id() as usize] = Some(e);
        }
        v
    });
    usize::try_from(nr)
        .ok()
        .and_then(|i| map.get(i).copied().flatten())
}

/// The syscall's name, for events and trace lines.
pub fn name(nr: i64) -> &'static str {
    usize::try_from(nr)
        .ok()
        .and_then(Sysno::new)
        .map(|s| s.name())
        .unwrap_or("unknown")
}

/// Turns an entry plus its registers into a PathOp. `open_how_flags` is read from
/// memory for openat2 by the caller.
pub fn path_op(e: &Entry, args: &[u64; 6], openat2: Option<(u64, u64)>) -> PathOp {
    match e.kind {
        OpKind::Open { flags, mode } => {
            if flags == u8::MAX {
                PathOp::Open {
                    flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                    mode: args[mode as usize] as u32,
                }
            } else {
                PathOp::Open {
                    flags: args[flags as usize] as i32,
                    mode: args[mode as usize] as u32,
                }
            }
        }
        OpKind::Openat2 => {
            let (flags, mode) = openat2.unwrap_or((0, 0));
            PathOp::Open {
                flags: flags as i32,
                mode: mode as u32,
            }
        }
        OpKind::Stat { lstat, flags } => {
            let nofollow = lstat
                || flags
                    .map(|r| args[r as usize] as i32 & libc::AT_SYMLINK_NOFOLLOW != 0)
                    .unwrap_or(false);
            PathOp::Stat { nofollow }
        }
        OpKind::Access { mode } => PathOp::Access {
            mode: args[mode as usize] as i32,
        },
        OpKind::Readlink => PathOp::Readlink,
        OpKind::Exec => PathOp::Exec,
        OpKind::Chdir => PathOp::Chdir,
        OpKind::Truncate => PathOp::Truncate,
        OpKind::Create => PathOp::Create,
        OpKind::Link => PathOp::Link,
        OpKind::Remove => PathOp::Remove,
        OpKind::Rename => PathOp::Rename,
        OpKind::Modify => PathOp::Modify,
        OpKind::StatLike => PathOp::Stat { nofollow: false },
    }
}

/// How path argument `i` of this syscall treats a symlink in its last
/// component: as [`follows_last`] says, except that the calls that act on the
/// name itself (remove, rename, create it) never follow it, even with a
/// trailing slash (fs/namei.c: `unlink("link/")` is ENOTDIR, the link stays).
pub fn last(e: &Entry, i: usize, args: &[u64; 6], op: PathOp) -> crate::resolve::Last {
    use crate::resolve::Last;
    let never = match e.sysno {
        Sysno::unlink
        | Sysno::unlinkat
        | Sysno::rmdir
        | Sysno::rename
        | Sysno::renameat
        | Sysno::renameat2
        | Sysno::mkdir
        | Sysno::mkdirat
        | Sysno::mknod
        | Sysno::mknodat
        | Sysno::symlink
        | Sysno::symlinkat => true,
        Sysno::link | Sysno::linkat => i == 1,
        _ => false,
    };
    if never {
        Last::Never
    } else {
        Last::from_follow(follows_last(e, i, args, op))
    }
}

/// Does path argument `i` of this syscall follow a symlink in its last
/// component (as the kernel decides it: the syscall, its flags, O_NOFOLLOW,
/// O_CREAT|O_EXCL)?
pub fn follows_last(e: &Entry, i: usize, args: &[u64; 6], op: PathOp) -> bool {
    let flag = |reg: usize, bit: i32| args[reg] as i32 & bit != 0;
    let nofollow = |reg: usize| flag(reg, libc::AT_SYMLINK_NOFOLLOW);
    match e.sysno {
        Sysno::readlink
        | Sysno::readlinkat
        | Sysno::lstat
        | Sysno::lchown
        | Sysno::lsetxattr
        | Sysno::lremovexattr
        | Sysno::lgetxattr
        | Sysno::llistxattr
        | Sysno::unlink
        | Sysno::unlinkat
        | Sysno::rmdir
        | Sysno::rename
        | Sysno::renameat
        | Sysno::renameat2
        | Sysno::symlink
        | Sysno::symlinkat
        | Sysno::mkdir
        | Sysno::mkdirat
        | Sysno::mknod
        | Sysno::mknodat
        | Sysno::link => false,
        // The new name is never followed; the old one with AT_SYMLINK_FOLLOW.
        Sysno::linkat => i == 0 && flag(4, libc::AT_SYMLINK_FOLLOW),
        // (fchmodat and faccessat have no flags argument: they follow.)
        Sysno::newfstatat | Sysno::faccessat2 | Sysno::utimensat => !nofollow(3),
        Sysno::statx | Sysno::execveat | Sysno::fchownat => {
            !nofollow(if e.sysno == Sysno::statx { 2 } else { 4 })
        }
        Sysno::inotify_add_watch => args[2] as u32 & libc::IN_DONT_FOLLOW == 0,
        _ => match op {
            PathOp::Open { flags, .. } => {
                flags & libc::O_NOFOLLOW == 0
                    && flags & (libc::O_CREAT | libc::O_EXCL) != libc::O_CREAT | libc::O_EXCL
            }
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_by_number() {
        for e in PATH_SYSCALLS {
            assert_eq!(lookup(e.sysno.id() as i64).unwrap().sysno, e.sysno);
        }
        assert!(lookup(Sysno::getpid.id() as i64).is_none());
        assert!(lookup(-1).is_none());
    }

    #[test]
    fn the_last_symlink_is_followed_as_the_kernel_decides() {
        let f = |sys: Sysno, i: usize, args: [u64; 6]| {
            let e = lookup(sys.id() as i64).unwrap();
            follows_last(e, i, &args, path_op(e, &args, None))
        };
        let nf = libc::AT_SYMLINK_NOFOLLOW as u64;
        assert!(f(Sysno::open, 0, [0, libc::O_RDONLY as u64, 0, 0, 0, 0]));
        assert!(!f(Sysno::open, 0, [0, libc::O_NOFOLLOW as u64, 0, 0, 0, 0]));
        let excl = (libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY) as u64;
        assert!(!f(Sysno::openat, 0, [0, 0, excl, 0, 0, 0]));
        assert!(!f(Sysno::mkdir, 0, [0; 6]));
        assert!(!f(Sysno::lstat, 0, [0; 6]));
        assert!(f(Sysno::newfstatat, 0, [0; 6]));
        assert!(!f(Sysno::newfstatat, 0, [0, 0, 0, nf, 0, 0]));
        assert!(!f(Sysno::statx, 0, [0, 0, nf, 0, 0, 0]));
        assert!(f(Sysno::chown, 0, [0; 6]));
        assert!(!f(Sysno::linkat, 0, [0; 6]));
        let follow = libc::AT_SYMLINK_FOLLOW as u64;
        assert!(f(Sysno::linkat, 0, [0, 0, 0, 0, follow, 0]));
        assert!(!f(Sysno::linkat, 1, [0, 0, 0, 0, follow, 0]));
        assert!(!f(
            Sysno::inotify_add_watch,
            0,
            [0, 0, libc::IN_DONT_FOLLOW as u64, 0, 0, 0]
        ));
    }

    #[test]
    fn removals_renames_and_creations_never_follow_the_last_name() {
        use crate::resolve::Last;
        let l = |sys: Sysno, i: usize| {
            let e = lookup(sys.id() as i64).unwrap();
            last(e, i, &[0; 6], path_op(e, &[0; 6], None))
        };
        for s in [Sysno::unlink, Sysno::rmdir, Sysno::mkdir, Sysno::unlinkat] {
            assert_eq!(l(s, 0), Last::Never, "{s}");
        }
        assert_eq!(l(Sysno::renameat2, 0), Last::Never);
        assert_eq!(l(Sysno::renameat2, 1), Last::Never);
        assert_eq!(l(Sysno::link, 0), Last::NoFollow);
        assert_eq!(l(Sysno::link, 1), Last::Never);
        assert_eq!(l(Sysno::lstat, 0), Last::NoFollow);
        assert_eq!(l(Sysno::stat, 0), Last::Follow);
    }

    #[test]
    fn creat_is_an_open_for_writing_with_truncation() {
        let e = lookup(Sysno::creat.id() as i64).unwrap();
        let op = path_op(e, &[0, 0o644, 0, 0, 0, 0], None);
        assert_eq!(
            op,
            PathOp::Open {
                flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode: 0o644
            }
        );
        assert!(op.is_mutation());
    }
}
