//! Per-run directories under /dev/shm/k3shim (the view and the real tree's
//! bind point), each locked by its live run, and the sweep that removes
//! what a killed run left: its directory and, where mounts are not private
//! (this gVisor), its mounts.

use anyhow::{Context, Result};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where run directories live (tmpfs: the view costs no disk, and a reboot
/// clears it).
pub const RUN_ROOT: &str = "/dev/shm/k3shim";

/// One run's directory, locked (flock on DIR/lock) while the run lives.
pub struct RunDir {
    path: PathBuf,
    _lock: std::fs::File,
    keep: bool,
}

fn flock(f: &std::fs::File, how: i32) -> bool {
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(f.as_raw_fd(), how) == 0 }
}

impl RunDir {
    /// Creates and locks RUN_ROOT/PID-NONCE. It is made under a dot name
    /// and renamed once locked, so a sweep never takes a new one for stale.
    pub fn create() -> Result<RunDir> {
        let root = Path::new(RUN_ROOT);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(root)
            .with_context(|| format!("{RUN_ROOT}: cannot create the run directory root"))?;
        let name = format!("{}-{:08x}", std::process::id(), nonce());
        let tmp = root.join(format!(".new-{name}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        let lock = std::fs::File::create(tmp.join("lock"))
            .with_context(|| format!("{}/lock: cannot create", tmp.display()))?;
        flock(&lock, libc::LOCK_EX);
        let path = root.join(name);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: cannot rename to {}", tmp.display(), path.display()))?;
        Ok(RunDir {
            path,
            _lock: lock,
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The view of the fake tree, bound over /proc/sys.
    pub fn tree(&self) -> PathBuf {
        self.path.join("tree")
    }

    /// Where the real /proc/sys is bound (real entries are bound from here).
    pub fn real(&self) -> PathBuf {
        self.path.join("real")
    }

    /// Leave the directory in place (a mount could not be removed).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Removes a run directory: its directories are 0555, so each is made
/// writable first. Never crosses into a mount (a bind left in place).
fn remove_tree(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let top = std::fs::symlink_metadata(p)?;
    fn rec(p: &Path, dev: u64) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        for e in std::fs::read_dir(p)? {
            let e = e?;
            let m = std::fs::symlink_metadata(e.path())?;
            if m.is_dir() {
                if m.dev() != dev {
                    return Err(std::io::Error::other("a mount is still in place"));
                }
                rec(&e.path(), dev)?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        std::fs::remove_dir(p)
    }
    rec(p, std::os::unix::fs::MetadataExt::dev(&top))
}

fn nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
}

/// One line of /proc/self/mountinfo: id, parent id, root, mount point, fs type.
#[derive(Debug, Clone)]
pub struct MountLine {
    pub id: u64,
    pub parent: u64,
    pub root: String,
    pub point: String,
    pub fstype: String,
}

/// The mounts of k3shim's namespace.
pub fn mounts() -> Vec<MountLine> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split_whitespace().collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                fstype: post.split_whitespace().next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    // mountinfo writes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts that belong to run directory `name` (visible here only where
/// mount namespaces do not isolate): those whose source is in it (the view
/// bound over /proc/sys), those mounted inside it (the real tree's bind),
/// and every mount below one of those (real entries bound into the view).
/// Children come after their parents.
pub fn mounts_of(all: &[MountLine], name: &str) -> Vec<MountLine> {
    let inside = format!("{RUN_ROOT}/{name}/");
    let source = format!("/k3shim/{name}/");
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for m in all {
        let own = m.point.starts_with(&inside)
            || (m.fstype == "tmpfs"
                && (m.root.contains(&source) || m.root.ends_with(&source[..source.len() - 1])));
        if own || ids.contains(&m.parent) {
            ids.insert(m.id);
            out.push(m.clone());
        }
    }
    out
}

/// Detaches mounts, children first. Returns what could not be detached.
pub fn unmount(list: &[MountLine]) -> Vec<String> {
    let mut failed = Vec::new();
    for m in list.iter().rev() {
        let Ok(p) = std::ffi::CString::new(m.point.as_bytes()) else {
            continue;
        };
        // SAFETY: umount2 on a NUL-terminated path we own.
        if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            // Already gone with its parent.
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
                failed.push(format!("{}: {e}", m.point));
            }
        }
    }
    failed
}

/// Finds run directories no live run holds (their k3shim was killed),
/// detaches their mounts and removes them. One line per thing done.
pub fn sweep() -> Vec<String> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(RUN_ROOT) else {
        return done;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(".new-") {
            // Being created, or left by a run killed in that instant.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|d| d.as_secs() > 60);
            if !old {
                continue;
            }
        }
        let Ok(lock) = std::fs::File::open(path.join("lock")) else {
            // No lock file: not a run directory of ours (or half made long ago).
            if name.starts_with(".new-") {
                let _ = remove_tree(&path);
            }
            continue;
        };
        if !flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            continue; // a live run
        }
        let mine = mounts_of(&mounts(), &name);
        let failed = unmount(&mine);
        if !mine.is_empty() {
            done.push(format!(
                "detached {} mount(s) of the killed run {} ({})",
                mine.len(),
                path.display(),
                mine.iter()
                    .map(|m| m.point.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !failed.is_empty() {
            done.push(format!(
                "could not detach {}: run `umount -l` on them as root",
                failed.join("; ")
            ));
            continue;
        }
        match remove_tree(&path) {
            Ok(()) => done.push(format!(
                "removed the stale run directory {}",
                path.display()
            )),
            Err(err) => done.push(format!("{}: cannot remove ({err})", path.display())),
        }
    }
    done
}
