//! Does a private mount namespace work here? Measured, never assumed: a
//! child unshares its mount namespace, binds a directory and remounts it
//! read-only; k3shim then looks whether it sees that mount (it must not),
//! and whether the mount outlives the child.

use super::rundir::RUN_ROOT;
use serde::Serialize;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    /// unshare(CLONE_NEWNS) and a bind worked.
    pub can_mount: bool,
    /// The bind stayed private to the child's namespace and ended with it.
    pub isolated: bool,
    /// A read-only remount of the bind worked.
    pub readonly: bool,
    /// One line: what was found.
    pub detail: String,
}

impl Probe {
    /// What `--backend auto` picks, and why.
    pub fn auto_choice(&self) -> (bool, String) {
        if self.can_mount && self.isolated && self.readonly {
            (true, format!("mount: {}", self.detail))
        } else {
            (false, format!("ptrace: {}", self.detail))
        }
    }
}

fn errno_text(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Runs the probe (a fork and a few mounts: milliseconds).
pub fn probe() -> Probe {
    let no = |detail: String| Probe {
        can_mount: false,
        isolated: false,
        readonly: false,
        detail,
    };
    let dir = Path::new(RUN_ROOT).join(format!(".probe-{}", std::process::id()));
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    let made = std::fs::create_dir_all(&src)
        .and_then(|_| std::fs::create_dir_all(&dst))
        .and_then(|_| std::fs::write(src.join("marker"), b""));
    if let Err(e) = made {
        return no(format!(
            "{}: cannot create the probe directory ({e})",
            dir.display()
        ));
    }
    let cs = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in probe paths");
    let (csrc, cdst) = (cs(&src), cs(&dst));
    let mut up = [0i32; 2];
    let mut down = [0i32; 2];
    // SAFETY: pipe2 fills arrays we own.
    if unsafe { libc::pipe2(up.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        || unsafe { libc::pipe2(down.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        let _ = std::fs::remove_dir_all(&dir);
        return no("pipe2 failed".into());
    }
    // SAFETY: fork; the child makes raw syscalls on data prepared above and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: child side: raw syscalls only.
        unsafe {
            let none = std::ptr::null::<libc::c_char>();
            let mut r = [0u8; 8];
            let errno = || *libc::__errno_location();
            let mut e = 0;
            if libc::unshare(libc::CLONE_NEWNS) == 0 {
                r[0] = 1;
                if libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                {
                    r[1] = 1;
                }
                if libc::mount(
                    csrc.as_ptr(),
                    cdst.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
                {
                    r[2] = 1;
                    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
                    if libc::mount(none, cdst.as_ptr(), none, flags, std::ptr::null()) == 0 {
                        r[3] = 1;
                    } else {
                        e = errno();
                    }
                } else {
                    e = errno();
                }
            } else {
                e = errno();
            }
            r[4..8].copy_from_slice(&e.to_le_bytes());
            libc::write(up[1], r.as_ptr().cast(), r.len());
            let mut b = 0u8;
            libc::read(down[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: closing the ends the parent does not use.
    unsafe {
        libc::close(up[1]);
        libc::close(down[0]);
    }
    let mut r = [0u8; 8];
    let n = if pid > 0 {
        // SAFETY: reading into our own buffer.
        unsafe { libc::read(up[0], r.as_mut_ptr().cast(), r.len()) }
    } else {
        -1
    };
    let seen_during = dst.join("marker").exists();
    // SAFETY: let the child end, then reap it; close our ends.
    unsafe {
        libc::write(down[1], b"x".as_ptr().cast(), 1);
        libc::close(down[1]);
        libc::close(up[0]);
        if pid > 0 {
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
    let stayed = dst.join("marker").exists();
    if stayed {
        // SAFETY: umount2 on our probe directory's path.
        unsafe { libc::umount2(cdst.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(src.join("marker"));
    let _ = std::fs::remove_dir(&src);
    let _ = std::fs::remove_dir(&dst);
    let _ = std::fs::remove_dir(&dir);
    if n != 8 {
        return no("the probe's child did not answer".into());
    }
    let e = i32::from_le_bytes([r[4], r[5], r[6], r[7]]);
    if r[0] == 0 {
        return no(format!(
            "unshare(CLONE_NEWNS) is refused ({}): needs CAP_SYS_ADMIN",
            errno_text(e)
        ));
    }
    if r[2] == 0 {
        return no(format!("a bind mount is refused ({})", errno_text(e)));
    }
    let readonly = r[3] == 1;
    let isolated = r[1] == 1 && !seen_during && !stayed;
    let detail = if isolated && readonly {
        "a private mount namespace works here (a bind made in it is not seen outside and ends with it)".to_string()
    } else if !isolated {
        format!(
            "mount namespaces do not isolate here: a bind made after unshare is seen by every process{}{}",
            if stayed { " and stays after its process ends" } else { "" },
            if readonly { "" } else { "; read-only remounts of binds fail" }
        )
    } else {
        format!("read-only remounts of binds fail ({})", errno_text(e))
    };
    Probe {
        can_mount: true,
        isolated,
        readonly,
        detail,
    }
}
