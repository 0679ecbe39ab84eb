//! SIGINT, SIGTERM and SIGHUP sent to k3shim: the run ends as it would
//! without k3shim.
//!
//! - The three are blocked in every thread ([`Interrupt::install`] runs before
//!   any thread is made) and one small thread takes them with sigwaitinfo.
//! - One sent by another process (`kill`) is passed on to CMD; one from the
//!   terminal (Ctrl-C) already reached CMD, which shares k3shim's process group.
//! - Held syscalls are released at once: a held thread sits in a ptrace stop,
//!   where no signal reaches it, so holding on would keep CMD from dying.
//! - Once CMD has ended, what is left of the traced tree (daemons, background
//!   jobs that ignore SIGINT) gets SIGTERM, and SIGKILL [`GRACE`] later; another
//!   signal meanwhile sends SIGKILL at once. Those processes cannot be left
//!   running on their own: their seccomp filter needs k3shim (without a
//!   tracer their path syscalls fail with ENOSYS), and k3shim stays in the
//!   foreground for as long as it traces anything.
//! - When CMD died of the signal k3shim received, k3shim ends by that same
//!   signal ([`die_by`]), as `timeout` and shells do, so a shell loop around
//!   k3shim stops on Ctrl-C.

use crate::holds::Release;
use crate::timeline::Timeline;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// From SIGTERM to SIGKILL for what is left of the traced tree once CMD has
/// ended after k3shim was interrupted.
pub const GRACE: Duration = Duration::from_secs(2);

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The shared state of one run's interruption; clones share it.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

struct Inner {
    /// The first of SIGINT/SIGTERM/SIGHUP k3shim got (0: none).
    received: AtomicI32,
    /// CMD's pid once launched (0 before).
    root: AtomicI32,
    root_gone: AtomicBool,
    /// SIGTERM went to what is left of the tree.
    ending: AtomicBool,
    waker: OnceLock<shim::Waker>,
    release: Release,
    timeline: Timeline,
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

impl Interrupt {
    /// Blocks the three signals in this thread (and so in every thread made
    /// later; CMD gets an empty mask before exec) and starts the thread that
    /// takes them. Call before any other thread exists.
    pub fn install(timeline: Timeline, release: Release) -> Interrupt {
        let it = Interrupt {
            inner: Arc::new(Inner {
                received: AtomicI32::new(0),
                root: AtomicI32::new(0),
                root_gone: AtomicBool::new(false),
                ending: AtomicBool::new(false),
                waker: OnceLock::new(),
                release,
                timeline,
            }),
        };
        let set = sigset();
        // SAFETY: changing this thread's signal mask with a set we built.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        let me = it.clone();
        // A small stack: this thread only waits (gVisor counts a whole stack as resident).
        let _ = std::thread::Builder::new()
            .name("k3shim-signals".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                // SAFETY: zeroed is a valid siginfo_t; sigwaitinfo fills it.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: waiting for signals that are blocked in every thread.
                let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
                if sig > 0 {
                    me.on_signal(sig, &info);
                }
            });
        it
    }

    /// CMD runs as `root`; `waker` reaches the tracer.
    pub fn launched(&self, root: i32, waker: shim::Waker) {
        let _ = self.inner.waker.set(waker);
        self.inner.root.store(root, Ordering::SeqCst);
    }

    /// A traced process ended (the policy tells every one; only CMD counts).
    pub fn process_exited(&self, pid: i32) {
        if pid != self.inner.root.load(Ordering::SeqCst) {
            return;
        }
        self.inner.root_gone.store(true, Ordering::SeqCst);
        if self.received().is_some() {
            self.end_tree();
        }
    }

    /// The signal k3shim got, if any (the first of several).
    pub fn received(&self) -> Option<i32> {
        match self.inner.received.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    fn on_signal(&self, sig: i32, info: &libc::siginfo_t) {
        // Whether the tree was being ended before this signal came (CMD may
        // die of it, and start that, while this runs).
        let ending = self.inner.ending.load(Ordering::SeqCst);
        let _ = self
            .inner
            .received
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let from_process = matches!(
            info.si_code,
            libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL
        );
        let root = self.inner.root.load(Ordering::SeqCst);
        if root == 0 {
            // Nothing launched yet (a child being started dies with us: EXITKILL).
            die_by(sig);
        }
        let gone = self.inner.root_gone.load(Ordering::SeqCst);
        let mut ev = json!({"signal": sig, "received_by": "k3shim", "from_process": from_process});
        if from_process && !gone {
            // SAFETY: passing the signal on to our own child.
            unsafe { libc::kill(root, sig) };
            ev["forwarded"] = json!(sig);
            ev["to"] = json!(root);
        }
        self.inner.timeline.emit("signal", ev);
        tracing::debug!(signal = sig, from_process, "k3shim got a signal");
        self.inner
            .release
            .open(&format!("k3shim got {}", signal_name(sig)));
        if let Some(w) = self.inner.waker.get() {
            // So that gVisor does not lose the signal for a process in a ptrace stop.
            w.kick();
        }
        if ending {
            // Asked again while the rest of the tree is being ended: at once.
            if let Some(w) = self.inner.waker.get() {
                w.signal_tree(libc::SIGKILL);
            }
        } else if gone {
            self.end_tree();
        }
    }

    /// SIGTERM to what is left of the traced tree, SIGKILL after GRACE.
    fn end_tree(&self) {
        if self.inner.ending.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(w) = self.inner.waker.get().cloned() else {
            return;
        };
        w.signal_tree(libc::SIGTERM);
        let _ = std::thread::Builder::new()
            .name("k3shim-grace".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                std::thread::sleep(GRACE);
                w.signal_tree(libc::SIGKILL);
            });
    }
}

fn sigset() -> libc::sigset_t {
    // SAFETY: building a signal set in a local we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Ends k3shim by `sig`, as CMD ended: default action, signal sent to this
/// very thread and unblocked. Falls back to exit status 128+sig.
pub fn die_by(sig: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: restoring the default action and raising the signal on this
    // thread only (tgkill), then unblocking it here, so no other thread takes it.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut one);
        libc::sigaddset(&mut one, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::_exit(128 + sig)
    }
}
