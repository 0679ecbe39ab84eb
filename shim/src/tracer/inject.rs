//! Syscalls the tracer runs inside a stopped tracee thread (mmap of the
//! scratch area, moving an fd, adding a filter), and the signals that arrive
//! while it does: each is taken with its siginfo at its delivery stop and
//! delivered again afterwards with that same siginfo.
//!
//! A program's own seccomp filter may refuse a syscall the tracer runs. On
//! Linux the refused syscall still gives its exit stop (with the errno). In
//! gVisor it gives no stop at all: the thread would run on in the program,
//! past the tracer. So the area is mapped by converting the trapped syscall
//! itself at its seccomp stop, each time it traps again (gVisor does not
//! filter a syscall the tracer changed there; Linux does and reports the
//! exit), and later syscalls run from the area's trampoline, `syscall; int3`:
//! a syscall skipped without stops lands on the int3, whose SIGTRAP tells.

use super::{getregs, ptrace_raw, setregs, AreaRef, Tracer, NO_STATUS, SYSCALL_INSN_LEN};
use crate::filter::{FD_TRAP_BASE, FD_TRAP_END};
use crate::scratch::{Area, SLOT_SIZE, TRAMPOLINE};
use libc::user_regs_struct as Regs;
use std::cell::RefCell;
use std::rc::Rc;

/// Outcome of waiting on one thread during an injection.
pub(super) enum Step {
    /// Reached the next syscall stop.
    Syscall,
    /// The injected syscall gave no stop (refused by a filter, in gVisor):
    /// the thread is at the trampoline's int3, with this result.
    Skipped(i64),
    /// The thread is gone; its wait status is returned for the main loop.
    Gone(i32),
}

/// Signals taken during an injection, with their siginfo (None: one the
/// tracer itself re-sent, whose original siginfo is already kept).
pub(super) type Sigs = Vec<(i32, Option<libc::siginfo_t>)>;

/// Is this the siginfo of a signal the tracer sent (tgkill from this process)?
fn sent_by_us(si: &libc::siginfo_t) -> bool {
    // SAFETY: si_pid is valid to read for SI_TKILL, the only code matched.
    si.si_code == libc::SI_TKILL && unsafe { si.si_pid() } == std::process::id() as i32
}

fn siginfo(tid: i32) -> Option<libc::siginfo_t> {
    // SAFETY: zeroed is a valid siginfo_t; GETSIGINFO fills it.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    (ptrace_raw(libc::PTRACE_GETSIGINFO, tid, 0, &mut si as *mut _ as u64) == 0).then_some(si)
}

impl Tracer {
    /// Waits for the next syscall stop of `tid` after a PTRACE_SYSCALL, taking
    /// (and remembering, with their siginfo) signals and passing over seccomp
    /// stops of injected calls.
    pub(super) fn step(&mut self, tid: i32, sigs: &mut Sigs) -> Step {
        self.step_from(tid, sigs, None)
    }

    /// As `step`, for a syscall run from the trampoline at `tramp`.
    fn step_from(&mut self, tid: i32, sigs: &mut Sigs, tramp: Option<u64>) -> Step {
        ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, 0);
        loop {
            let mut st = 0;
            // Any tracee, not just `tid`: when a whole group is killed, the leader's
            // exit is reported only after its other threads have been reaped, so
            // waiting on the leader alone would never return.
            // SAFETY: waiting for any of our tracees.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Step::Gone(NO_STATUS);
            }
            if r != tid {
                self.deferred.push_back((r, st));
                continue;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                return Step::Gone(st);
            }
            let ev = st >> 16;
            let sig = libc::WSTOPSIG(st);
            if ev == 0 && sig == (libc::SIGTRAP | 0x80) {
                return Step::Syscall;
            }
            if let (0, Some(t), true) = (ev, tramp, sig == libc::SIGTRAP || sig == libc::SIGSEGV) {
                if let Some(r) = getregs(tid) {
                    if sig == libc::SIGTRAP && (r.rip == t + 2 || r.rip == t + 3) {
                        return Step::Skipped(r.rax as i64);
                    }
                    if sig == libc::SIGSEGV && r.rip == t {
                        // The trampoline went away under us.
                        return Step::Skipped(-(libc::EFAULT as i64));
                    }
                }
            }
            if ev == 0 {
                // A signal-delivery stop: the signal was dequeued. Keep its
                // siginfo (a sigqueue payload, the sender) to deliver it later;
                // one the tracer re-sent already has its original kept.
                let si = siginfo(tid);
                let ours = si.as_ref().is_some_and(|si| {
                    sent_by_us(si)
                        && self
                            .requeued
                            .get(&tid)
                            .is_some_and(|q| q.iter().any(|o| o.si_signo == sig))
                });
                // SAFETY: zeroed is a valid siginfo_t.
                let si = si.unwrap_or_else(|| unsafe { std::mem::zeroed() });
                sigs.push((sig, (!ours).then_some(si)));
            }
            ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, 0);
        }
    }

    /// Runs syscall `nr` in `tid`, which is at a syscall-exit stop with
    /// registers `at`, from its process's trampoline (or, with no area, from
    /// the syscall instruction just run): steps through enter and exit and
    /// returns the result. Registers are left modified: the caller restores.
    pub(super) fn inject(
        &mut self,
        tid: i32,
        at: &Regs,
        nr: i64,
        a: &[u64],
        sigs: &mut Sigs,
    ) -> Result<i64, i32> {
        let tramp = self.trampoline(tid);
        let mut m = *at;
        m.rip = tramp.unwrap_or(at.rip - SYSCALL_INSN_LEN);
        m.rax = nr as u64;
        m.orig_rax = nr as u64;
        for (i, v) in a.iter().enumerate() {
            super::set_arg(&mut m, i, *v);
        }
        if !setregs(tid, &m) {
            return Err(NO_STATUS);
        }
        for _ in 0..2 {
            match self.step_from(tid, sigs, tramp) {
                Step::Gone(st) => return Err(st),
                Step::Skipped(r) => return Ok(r),
                Step::Syscall => {}
            }
        }
        getregs(tid).map(|r| r.rax as i64).ok_or(NO_STATUS)
    }

    /// The trampoline of `tid`'s process, if its area is there (read back).
    fn trampoline(&mut self, tid: i32) -> Option<u64> {
        let tgid = self.threads.get(&tid).map(|t| t.tgid).unwrap_or(tid);
        let base = self.procs.get(&tgid)?.mm.borrow().scratch.as_ref()?.0;
        if self.reads_back_raw(tgid, tid, base, &TRAMPOLINE) {
            return Some(base);
        }
        self.forget_scratch(tgid, base);
        None
    }

    /// Runs `nr` in place of the trapped syscall `r0` (the thread is at the
    /// exit stop of a syscall run in its place): `r0` runs again from its
    /// instruction and becomes `nr` at its first stop. That is its seccomp
    /// stop in gVisor with the filter (the program's filters allowed it once,
    /// so they do again, and gVisor does not filter the changed syscall), its
    /// enter stop on Linux (which filters the changed syscall, but then gives
    /// its exit stop with the errno) and with no filter. Returns the result.
    pub(super) fn reissue(
        &mut self,
        tid: i32,
        r0: &Regs,
        nr: i64,
        a: &[u64],
        sigs: &mut Sigs,
    ) -> Result<i64, i32> {
        let mut back = *r0;
        back.rip = r0.rip - SYSCALL_INSN_LEN;
        back.rax = r0.orig_rax;
        if !setregs(tid, &back) {
            return Err(NO_STATUS);
        }
        ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, 0);
        // Stops from the conversion to the exit: one from an enter stop.
        let mut stops = 1;
        loop {
            let mut st = 0;
            // SAFETY: waiting for any of our tracees (see step).
            let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(NO_STATUS);
            }
            if r != tid {
                self.deferred.push_back((r, st));
                continue;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                return Err(st);
            }
            let (ev, sig) = (st >> 16, libc::WSTOPSIG(st));
            if ev == libc::PTRACE_EVENT_SECCOMP {
                // gVisor: then its enter stop, then its exit stop.
                stops = if self.facts.enter_stop_after_seccomp {
                    2
                } else {
                    1
                };
                break;
            }
            if ev == 0 && sig == (libc::SIGTRAP | 0x80) {
                break;
            }
            if ev == 0 {
                // SAFETY: zeroed is a valid siginfo_t.
                let si = siginfo(tid).unwrap_or_else(|| unsafe { std::mem::zeroed() });
                sigs.push((sig, Some(si)));
            }
            ptrace_raw(libc::PTRACE_SYSCALL, tid, 0, 0);
        }
        let Some(mut m) = getregs(tid) else {
            return Err(NO_STATUS);
        };
        m.orig_rax = nr as u64;
        for (i, v) in a.iter().enumerate() {
            super::set_arg(&mut m, i, *v);
        }
        if !setregs(tid, &m) {
            return Err(NO_STATUS);
        }
        for _ in 0..stops {
            if let Step::Gone(st) = self.step(tid, sigs) {
                return Err(st);
            }
        }
        getregs(tid).map(|r| r.rax as i64).ok_or(NO_STATUS)
    }

    /// Sends the signals taken during an injection again (tgkill, to the same
    /// thread, once it is resumed: gVisor can leave a signal sent to a thread
    /// in a ptrace stop pending unnoticed), and remembers their siginfo: at
    /// their delivery stop it is put back (PTRACE_SETSIGINFO), so the program
    /// sees the sender's si_code, si_pid and si_value, not the tracer's tgkill.
    pub(super) fn requeue(&mut self, tid: i32, sigs: &[(i32, Option<libc::siginfo_t>)]) {
        for (s, si) in sigs {
            if let Some(si) = si {
                self.requeued.entry(tid).or_default().push_back(*si);
            }
            self.resend.entry(tid).or_default().push(*s);
        }
    }

    /// After `tid` was resumed: sends the signals `requeue` kept for it.
    pub(super) fn resend_signals(&mut self, tid: i32) {
        if let Some(sigs) = self.resend.remove(&tid) {
            let tgid = self.threads.get(&tid).map(|t| t.tgid).unwrap_or(tid);
            for s in sigs {
                // SAFETY: re-sending to our tracee a signal that arrived during an injection.
                unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, s) };
            }
        }
    }

    /// At a signal-delivery stop of `tid` for `sig`: if it is one the tracer
    /// re-sent, give it its original siginfo.
    pub(super) fn restore_siginfo(&mut self, tid: i32, sig: i32) {
        let Some(q) = self.requeued.get_mut(&tid) else {
            return;
        };
        let Some(i) = q.iter().position(|si| si.si_signo == sig) else {
            return;
        };
        let Some(cur) = siginfo(tid) else { return };
        if !sent_by_us(&cur) {
            return;
        }
        let si = q.remove(i).expect("found");
        if q.is_empty() {
            self.requeued.remove(&tid);
        }
        ptrace_raw(libc::PTRACE_SETSIGINFO, tid, 0, &si as *const _ as u64);
    }

    /// With memfd `fd` open in the tracee (at the exit stop of the syscall
    /// that became memfd_create; `r0` the trapped syscall's registers): maps
    /// it here read-write and there read+exec, and closes it there, each by
    /// `reissue`. Ok(Err(ENOMEM)) if either mapping failed.
    pub(super) fn map_memfd(
        &mut self,
        tid: i32,
        r0: &Regs,
        fd: i64,
        sigs: &mut Sigs,
    ) -> Result<Result<(u64, AreaRef), i32>, i32> {
        let mapped = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{tid}/fd/{fd}"))
            .ok()
            .and_then(|f| Area::map(f, self.next_area).ok());
        self.next_area += 1;
        let mut addr: i64 = -1;
        if mapped.is_some() {
            addr = self.reissue(
                tid,
                r0,
                libc::SYS_mmap,
                &[
                    0,
                    crate::scratch::AREA_SIZE as u64,
                    (libc::PROT_READ | libc::PROT_EXEC) as u64,
                    libc::MAP_SHARED as u64,
                    fd as u64,
                    0,
                ],
                sigs,
            )?;
        }
        self.reissue(tid, r0, libc::SYS_close, &[fd as u64], sigs)?;
        Ok(match mapped {
            Some(area) if addr > 0 && (addr as u64) < u64::MAX - 4096 => {
                Ok((addr as u64, Rc::new(RefCell::new(area))))
            }
            _ => Err(libc::ENOMEM),
        })
    }

    /// The scratch area of `tgid`, if it has one (an exit stop is no place to
    /// map one: see the module comment).
    pub(super) fn scratch_at_exit(&mut self, tgid: i32) -> Option<(u64, AreaRef)> {
        self.procs
            .get(&tgid)
            .and_then(|p| p.mm.borrow().scratch.clone())
    }

    /// Adds a seccomp filter to `tid`'s process (all its threads: TSYNC) that
    /// stops the fd syscalls of `fds`, from an exit stop (registers `at`).
    /// Ok(false) if it could not be done (no room: the lineage has its
    /// MAX_FD_FILTERS; no scratch memory; the program's threads in different
    /// filter trees).
    pub(super) fn add_fd_filter(
        &mut self,
        tid: i32,
        tgid: i32,
        at: &Regs,
        fds: &[i32],
        sigs: &mut Sigs,
    ) -> Result<bool, i32> {
        let Some(p) = self.procs.get(&tgid) else {
            return Ok(false);
        };
        if p.filters.borrow().count >= crate::fds::MAX_FD_FILTERS {
            return Ok(false);
        }
        let Ok(prog) = crate::filter::build_for_fds(fds) else {
            return Ok(false);
        };
        let mut bytes = Vec::with_capacity(prog.len() * 8);
        for i in &prog {
            bytes.extend_from_slice(&i.code.to_ne_bytes());
            bytes.push(i.jt);
            bytes.push(i.jf);
            bytes.extend_from_slice(&i.k.to_ne_bytes());
        }
        // The program in the slot's first two pages, struct sock_fprog in the third.
        if bytes.len() > 2 * 4096 {
            return Ok(false);
        }
        let Some((base, area)) = self.scratch_at_exit(tgid) else {
            return Ok(false);
        };
        let Some(slot) = area.borrow_mut().alloc() else {
            return Ok(false);
        };
        let at_slot = base + slot as u64 * SLOT_SIZE as u64;
        area.borrow_mut().put_raw(slot, 0, &bytes);
        let mut fprog = [0u8; 16];
        fprog[0..2].copy_from_slice(&(prog.len() as u16).to_ne_bytes());
        fprog[8..16].copy_from_slice(&at_slot.to_ne_bytes());
        area.borrow_mut().put_raw(slot, 2 * 4096, &fprog);
        // What the kernel will read must be what was placed (see reads_back).
        let placed = self.reads_back_raw(tgid, tid, at_slot, &bytes)
            && self.reads_back_raw(tgid, tid, at_slot + 2 * 4096, &fprog);
        if !placed {
            area.borrow_mut().release(slot);
            self.forget_scratch(tgid, base);
            return Ok(false);
        }
        let set = libc::SECCOMP_SET_MODE_FILTER as u64;
        let fp = at_slot + 2 * 4096;
        let mut r = self.inject(
            tid,
            at,
            libc::SYS_seccomp,
            &[set, libc::SECCOMP_FILTER_FLAG_TSYNC, fp],
            sigs,
        );
        let alone = self.threads.values().filter(|t| t.tgid == tgid).count() == 1;
        if alone && !matches!(r, Ok(0) | Err(_)) {
            // TSYNC refused (its threads in different filter trees); a single
            // thread is all of the process.
            r = self.inject(tid, at, libc::SYS_seccomp, &[set, 0, fp], sigs);
        }
        area.borrow_mut().release(slot);
        if r? != 0 {
            return Ok(false);
        }
        if let Some(p) = self.procs.get(&tgid) {
            let mut f = p.filters.borrow_mut();
            f.fds.extend(fds.iter().copied());
            f.count += 1;
        }
        Ok(true)
    }

    /// At an exit stop: copies fd into the shim's range (F_DUPFD from
    /// FD_TRAP_BASE) and closes the original. Returns the fd the program gets:
    /// the copy, or `fd` itself if the range had no room.
    pub(super) fn move_to_range(
        &mut self,
        tid: i32,
        cur: &Regs,
        fd: i64,
        cloexec: bool,
        sigs: &mut Sigs,
    ) -> Result<i64, i32> {
        let cmd = if cloexec {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        let newfd = self.inject(
            tid,
            cur,
            libc::SYS_fcntl,
            &[fd as u64, cmd as u64, FD_TRAP_BASE],
            sigs,
        )?;
        if newfd >= FD_TRAP_BASE as i64 && newfd < FD_TRAP_END as i64 {
            self.inject(tid, cur, libc::SYS_close, &[fd as u64], sigs)?;
            return Ok(newfd);
        }
        if newfd >= 0 {
            self.inject(tid, cur, libc::SYS_close, &[newfd as u64], sigs)?;
        }
        Ok(fd)
    }

    /// Do `bytes` read back at `addr` of the tracee (no NUL expected)?
    pub(super) fn reads_back_raw(&mut self, tgid: i32, tid: i32, addr: u64, bytes: &[u8]) -> bool {
        let mut b = vec![0u8; bytes.len()];
        self.mem.read(tgid, tid, addr, &mut b) == b.len() && b == bytes
    }
}
