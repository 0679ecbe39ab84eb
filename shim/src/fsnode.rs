//! What the real file system holds at a path, for the resolver's walk
//! (resolve::Lookup::lstat): an lstat, and a readlink for a symlink, with the
//! answers for directories and files kept while nothing can have changed them.
//!
//! A walk looks at every component of a path outside /proc (a symlink
//! anywhere can lead into /proc/sys), which inside gVisor costs ~35 us a
//! component. So a component found to be a directory or a file (never a
//! symlink or a missing name) is remembered, and forgotten as soon as its
//! entry can have changed: every directory whose entries are remembered is
//! watched with inotify, and any delete or rename of a name (or of a directory
//! above it) drops what was remembered under it. Events are read under the
//! lock that answers: by the tracer itself at the exit of every unlink, rmdir
//! and rename of the traced tree (so its own changes are seen before its next
//! syscall), and by a thread for the rest. A change made by a process outside
//! the traced tree may go unseen until that thread has read it: the same kind
//! of window every check of a path before the kernel's own walk has (another
//! process may change the file system in between). Mount changes are not
//! watched (see README, divergences).

use crate::resolve::Node;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

/// At most this many directories watched (inotify watches are a per-user
/// limit shared with the traced programs themselves).
const MAX_WATCHES: usize = 1024;
/// At most this many entries remembered.
const MAX_NODES: usize = 8192;

#[derive(Default)]
struct Known {
    /// Path -> is a directory (else a file).
    nodes: BTreeMap<Vec<u8>, bool>,
    /// Watch descriptor -> the directory it watches.
    wds: HashMap<i32, Vec<u8>>,
    /// Directories whose entries may be remembered (watched).
    watched: HashSet<Vec<u8>>,
    /// Bumped by every batch of events: an answer found before a batch is not kept.
    generation: u64,
}

impl Known {
    /// Forgets `path` and everything below it.
    fn forget(&mut self, path: &[u8]) {
        let mut below = path.to_vec();
        below.push(b'/');
        let mut end = path.to_vec();
        end.push(b'/' + 1);
        let gone: Vec<Vec<u8>> = self
            .nodes
            .range(below.clone()..end)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.nodes.remove(&k);
        }
        self.nodes.remove(path);
        self.watched
            .retain(|w| w.as_slice() != path && !w.starts_with(&below));
    }
}

/// lstat with remembered answers. Without inotify, every call is an lstat.
pub struct FsNodes {
    known: Arc<Mutex<Known>>,
    inotify: Option<Arc<OwnedFd>>,
    /// An eventfd written on drop: the watcher thread ends (it holds the fds
    /// too, so they close once it has).
    stop: Option<Arc<OwnedFd>>,
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

const WATCH_MASK: u32 = libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK;

impl FsNodes {
    pub fn new() -> FsNodes {
        let known = Arc::new(Mutex::new(Known::default()));
        // SAFETY: inotify_init1 returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        let inotify = (fd >= 0).then(|| {
            // SAFETY: `fd` is a fresh fd that nothing else owns.
            Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })
        });
        // SAFETY: eventfd returns a new fd or -1.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let (inotify, stop) = match (inotify, stop >= 0) {
            // SAFETY: `stop` is a fresh fd that nothing else owns.
            (Some(i), true) => (
                Some(i),
                Some(Arc::new(unsafe { OwnedFd::from_raw_fd(stop) })),
            ),
            _ => (None, None),
        };
        let mut nodes = FsNodes {
            known,
            inotify,
            stop,
        };
        if let (Some(fd), Some(stop)) = (&nodes.inotify, &nodes.stop) {
            let (fd, stop, known) = (fd.clone(), stop.clone(), nodes.known.clone());
            let spawned = std::thread::Builder::new()
                .name("k3shim-fsnodes".into())
                .stack_size(64 * 1024)
                .spawn(move || read_events(&fd, &stop, &known));
            if spawned.is_ok() {
                nodes.watch(b"/");
            } else {
                nodes.inotify = None;
                nodes.stop = None;
            }
        }
        nodes
    }

    /// Watches directory `dir` so that its entries can be remembered.
    fn watch(&self, dir: &[u8]) {
        let Some(fd) = &self.inotify else { return };
        let mut k = self.known.lock().expect("fsnodes lock");
        if k.watched.len() >= MAX_WATCHES || k.watched.contains(dir) {
            return;
        }
        let Ok(c) = CString::new(dir) else { return };
        // SAFETY: a valid C string and our inotify fd.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), WATCH_MASK) };
        if wd >= 0 {
            k.wds.insert(wd, dir.to_vec());
            k.watched.insert(dir.to_vec());
        }
    }

    /// Applies every event queued so far (the traced tree removed or renamed
    /// something: its next lookups must not see what was there).
    pub fn sync(&self) {
        if let Some(fd) = &self.inotify {
            let mut k = self.known.lock().expect("fsnodes lock");
            let mut buf = vec![0u8; 16 * 1024];
            while apply_events(fd, &mut k, &mut buf) {}
        }
    }

    /// lstat(2) of `path` (absolute, no symlink before its last component).
    pub fn lstat(&self, path: &[u8]) -> Node {
        let generation = {
            let k = self.known.lock().expect("fsnodes lock");
            match k.nodes.get(path) {
                Some(true) => return Node::Dir,
                Some(false) => return Node::File,
                None => k.generation,
            }
        };
        let n = lstat(path);
        if self.inotify.is_some() && matches!(n, Node::Dir | Node::File) {
            let keep = {
                let mut k = self.known.lock().expect("fsnodes lock");
                let keep = k.generation == generation
                    && k.nodes.len() < MAX_NODES
                    && k.watched.contains(parent(path));
                if keep {
                    k.nodes.insert(path.to_vec(), n == Node::Dir);
                }
                keep
            };
            if keep && n == Node::Dir {
                self.watch(path);
            }
        }
        n
    }
}

impl Drop for FsNodes {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a local to our eventfd.
            unsafe { libc::write(stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

impl Default for FsNodes {
    fn default() -> Self {
        FsNodes::new()
    }
}

/// The watcher thread: waits for events, then applies them under the lock;
/// ends when `stop` (an eventfd) is written.
fn read_events(fd: &OwnedFd, stop: &OwnedFd, known: &Mutex<Known>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut p = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two pollfds we own.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if p[1].revents != 0 {
            return;
        }
        let p = p[0];
        let mut k = known.lock().expect("fsnodes lock");
        if r < 0 || p.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            // The fd is unusable: nothing can be remembered safely any more.
            k.nodes.clear();
            k.watched.clear();
            k.generation += 1;
            return;
        }
        while apply_events(fd, &mut k, &mut buf) {}
    }
}

/// Reads one batch of queued events (non-blocking) and forgets what each may
/// have changed. False when none was queued.
fn apply_events(fd: &OwnedFd, k: &mut Known, buf: &mut [u8]) -> bool {
    // SAFETY: reading into our own buffer from our inotify fd.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return false;
    }
    k.generation += 1;
    let mut off = 0usize;
    let n = n as usize;
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    while off + HEAD <= n {
        let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().expect("4"));
        let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().expect("4"));
        let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().expect("4")) as usize;
        let name_bytes = &buf[off + HEAD..(off + HEAD + len).min(n)];
        let name = &name_bytes[..name_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_bytes.len())];
        off += HEAD + len;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            k.nodes.clear();
            continue;
        }
        let Some(dir) = k.wds.get(&wd).cloned() else {
            continue;
        };
        let gone = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT;
        if mask & gone != 0 {
            k.forget(&dir);
            if mask & libc::IN_IGNORED != 0 {
                k.wds.remove(&wd);
            } else {
                // SAFETY: removing our own watch; IN_IGNORED follows.
                unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
            }
            continue;
        }
        if !name.is_empty() {
            let mut p = dir.clone();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            k.forget(&p);
        }
    }
    true
}

/// lstat(2) of `path`, uncached.
pub fn lstat(path: &[u8]) -> Node {
    let Ok(c) = CString::new(path) else {
        return Node::Unknown;
    };
    // SAFETY: a zeroed stat is a valid value; lstat writes into it, and `c` is a
    // valid C string.
    let (r, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::lstat(c.as_ptr(), &mut st), st)
    };
    if r != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Node::Missing,
            Some(libc::ENOTDIR) => Node::NotDir,
            _ => Node::Unknown,
        };
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Node::Dir,
        libc::S_IFLNK => match std::fs::read_link(OsStr::from_bytes(path)) {
            Ok(t) => Node::Symlink(t.into_os_string().into_encoded_bytes()),
            Err(_) => Node::Unknown,
        },
        _ => Node::File,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(p: &std::path::Path) -> Vec<u8> {
        p.as_os_str().as_bytes().to_vec()
    }

    /// What the tracer does at the exit of an unlink or rename: the events so
    /// far are applied, whatever the watcher thread has read.
    fn settled(n: &FsNodes, path: &[u8]) -> bool {
        n.sync();
        !n.known.lock().unwrap().nodes.contains_key(path)
    }

    #[test]
    fn a_remembered_directory_replaced_by_a_symlink_is_seen_as_a_symlink() {
        let td = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(td.path()).unwrap();
        let d = root.join("d");
        std::fs::create_dir(&d).unwrap();
        let n = FsNodes::new();
        // Walk down so that every directory above is watched.
        let mut p = Vec::new();
        for c in b(&d).split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            p.push(b'/');
            p.extend_from_slice(c);
            assert_eq!(n.lstat(&p), Node::Dir);
        }
        assert!(
            n.known.lock().unwrap().nodes.contains_key(&b(&d)),
            "remembered"
        );
        std::fs::remove_dir(&d).unwrap();
        std::os::unix::fs::symlink("/proc/sys", &d).unwrap();
        assert!(settled(&n, &b(&d)), "the delete event was not seen");
        assert_eq!(n.lstat(&b(&d)), Node::Symlink(b"/proc/sys".to_vec()));
    }

    #[test]
    fn a_file_renamed_over_by_a_symlink_is_seen_as_a_symlink() {
        let td = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(td.path()).unwrap();
        let f = root.join("f");
        std::fs::write(&f, "x").unwrap();
        let n = FsNodes::new();
        let mut p = Vec::new();
        for c in b(&root).split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            p.push(b'/');
            p.extend_from_slice(c);
            n.lstat(&p);
        }
        assert_eq!(n.lstat(&b(&f)), Node::File);
        let l = root.join("l");
        std::os::unix::fs::symlink("/proc/sys/vm", &l).unwrap();
        std::fs::rename(&l, &f).unwrap();
        assert!(settled(&n, &b(&f)), "the rename event was not seen");
        assert_eq!(n.lstat(&b(&f)), Node::Symlink(b"/proc/sys/vm".to_vec()));
    }

    #[test]
    fn dropping_the_nodes_ends_the_watcher_thread() {
        let n = FsNodes::new();
        // The thread holds the inotify fd: it is gone once the fd is.
        let fd = Arc::downgrade(n.inotify.as_ref().expect("inotify works here"));
        drop(n);
        let t0 = std::time::Instant::now();
        while fd.upgrade().is_some() && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::yield_now();
        }
        assert!(
            fd.upgrade().is_none(),
            "the watcher thread outlived its FsNodes"
        );
    }
}
