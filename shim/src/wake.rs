//! Waking the tracer from another thread (the gate, hooks, k3shim's signal
//! thread) without polling.
//!
//! The tracer sleeps in `waitpid(-1, __WALL)`, and only a change of state of
//! one of the process's children ends that wait. So a wake-up is one: a child
//! that exits at once (`clone(CLONE_VM | CLONE_VFORK)`, exit signal 0, so
//! nobody gets a SIGCHLD). Unlike a signal sent to the tracer thread, it cannot
//! be lost between the tracer's last look at its requests and its next
//! `waitpid`: the exited child waits as a zombie until the tracer reaps it
//! (and ignores it: it is no tracee). Measured here (clone, exit, reap):
//! 25-45 us natively, 130-160 us inside gVisor; it happens a handful of
//! times per run (the gate opens, hooks end, a signal comes).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Shared {
    /// The tracer no longer waits: a wake-up would leave an unreaped child.
    closed: AtomicBool,
    /// A signal to send to every traced process at the tracer's next wake-up (0: none).
    signal: AtomicI32,
    /// Interrupt every tracee once (see [`Waker::kick`]).
    kick: AtomicBool,
}

/// A handle that wakes the tracer; clones share it. Send + Sync.
#[derive(Clone, Default)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

const WAKE_STACK: usize = 16 * 1024;

extern "C" fn exit_at_once(_: *mut libc::c_void) -> libc::c_int {
    0
}

impl Waker {
    pub(crate) fn new() -> Waker {
        Waker::default()
    }

    /// Makes the tracer look at the policy (`gate_open`) and at requests now.
    /// Cheap enough to call on every event that may release holds.
    pub fn wake(&self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        let mut stack = vec![0u8; WAKE_STACK];
        // SAFETY: the child shares our memory (CLONE_VM) but runs only
        // `exit_at_once` on its own stack, with every signal blocked (the mask
        // is inherited), and we are suspended until it has exited
        // (CLONE_VFORK), so the stack outlives it. Exit signal 0: no SIGCHLD;
        // __WALL waiters (the tracer) still see it.
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let top = stack.as_mut_ptr().add(WAKE_STACK - 64);
            let top = (top as usize & !15) as *mut libc::c_void;
            let pid = libc::clone(
                exit_at_once,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK,
                std::ptr::null_mut(),
            );
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            pid
        };
        drop(stack);
        if pid > 0 && self.shared.closed.load(Ordering::Acquire) {
            // The tracer stopped waiting meanwhile: reap it ourselves (ECHILD if it did).
            // SAFETY: waiting for our own, already exited child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        }
    }

    /// Asks the tracer to send `sig` to every process it traces, and wakes it.
    /// A later request replaces one not yet carried out (SIGKILL after SIGTERM).
    pub fn signal_tree(&self, sig: i32) {
        self.shared.signal.store(sig, Ordering::Release);
        self.wake();
    }

    /// Asks the tracer to interrupt every tracee once (PTRACE_INTERRUPT; each
    /// stops and is resumed at once), and wakes it. For signals sent to the
    /// tree from outside (Ctrl-C, `kill`): gVisor (runsc 20221219) loses a
    /// signal sent to a process while its thread sits in a ptrace stop (10 of
    /// 10 with a minimal C tracer; Linux looks at pending signals again when
    /// a ptrace stop ends), and an interrupt makes it look again.
    pub fn kick(&self) {
        self.shared.kick.store(true, Ordering::Release);
        self.wake();
    }

    /// The tracer's side: whether a kick was asked for since the last call.
    pub(crate) fn take_kick(&self) -> bool {
        self.shared.kick.swap(false, Ordering::AcqRel)
    }

    /// The tracer's side: the signal asked for since the last call, if any.
    pub(crate) fn take_signal(&self) -> Option<i32> {
        match self.shared.signal.swap(0, Ordering::AcqRel) {
            0 => None,
            s => Some(s),
        }
    }

    /// The tracer's side: it waits no more (its run ended).
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}
