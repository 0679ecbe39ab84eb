//! File operations confined to the state directory.
//!
//! Why: backing files are handed to traced programs and written on their
//! behalf, so a symlink planted inside the state directory must never make
//! fakefs read or write outside it. Every operation starts from the state
//! directory's fd and never follows a symlink: openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS) where the kernel has it, else a component-by-component
//! walk with O_NOFOLLOW (gVisor 2022 has no openat2).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// 0 = not probed, 1 = openat2 works, 2 = use the walk.
static OPENAT2: AtomicU8 = AtomicU8::new(0);
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Splits a relative path into clean components (no empty, `.` or `..`).
fn components(rel: &str) -> io::Result<Vec<&str>> {
    if rel.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.starts_with('/')
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(parts)
}

/// A directory handle from which all relative operations stay beneath it.
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// The directory fd itself (for walks that list it).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn open(path: &Path) -> io::Result<Root> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: c is a valid NUL-terminated string.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: fd was just returned by open and is owned by nobody else.
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn openat2(&self, rel: &str, flags: i32, mode: u32) -> Option<io::Result<OwnedFd>> {
        if OPENAT2.load(Ordering::Relaxed) == 2 {
            return None;
        }
        let c = match cstr(rel) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: if flags & libc::O_CREAT != 0 {
                mode as u64
            } else {
                0
            },
            resolve: RESOLVE_BENEATH
                | RESOLVE_NO_SYMLINKS
                | RESOLVE_NO_MAGICLINKS
                | RESOLVE_NO_XDEV,
        };
        // SAFETY: arguments follow the openat2(2) ABI; how outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            OPENAT2.store(1, Ordering::Relaxed);
            // SAFETY: r is a new fd owned by us.
            return Some(Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) }));
        }
        let e = io::Error::last_os_error();
        let code = e.raw_os_error().unwrap_or(0);
        let unsupported = code == libc::ENOSYS
            || (OPENAT2.load(Ordering::Relaxed) == 0
                && matches!(code, libc::EPERM | libc::E2BIG | libc::EINVAL));
        if unsupported {
            OPENAT2.store(2, Ordering::Relaxed);
            return None;
        }
        Some(Err(e))
    }

    /// Opens (and with `create`, makes) the directory `rel` beneath the root.
    pub fn open_dir(&self, rel: &str, create: bool) -> io::Result<OwnedFd> {
        let parts = components(rel)?;
        if !create {
            if let Some(r) = self.openat2(
                if rel.is_empty() { "." } else { rel },
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ) {
                return r;
            }
        }
        if parts.is_empty() {
            // A new open file description: a dup would share the listing offset.
            let dot = cstr(".")?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            // SAFETY: valid fd and C string.
            let fd = check(unsafe { libc::openat(self.fd.as_raw_fd(), dot.as_ptr(), flags) })?;
            // SAFETY: fd is new and ours.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let mut cur = self.fd.try_clone()?;
        for c in parts {
            let name = cstr(c)?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            let mut r = open_at_checked(&cur, &name, flags, 0);
            if create && matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOENT)) {
                // SAFETY: valid fd and C string.
                let m = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
                if m < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(io::Error::last_os_error());
                }
                r = open_at_checked(&cur, &name, flags, 0);
            }
            cur = r?;
        }
        Ok(cur)
    }

    /// Opens the file `rel` beneath the root without following symlinks.
    pub fn open_file(&self, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        if flags & libc::O_CREAT == 0 {
            if let Some(r) = self.openat2(rel, flags, mode) {
                return r;
            }
        }
        let (dir, leaf) = split(rel)?;
        let d = self.open_dir(dir, false)?;
        let name = cstr(leaf)?;
        open_at_checked(&d, &name, flags, mode)
    }

    /// Reads a whole regular file beneath the root (O_NONBLOCK: a FIFO planted
    /// in its place fails instead of blocking).
    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let fd = self.open_file(rel, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
        let mut f = std::fs::File::from(fd);
        let mut v = Vec::new();
        io::Read::read_to_end(&mut f, &mut v)?;
        Ok(v)
    }

    /// lstat of `rel` beneath the root; None when it does not exist.
    pub fn lstat(&self, rel: &str) -> io::Result<Option<libc::stat>> {
        let (dir, leaf) = split(rel)?;
        // A name in the root itself (index.json, checked on every decision) needs
        // no walk: one fstatat on the root fd.
        let opened;
        let d = if dir.is_empty() {
            &self.fd
        } else {
            opened = match self.open_dir(dir, false) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            &opened
        };
        stat_at(d, leaf)
    }

    /// Replaces `rel` atomically: a new file in `tmp/` is written, given
    /// `mode`, optionally fsynced, then renamed over the target. Readers see
    /// the old or the new content, never a mix; a symlink at the target is
    /// replaced, never followed.
    pub fn write_atomic(&self, rel: &str, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
        let (dir, leaf) = split(rel)?;
        let target = self.open_dir(dir, true)?;
        let tmp = self.open_dir("tmp", true)?;
        let name = format!(
            "{}.{}.{}.tmp",
            std::process::id(),
            // SAFETY: gettid has no preconditions.
            unsafe { libc::syscall(libc::SYS_gettid) },
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let cname = cstr(&name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid fd and C string.
        let fd = check(unsafe {
            libc::openat(
                tmp.as_raw_fd(),
                cname.as_ptr(),
                flags,
                0o600 as libc::c_uint,
            )
        })?;
        // SAFETY: fd is new and ours.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let res = (|| {
            io::Write::write_all(&mut f, data)?;
            // SAFETY: valid fd.
            check(unsafe { libc::fchmod(f.as_raw_fd(), mode) })?;
            if durable {
                f.sync_data()?;
            }
            let cleaf = cstr(leaf)?;
            // SAFETY: valid fds and C strings.
            check(unsafe {
                libc::renameat(
                    tmp.as_raw_fd(),
                    cname.as_ptr(),
                    target.as_raw_fd(),
                    cleaf.as_ptr(),
                )
            })?;
            Ok(())
        })();
        if res.is_err() {
            // SAFETY: valid fd and C string; failure is irrelevant.
            unsafe { libc::unlinkat(tmp.as_raw_fd(), cname.as_ptr(), 0) };
        }
        res
    }

    /// Creates `rel` with `data` unless it exists; true when created.
    pub fn create_new(&self, rel: &str, data: &[u8], mode: u32) -> io::Result<bool> {
        let (dir, _) = split(rel)?;
        self.open_dir(dir, true)?;
        match self.open_file(rel, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(fd) => {
                let mut f = std::fs::File::from(fd);
                io::Write::write_all(&mut f, data)?;
                // SAFETY: valid fd.
                check(unsafe { libc::fchmod(f.as_raw_fd(), mode) })?;
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends one record with a single write(2) on an O_APPEND fd, so
    /// concurrent appenders never interleave within a line.
    pub fn append(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        let fd = self.open_file(rel, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, 0o644)?;
        let f = std::fs::File::from(fd);
        let n = io::Write::write(&mut &f, data)?;
        if n != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short append"));
        }
        Ok(())
    }

    /// Removes a file (or, with `dir`, a directory tree) beneath the root;
    /// a missing one is fine. Never follows symlinks.
    pub fn remove(&self, rel: &str, dir: bool) -> io::Result<()> {
        let (parent, leaf) = split(rel)?;
        let p = match self.open_dir(parent, false) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        remove_at(&p, leaf, dir)
    }
}

/// Removes `name` in `dir` (recursively when it is a directory).
pub(crate) fn remove_at(dir: &OwnedFd, name: &str, recursive: bool) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid fd and C string.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) if recursive => {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            let sub = open_at_checked(dir, &c, flags, 0)?;
            // SAFETY: valid fd; a 0555 view must become writable to empty it.
            unsafe { libc::fchmod(sub.as_raw_fd(), 0o755) };
            for (n, _) in list(&sub)? {
                remove_at(&sub, &n, true)?;
            }
            // SAFETY: valid fd and C string.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
            Ok(())
        }
        _ => Err(e),
    }
}

/// What a directory entry is, as `list` reports it (symlinks are never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileType {
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device: never a state file.
    Other,
}

impl FileType {
    fn of_mode(mode: libc::mode_t) -> FileType {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFREG => FileType::File,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::Other,
        }
    }

    /// How a repair line names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FileType::Dir => "a directory",
            FileType::File => "a regular file",
            FileType::Symlink => "a symlink",
            FileType::Other => "a FIFO, socket or device",
        }
    }
}

/// Lists a freshly opened directory fd: (name, type), without `.` and `..`.
/// Raw getdents64 (two syscalls for a small directory): d_type says what each
/// name is without a stat per name; only DT_UNKNOWN costs an fstatat.
pub(crate) fn list(dir: &OwnedFd) -> io::Result<Vec<(String, FileType)>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: buf is writable for buf.len() bytes; the fd is valid.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name (NUL-terminated).
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n as usize {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let dtype = buf[off + 18];
            let raw = &buf[off + 19..off + reclen];
            let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
            off += reclen;
            if name == b"." || name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            let kind = match dtype {
                libc::DT_DIR => FileType::Dir,
                libc::DT_REG => FileType::File,
                libc::DT_LNK => FileType::Symlink,
                libc::DT_UNKNOWN => match stat_at(dir, &name) {
                    Ok(Some(st)) => FileType::of_mode(st.st_mode),
                    _ => continue,
                },
                _ => FileType::Other,
            };
            out.push((name, kind));
        }
    }
    Ok(out)
}

/// lstat of `name` in `dir`; None when it does not exist.
pub(crate) fn stat_at(dir: &OwnedFd, name: &str) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: st is plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// The type of `name` in `dir` (not following a symlink); None when missing.
pub(crate) fn type_at(dir: &OwnedFd, name: &str) -> io::Result<Option<FileType>> {
    Ok(stat_at(dir, name)?.map(|st| FileType::of_mode(st.st_mode)))
}

/// Reads up to `max` bytes of the regular file `name` in `dir`: one openat
/// (O_NOFOLLOW, O_NONBLOCK so a planted FIFO never blocks), one read, one
/// close. More than `max` bytes gives EFBIG.
pub(crate) fn read_small_at(dir: &OwnedFd, name: &str, max: usize) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = vec![0u8; max + 1];
    // SAFETY: buf is writable for its length; fd is valid.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // A short read of a regular file is its end; a full buffer is too much.
    if n as usize > max {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The target of the symlink `name` in `dir` (lossy), for messages.
pub(crate) fn readlink_at(dir: &OwnedFd, name: &str) -> Option<String> {
    let c = cstr(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd, C string and buffer of buf.len() bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// Renames `from` in `from_dir` to `to` in `to_dir`; a symlink is moved, never
/// followed.
pub(crate) fn rename_at(
    from_dir: &OwnedFd,
    from: &str,
    to_dir: &OwnedFd,
    to: &str,
) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid fds and C strings.
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
        )
    })?;
    Ok(())
}

/// Creates an empty file `name` in `dir` with `mode` unless it exists.
pub(crate) fn touch_at(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // O_EXCL never follows a symlink; an existing name is opened checked.
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string.
    let r = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) };
    let fd = if r >= 0 {
        // SAFETY: fd is new and ours.
        unsafe { OwnedFd::from_raw_fd(r) }
    } else if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
        open_at_checked(dir, &c, libc::O_RDONLY | libc::O_CLOEXEC, 0)?
    } else {
        return Err(io::Error::last_os_error());
    };
    // fchmod fixes the umask.
    fchmod(&fd, mode);
    Ok(())
}

/// Creates directory `name` in `dir` unless it exists.
pub(crate) fn mkdir_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid fd and C string.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// chmod of `name` in `dir`, not following a symlink (procfs-like modes for views).
pub(crate) fn chmod_at(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECTORY;
    let fd = open_at_checked(dir, &c, flags, 0)?;
    fchmod(&fd, mode);
    Ok(())
}

pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) {
    // SAFETY: valid fd.
    unsafe { libc::fchmod(fd.as_raw_fd(), mode) };
}

/// Splits `a/b/c` into (`a/b`, `c`); the leaf must be a clean name.
fn split(rel: &str) -> io::Result<(&str, &str)> {
    let parts = components(rel)?;
    if parts.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    })
}

/// Opens `name` in `dir` without following a symlink, and checks that what was
/// opened is what the name holds: this gVisor opens a symlink to a directory
/// despite O_NOFOLLOW|O_DIRECTORY, so the fd is compared (device, inode) with an
/// lstat of the name, and a symlink or a swap in between gives ELOOP.
pub(crate) fn open_at_checked(
    dir: &OwnedFd,
    name: &std::ffi::CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed stat buffers are valid out-parameters for fstat/fstatat.
    let (mut a, mut b): (libc::stat, libc::stat) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: valid fds, C string and out-parameters.
    let ok = unsafe {
        libc::fstat(fd.as_raw_fd(), &mut a) == 0
            && libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut b,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
    };
    if !ok
        || b.st_mode & libc::S_IFMT == libc::S_IFLNK
        || a.st_dev != b.st_dev
        || a.st_ino != b.st_ino
    {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(fd)
}

/// Whether the probe found openat2 usable (for `k3shim doctor`).
pub fn openat2_in_use() -> Option<bool> {
    match OPENAT2.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// A counter shared by every process that has the state directory open,
/// in a one-page file mapped MAP_SHARED: a writer of index.json bumps it, and a
/// reader learns whether to look at index.json again with no syscall (each
/// syscall costs tens of microseconds under gVisor, and the check runs on every
/// /proc/sys decision).
pub(crate) struct Generation {
    ptr: *mut u8,
}

impl Generation {
    const LEN: usize = 8;

    /// Maps DIR/`name` (created if missing). None if it cannot be mapped: the
    /// caller then checks index.json's stat every time.
    pub(crate) fn map(root: &Root, name: &str) -> Option<Generation> {
        let fd = root
            .open_file(name, libc::O_RDWR | libc::O_CREAT, 0o644)
            .ok()?;
        let f = std::fs::File::from(fd);
        if f.metadata().ok()?.len() < Self::LEN as u64 {
            f.set_len(Self::LEN as u64).ok()?;
        }
        // SAFETY: a fresh shared mapping of LEN bytes of a file at least LEN long;
        // the kernel picks the address. The mapping outlives the fd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Generation { ptr: p.cast() })
    }

    fn atomic(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: ptr is page-aligned (mmap), valid for LEN = 8 bytes for as long as
        // self lives, and only ever accessed atomically.
        unsafe { &*(self.ptr as *const std::sync::atomic::AtomicU64) }
    }

    pub(crate) fn load(&self) -> u64 {
        self.atomic().load(Ordering::Acquire)
    }

    /// Bumps the counter; returns the new value.
    pub(crate) fn bump(&self) -> u64 {
        self.atomic().fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.cast(), Self::LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_never_follow_a_symlink_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("f")).unwrap();
        let r = Root::open(root.path()).unwrap();
        assert!(r.read("link/secret").is_err());
        assert!(r.read("f").is_err());
        assert!(r.write_atomic("link/secret", b"x", 0o644, false).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "s"
        );
        // A symlink as the final component is replaced, not followed.
        r.write_atomic("f", b"new", 0o644, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "s"
        );
        assert_eq!(r.read("f").unwrap(), b"new");
        assert!(r.read("../x").is_err());
    }

    #[test]
    fn the_walk_fallback_behaves_like_openat2() {
        let root = tempfile::tempdir().unwrap();
        let r = Root::open(root.path()).unwrap();
        let saved = OPENAT2.swap(2, Ordering::Relaxed);
        r.write_atomic("a/b/c", b"1\n", 0o444, false).unwrap();
        assert_eq!(r.read("a/b/c").unwrap(), b"1\n");
        std::os::unix::fs::symlink("/etc", root.path().join("a/l")).unwrap();
        assert!(r.read("a/l/hostname").is_err());
        OPENAT2.store(saved, Ordering::Relaxed);
        let st = r.lstat("a/b/c").unwrap().unwrap();
        assert_eq!(st.st_mode & 0o777, 0o444);
    }
}
