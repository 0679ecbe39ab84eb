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
