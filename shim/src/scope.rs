//! openat2's RESOLVE_* rules, for a path the engine redirects: the kernel
//! then walks the replacement (absolute, no symlinks), not the program's
//! path, so the rules are applied here to what the program's path went
//! through (resolve::Walked), with the kernel's errnos (fs/namei.c):
//! RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS give ELOOP at a link;
//! RESOLVE_BENEATH and RESOLVE_IN_ROOT give EXDEV at a magic link, BENEATH
//! also for an absolute path or link and for a walk that leaves the dirfd;
//! RESOLVE_NO_XDEV gives EXDEV for a walk that leaves the mount it starts in;
//! RESOLVE_CACHED gives EAGAIN (/proc/sys is never in the dentry cache). Where
//! openat2 knows no flags (probe.rs; this gVisor has no openat2), such a call
//! is left to the kernel.

use crate::resolve::Walked;

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;
pub const RESOLVE_CACHED: u64 = 0x20;

/// The RESOLVE_* bits Linux knows (VALID_RESOLVE_FLAGS).
pub const RESOLVE_VALID: u64 = 0x3f;

/// The errno openat2 gives for its `struct open_how` before it looks at the
/// path (fs/open.c build_open_flags), or None: unknown flags or resolve bits
/// and mode bits outside 07777 are EINVAL, so are RESOLVE_BENEATH with
/// RESOLVE_IN_ROOT, a mode without O_CREAT/O_TMPFILE, O_CREAT|O_DIRECTORY,
/// an O_TMPFILE that is not O_TMPFILE|(O_WRONLY or O_RDWR) and O_PATH with
/// other flags than O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC; RESOLVE_CACHED with
/// O_TRUNC, O_CREAT or O_TMPFILE is EAGAIN. Resolve bits unknown here are
/// refused even where a newer kernel knows them: the engine cannot apply
/// rules it does not know to a path it redirects.
pub fn open_how_errno(flags: u64, mode: u64, resolve: u64) -> Option<i32> {
    const O_TMPFILE_BIT: u64 = 0o20000000; // __O_TMPFILE
    let valid = (libc::O_ACCMODE
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOCTTY
        | libc::O_TRUNC
        | libc::O_APPEND
        | libc::O_NONBLOCK
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_ASYNC
        | libc::O_DIRECT
        | libc::O_LARGEFILE
        | libc::O_DIRECTORY
        | libc::O_NOFOLLOW
        | libc::O_NOATIME
        | libc::O_CLOEXEC
        | libc::O_PATH) as u32 as u64
        | O_TMPFILE_BIT;
    let flags = flags & !(libc::O_CLOEXEC as u64);
    let has = |f: i32| flags & f as u32 as u64 != 0;
    if flags & !valid != 0 || resolve & !RESOLVE_VALID != 0 {
        return Some(libc::EINVAL);
    }
    if resolve & RESOLVE_BENEATH != 0 && resolve & RESOLVE_IN_ROOT != 0 {
        return Some(libc::EINVAL);
    }
    let creates = has(libc::O_CREAT) || flags & O_TMPFILE_BIT != 0;
    if (creates && mode & !0o7777 != 0) || (!creates && mode != 0) {
        return Some(libc::EINVAL);
    }
    if has(libc::O_CREAT) && has(libc::O_DIRECTORY) {
        return Some(libc::EINVAL);
    }
    if flags & O_TMPFILE_BIT != 0 {
        let tmpfile = O_TMPFILE_BIT | libc::O_DIRECTORY as u64;
        let tmpfile_mask = tmpfile | libc::O_CREAT as u64;
        if flags & tmpfile_mask != tmpfile || flags & libc::O_ACCMODE as u64 == 0 {
            return Some(libc::EINVAL);
        }
    }
    if has(libc::O_PATH) {
        let allowed = (libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH) as u64;
        if flags & !allowed != 0 {
            return Some(libc::EINVAL);
        }
    }
    if resolve & RESOLVE_CACHED != 0
        && (has(libc::O_TRUNC) || has(libc::O_CREAT) || flags & O_TMPFILE_BIT != 0)
    {
        return Some(libc::EAGAIN);
    }
    None
}

/// What one walk went through.
#[derive(Debug, Clone, Default)]
pub struct WalkFacts {
    /// The mount of the served paths: a walk that is ever outside it crosses a mount.
    mount: Vec<u8>,
    start: Vec<u8>,
    links: usize,
    magic: bool,
    absolute_link: bool,
    left_start: bool,
    outside_mount: bool,
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || (p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/'))
}

impl WalkFacts {
    pub fn new(mount: &[u8]) -> WalkFacts {
        WalkFacts {
            mount: mount.to_vec(),
            ..Default::default()
        }
    }

    pub fn record(&mut self, ev: Walked<'_>) {
        match ev {
            Walked::Start(p) => {
                // A new walk (the resolver may walk twice): only the last one counts.
                *self = WalkFacts::new(&self.mount);
                self.start = p.to_vec();
                self.outside_mount = !is_under(p, &self.mount);
            }
            Walked::At(p) => {
                self.left_start |= !is_under(p, &self.start);
                self.outside_mount |= !is_under(p, &self.mount);
            }
            Walked::Link { absolute } => {
                self.links += 1;
                self.absolute_link |= absolute;
            }
            Walked::Magic => {
                self.links += 1;
                self.magic = true;
            }
        }
    }

    /// The errno the kernel gives this walk under `resolve` (openat2's
    /// open_how.resolve); `absolute`: the program's path starts with '/'.
    pub fn verdict(&self, resolve: u64, absolute: bool) -> Option<i32> {
        if resolve & RESOLVE_NO_SYMLINKS != 0 && self.links > 0 {
            return Some(libc::ELOOP);
        }
        if resolve & RESOLVE_NO_MAGICLINKS != 0 && self.magic {
            return Some(libc::ELOOP);
        }
        let scoped = RESOLVE_BENEATH | RESOLVE_IN_ROOT;
        if resolve & scoped != 0 && self.magic {
            return Some(libc::EXDEV);
        }
        if resolve & RESOLVE_BENEATH != 0 && (absolute || self.absolute_link || self.left_start) {
            return Some(libc::EXDEV);
        }
        if resolve & RESOLVE_NO_XDEV != 0 && self.outside_mount {
            return Some(libc::EXDEV);
        }
        // "Only from the dentry cache": /proc/sys entries never are (the kernel
        // answers EAGAIN, and the caller retries without the flag).
        if resolve & RESOLVE_CACHED != 0 {
            return Some(libc::EAGAIN);
        }
        None
    }
}

/// "/proc/sys" when it is a mount of its own (a container's read-only bind),
/// else "/proc": the mount a walk to a /proc/sys entry ends in.
pub fn proc_sys_mount() -> Vec<u8> {
    let id = |p: &std::ffi::CStr| -> Option<(u64, u64)> {
        let mut buf = [0u8; 256];
        // SAFETY: statx writes at most 256 bytes (struct statx) into our buffer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_statx,
                libc::AT_FDCWD,
                p.as_ptr(),
                0,
                libc::STATX_BASIC_STATS | 0x1000, /* STATX_MNT_ID */
                buf.as_mut_ptr(),
            )
        };
        if r != 0 {
            return None;
        }
        let mask = u32::from_ne_bytes(buf[0..4].try_into().expect("4"));
        let dev = u64::from(u32::from_ne_bytes(buf[0x88..0x8c].try_into().expect("4"))) << 32
            | u64::from(u32::from_ne_bytes(buf[0x8c..0x90].try_into().expect("4")));
        let mnt = if mask & 0x1000 != 0 {
            u64::from_ne_bytes(buf[0x90..0x98].try_into().expect("8"))
        } else {
            0
        };
        Some((dev, mnt))
    };
    match (id(c"/proc"), id(c"/proc/sys")) {
        (Some(a), Some(b)) if a != b => b"/proc/sys".to_vec(),
        _ => b"/proc".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(evs: &[Walked<'_>]) -> WalkFacts {
        let mut w = WalkFacts::new(b"/proc");
        for e in evs {
            w.record(*e);
        }
        w
    }

    #[test]
    fn an_invalid_open_how_is_refused_before_the_path_as_linux_does() {
        let ro = libc::O_RDONLY as u64;
        assert_eq!(open_how_errno(ro, 0, 0), None);
        assert_eq!(open_how_errno(ro, 0, RESOLVE_VALID), Some(libc::EINVAL));
        assert_eq!(open_how_errno(ro, 0, RESOLVE_BENEATH), None);
        assert_eq!(open_how_errno(ro, 0, 0x40), Some(libc::EINVAL));
        assert_eq!(open_how_errno(ro, 0, 1 << 63), Some(libc::EINVAL));
        assert_eq!(open_how_errno(1 << 40, 0, 0), Some(libc::EINVAL));
        assert_eq!(open_how_errno(ro, 0o644, 0), Some(libc::EINVAL));
        let creat = libc::O_CREAT as u64 | libc::O_WRONLY as u64;
        assert_eq!(open_how_errno(creat, 0o644, 0), None);
        assert_eq!(open_how_errno(creat, 0o100644, 0), Some(libc::EINVAL));
        assert_eq!(
            open_how_errno(creat | libc::O_CLOEXEC as u64, 0o644, RESOLVE_CACHED),
            Some(libc::EAGAIN)
        );
        let path = libc::O_PATH as u64;
        assert_eq!(open_how_errno(path | libc::O_CLOEXEC as u64, 0, 0), None);
        assert_eq!(
            open_how_errno(path | libc::O_WRONLY as u64, 0, 0),
            Some(libc::EINVAL)
        );
        let tmp = libc::O_TMPFILE as u32 as u64;
        assert_eq!(open_how_errno(tmp, 0o600, 0), Some(libc::EINVAL));
        assert_eq!(open_how_errno(tmp | libc::O_RDWR as u64, 0o600, 0), None);
    }

    #[test]
    fn the_kernels_errnos_for_each_flag() {
        // openat2(AT_FDCWD, "/proc/sys/vm/x") from cwd /tmp: starts at "/".
        let abs = walk(&[
            Walked::Start(b"/"),
            Walked::At(b"/proc"),
            Walked::At(b"/proc/sys"),
        ]);
        assert_eq!(abs.verdict(RESOLVE_BENEATH, true), Some(libc::EXDEV));
        assert_eq!(abs.verdict(RESOLVE_NO_XDEV, true), Some(libc::EXDEV));
        assert_eq!(
            abs.verdict(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, true),
            None
        );
        // openat2(dirfd of /proc/sys/vm, "x"): below the dirfd, same mount.
        let below = walk(&[
            Walked::Start(b"/proc/sys/vm"),
            Walked::At(b"/proc/sys/vm/x"),
        ]);
        assert_eq!(
            below.verdict(RESOLVE_BENEATH | RESOLVE_NO_XDEV, false),
            None
        );
        // "../vm/x" from it climbs above the dirfd.
        let up = walk(&[
            Walked::Start(b"/proc/sys/vm"),
            Walked::At(b"/proc/sys"),
            Walked::At(b"/proc/sys/vm"),
        ]);
        assert_eq!(up.verdict(RESOLVE_BENEATH, false), Some(libc::EXDEV));
        // /proc/self/fd/N/x: a plain link, then a magic one.
        let fd = walk(&[
            Walked::Start(b"/"),
            Walked::Link { absolute: false },
            Walked::Magic,
        ]);
        assert_eq!(fd.verdict(RESOLVE_NO_MAGICLINKS, true), Some(libc::ELOOP));
        assert_eq!(fd.verdict(RESOLVE_NO_SYMLINKS, true), Some(libc::ELOOP));
        assert_eq!(fd.verdict(RESOLVE_IN_ROOT, true), Some(libc::EXDEV));
    }
}
