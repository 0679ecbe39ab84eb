//! The first read of each view file, for the timeline: reads no longer stop,
//! so inotify on the view (IN_ACCESS, and IN_CLOSE_NOWRITE for reads that
//! returned nothing) is what sees them. No pid: inotify does not say who.

use crate::timeline::Timeline;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Watch {
    stop: Arc<AtomicBool>,
    /// Written to at stop: wakes the thread's poll.
    wake: OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    pub fn start(tree: &Path, timeline: Timeline) -> std::io::Result<Watch> {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut dirs: HashMap<i32, String> = HashMap::new();
        let mut stack = vec![(tree.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
            let mask = libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE | libc::IN_ONLYDIR;
            // SAFETY: a NUL-terminated path and our inotify fd.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            if wd >= 0 {
                dirs.insert(wd, rel.clone());
            }
            for e in std::fs::read_dir(&dir)?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let r = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), r));
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let mut p = [0i32; 2];
        // SAFETY: pipe2 fills the array we own.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (r, wake) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let thread = std::thread::Builder::new()
            .name("k3shim-reads".into())
            .stack_size(128 * 1024)
            .spawn(move || run(fd, r, dirs, timeline, s))?;
        Ok(Watch { stop, wake, thread })
    }

    /// Reports what is pending, then ends the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: one byte from a static buffer to our own pipe.
        unsafe { libc::write(self.wake.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        let _ = self.thread.join();
    }
}

fn run(
    fd: OwnedFd,
    wake: OwnedFd,
    dirs: HashMap<i32, String>,
    timeline: Timeline,
    stop: Arc<AtomicBool>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let last = stop.load(Ordering::SeqCst);
        let ev = |fd: &OwnedFd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut p = [ev(&fd), ev(&wake)];
        // SAFETY: two pollfds we own.
        unsafe { libc::poll(p.as_mut_ptr(), 2, if last { 0 } else { -1 }) };
        loop {
            // SAFETY: reading into our own buffer from our own fd.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the offset.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_bytes = &buf[off + head..off + head + ev.len as usize];
                off += head + ev.len as usize;
                let name_end = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                let name = String::from_utf8_lossy(&name_bytes[..name_end]);
                if name.is_empty()
                    || name.starts_with(".k3shim-new-")
                    || ev.mask & libc::IN_ISDIR != 0
                {
                    continue;
                }
                let Some(dir) = dirs.get(&ev.wd) else {
                    continue;
                };
                let path = if dir.is_empty() {
                    format!("/proc/sys/{name}")
                } else {
                    format!("/proc/sys/{dir}/{name}")
                };
                if seen.insert(path.clone()) {
                    timeline.emit(
                        "redirect",
                        json!({"syscall": "read", "path": path, "backing": "view", "via": "inotify"}),
                    );
                }
            }
        }
        if last {
            return;
        }
    }
}
