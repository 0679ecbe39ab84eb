//! Paths whose base has no name: a cwd or dirfd deeper than a page (d_path,
//! and so readlink of /proc/TID/cwd, fails with ENAMETOOLONG), which a
//! program reaches by chdir'ing step by step. The resolver cannot walk from
//! there, and `../../..` or a symlink may still lead into /proc/sys, so the
//! kernel is asked where the path leads: k3shim opens it with O_PATH (which
//! opens no file) from the thread's own cwd or fd (/proc/TID/cwd,
//! /proc/TID/fd/N: magic links that work at any depth) and reads back the
//! name of what it found, which the resolver then walks as any absolute path.

use crate::resolve::{Base, Last};
use crate::roots::Root;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// Where a path from a nameless base leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// This absolute path (in the thread's root) names the same file.
    Path(Vec<u8>),
    /// Not into /proc/sys: what it names is itself deeper than a page, or it
    /// stays in the deep directory (one name, not followed), or the kernel's
    /// walk fails (it will fail the program's the same way).
    Kernel,
    /// Cannot be told (another root: its absolute symlinks are not k3shim's).
    Refuse,
}

fn open_at(dir: Option<&OwnedFd>, path: &[u8], flags: i32) -> Result<OwnedFd, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    let d = dir.map(|d| d.as_raw_fd()).unwrap_or(libc::AT_FDCWD);
    // SAFETY: a NUL-terminated path and an fd we own (or AT_FDCWD); O_PATH opens nothing.
    let fd = unsafe { libc::openat(d, c.as_ptr(), flags | libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: a new fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The absolute name of what `fd` is open on, if it has one that path
/// syscalls take (Linux has none deeper than a page; gVisor gives longer ones).
fn name_of(fd: &OwnedFd) -> Option<Vec<u8>> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.into_os_string().into_vec())
        .filter(|p| p.first() == Some(&b'/') && p.len() < libc::PATH_MAX as usize)
}

/// Where `raw`, given to thread `tid` with `base`, leads (see the module).
pub fn locate(tid: i32, base: Base, raw: &[u8], last: Last, root: &Root) -> Found {
    let names: Vec<&[u8]> = raw
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let trailing = raw.len() > 1 && raw.last() == Some(&b'/');
    let relative = raw.first() != Some(&b'/');
    if relative && names.len() == 1 && names[0] != b".." && last != Last::Follow && !trailing {
        // One name in the deep directory, not followed: it is that name.
        return Found::Kernel;
    }
    if *root != Root::Same {
        return Found::Refuse;
    }
    let dir = if relative {
        let p = match base {
            Base::Cwd => format!("/proc/{tid}/cwd"),
            Base::Fd(fd) => format!("/proc/{tid}/fd/{fd}"),
        };
        match open_at(None, p.as_bytes(), libc::O_DIRECTORY) {
            Ok(d) => Some(d),
            Err(_) => return Found::Kernel,
        }
    } else {
        None
    };
    // A name that is never followed is looked up without its trailing slashes
    // (which would make the lookup follow it).
    let mut path = raw.to_vec();
    if last == Last::Never {
        while path.len() > 1 && path.last() == Some(&b'/') {
            path.pop();
        }
    }
    let nofollow = if last == Last::Follow || (last == Last::NoFollow && trailing) {
        0
    } else {
        libc::O_NOFOLLOW
    };
    match open_at(dir.as_ref(), &path, nofollow) {
        Ok(fd) => name_of(&fd).map(Found::Path).unwrap_or(Found::Kernel),
        Err(libc::ENOENT) => {
            // A name to be made: its directory, and the name.
            let (parent, name) = match path.iter().rposition(|&c| c == b'/') {
                Some(0) => (&b"/"[..], &path[1..]),
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b"."[..], &path[..]),
            };
            if name.is_empty() || name == b"." || name == b".." {
                return Found::Kernel;
            }
            match open_at(dir.as_ref(), parent, libc::O_DIRECTORY) {
                Ok(fd) => match name_of(&fd) {
                    Some(mut p) => {
                        if p != b"/" {
                            p.push(b'/');
                        }
                        p.extend_from_slice(name);
                        Found::Path(p)
                    }
                    None => Found::Kernel,
                },
                Err(_) => Found::Kernel,
            }
        }
        Err(_) => Found::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_from_a_directory_deeper_than_a_page_is_named_by_the_kernel() {
        let top = std::env::temp_dir().join(format!("k3shim-deep-{}", std::process::id()));
        std::fs::create_dir_all(&top).unwrap();
        std::os::unix::fs::symlink("/proc/sys", top.join("l")).unwrap();
        let name = CString::new("d".repeat(200)).unwrap();
        let mut dir = open_at(None, top.as_os_str().as_encoded_bytes(), libc::O_DIRECTORY).unwrap();
        for _ in 0..30 {
            // SAFETY: a directory fd we own and a NUL-terminated name.
            assert_eq!(
                unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) },
                0
            );
            dir = open_at(Some(&dir), name.as_bytes(), libc::O_DIRECTORY).unwrap();
        }
        assert!(name_of(&dir).is_none(), "deeper than a page has no name");
        let fd = dir.as_raw_fd();
        let me = std::process::id() as i32;
        let up = "../".repeat(40);
        let l = |raw: &str, last| locate(me, Base::Fd(fd), raw.as_bytes(), last, &Root::Same);
        assert_eq!(
            l(&format!("{up}proc/sys/vm"), Last::Follow),
            Found::Path(b"/proc/sys/vm".to_vec())
        );
        let via_link = format!("{up}{}/l/vm", top.display());
        assert_eq!(
            l(&via_link, Last::Follow),
            Found::Path(b"/proc/sys/vm".to_vec())
        );
        assert_eq!(
            l(&format!("{up}proc/sys/new"), Last::Follow),
            Found::Path(b"/proc/sys/new".to_vec())
        );
        assert_eq!(l("name", Last::NoFollow), Found::Kernel);
        assert_eq!(l("missing", Last::Follow), Found::Kernel);
        assert_eq!(l("x/y", Last::Follow), Found::Kernel);
        let other = Root::Other {
            tid: me,
            host: Some(b"/x".to_vec()),
            tracer_visible: true,
        };
        assert_eq!(
            locate(me, Base::Fd(fd), b"../x", Last::Follow, &other),
            Found::Refuse
        );
        drop(dir);
        std::fs::remove_dir_all(&top).unwrap();
    }
}
