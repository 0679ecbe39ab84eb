//! Redirects for a thread whose root cannot name k3shim's state directory
//! (after chroot or pivot_root into another pid namespace, as a container
//! runtime does: /proc/TRACER/root is not there). An open of a fake file
//! becomes memfd_create (its name: the program's own path string) and the
//! tracer fills the new file with the entry's value at the exit stop: reads
//! see the value, and writes reach the policy as for any fake entry (the fd
//! is moved into the trapped range). stat and access are answered by the
//! tracer from the backing file. Anything else fails with EACCES and a warning.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest memfd name (without the NUL): longer paths cannot be converted.
pub const MAX_NAME: usize = 249;

/// Writes the content of `backing` into fd `fd` of `tid` (a fresh memfd).
pub fn fill(tid: i32, backing: &Path) {
    // SAFETY: PEEKUSER of rax, the syscall's result, of our stopped tracee.
    let fd = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKUSER,
            tid,
            std::mem::offset_of!(libc::user_regs_struct, rax),
            0,
        )
    };
    if fd < 0 {
        return;
    }
    let Ok(content) = std::fs::read(backing) else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{tid}/fd/{fd}"))
    {
        let _ = f.write_all(&content);
    }
}

/// struct stat of `backing`, as the kernel writes it for stat/lstat/newfstatat.
pub fn stat_bytes(backing: &Path) -> Result<Vec<u8>, i32> {
    let c = std::ffi::CString::new(backing.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: a zeroed stat is valid; stat fills it from a valid C string path.
    let (r, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::stat(c.as_ptr(), &mut st), st)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: viewing a plain-old-data struct as its bytes.
    let b = unsafe {
        std::slice::from_raw_parts(
            (&st as *const libc::stat).cast::<u8>(),
            std::mem::size_of::<libc::stat>(),
        )
    };
    Ok(b.to_vec())
}

/// struct statx of `backing` for statx's `flags` (sync type only) and `mask`.
pub fn statx_bytes(backing: &Path, flags: u64, mask: u64) -> Result<Vec<u8>, i32> {
    let c = std::ffi::CString::new(backing.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let mut buf = vec![0u8; 256];
    let sync = flags as i32 & libc::AT_STATX_SYNC_TYPE;
    // SAFETY: statx writes at most 256 bytes (struct statx) into our buffer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            c.as_ptr(),
            sync,
            mask as u32,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(buf)
}

/// access(2) of `backing` with `mode`: 0 or -errno.
pub fn access(backing: &Path, mode: i32) -> i64 {
    let Ok(c) = std::ffi::CString::new(backing.as_os_str().as_bytes()) else {
        return -(libc::EINVAL as i64);
    };
    // SAFETY: access of a valid C string path.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        0
    } else {
        -(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO) as i64)
    }
}
