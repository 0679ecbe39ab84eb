//! Emulated fds: fds opened through a redirect whose writes (a writable
//! entry) or listing (a directory of the fake tree) the engine answers.
//!
//! How their syscalls are seen (README, "How it works", has the measured
//! costs): a single-threaded process keeps the number the kernel gave (the
//! lowest free one) and is *stepped* (stopped at every syscall) while it
//! holds an emulated fd that no filter covers: a shell's `echo 1 > file`
//! costs a few stepped syscalls and nothing once the fd is closed. A
//! process stepped for more than STEP_BUDGET syscalls, or one with several
//! threads (which cannot be switched to stepping safely: a running thread
//! only learns its new mode at its next stop), gets the fd covered by a
//! filter instead: the fd moves into FD_TRAP_BASE..FD_TRAP_END (which the
//! filter installed before exec covers), or a per-fd filter is added (at most
//! MAX_FD_FILTERS in a lineage, as each stops its fd numbers for good). When
//! nothing can cover it, the fd does not stay open: the call fails with
//! EMFILE, never letting a write reach a file unchecked.

use super::inject::Sigs;
use super::{args_of, getregs, set_arg, setregs, ExitWork, NewFd, Tracer};
use crate::event::{Action, SyscallRecord};
use crate::fds::{Kind, Ofd};
use crate::filter::{fd_call, traps, FdCall, FdSet, FD_TRAP_BASE, FD_TRAP_END};
use crate::policy::Policy;
use crate::{sysent, FilterMode};
use libc::user_regs_struct as Regs;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::rc::Rc;
use std::time::Instant;

/// Most bytes one emulated write, sendfile or splice takes (procfs handlers
/// read at most a page of it anyway).
const MAX_WRITE: usize = 1 << 20;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: u64 = 1024;
use crate::filter::FD_FILTER_BLOCK as FILTER_BLOCK;

fn is_restart(rax: u64) -> bool {
    (-516..=-512).contains(&(rax as i64))
}

impl Tracer {
    /// In Paths mode, does `tgid` hold an emulated fd that no filter stops?
    /// Then every thread of it is stepped.
    pub(super) fn stepped(&self, tgid: i32) -> bool {
        if self.mode != FilterMode::Paths {
            return false;
        }
        let Some(p) = self.procs.get(&tgid) else {
            return false;
        };
        let t = p.fds.borrow();
        if t.fds.is_empty() {
            return false;
        }
        let f = p.filters.borrow();
        t.fds
            .keys()
            .any(|&fd| !FdSet::Range.contains(fd as u64) && !f.fds.contains(&fd))
    }

    /// The emulated fds of `tgid` no filter stops.
    fn uncovered(&self, tgid: i32) -> Vec<i32> {
        let Some(p) = self.procs.get(&tgid) else {
            return Vec::new();
        };
        let f = p.filters.borrow();
        let mut v: Vec<i32> = p
            .fds
            .borrow()
            .fds
            .keys()
            .copied()
            .filter(|&fd| !FdSet::Range.contains(fd as u64) && !f.fds.contains(&fd))
            .collect();
        v.sort_unstable();
        v
    }

    /// Would a filter of `tgid` stop this fd call (so its seccomp stop handles it)?
    fn filtered(&self, tgid: i32, call: &FdCall, args: &[u64; 6]) -> bool {
        if traps(call, args, FdSet::Range) {
            return true;
        }
        let Some(p) = self.procs.get(&tgid) else {
            return false;
        };
        let l: Vec<i32> = p.filters.borrow().fds.iter().copied().collect();
        !l.is_empty() && traps(call, args, FdSet::List(&l))
    }

    /// May `tid`'s process be stepped: it is its only thread, and its fd table
    /// is its own (every thread that can touch the fds is stopped now).
    fn can_step(&self, tgid: i32, tid: i32) -> bool {
        self.mode == FilterMode::Paths
            && self
                .threads
                .iter()
                .all(|(k, t)| t.tgid != tgid || *k == tid)
            && self
                .procs
                .get(&tgid)
                .map(|p| Rc::strong_count(&p.fds) == 1)
                .unwrap_or(false)
    }

    fn emulated(&self, tgid: i32, fd: u64) -> Option<Rc<Ofd>> {
        let p = self.procs.get(&tgid)?;
        let o = p.fds.borrow().fds.get(&(fd as i32)).cloned();
        o
    }

    fn untrack(&mut self, tgid: i32, fd: i32) {
        if let Some(p) = self.procs.get(&tgid) {
            p.fds.borrow_mut().fds.remove(&fd);
        }
    }

    fn track(&mut self, tgid: i32, fd: i32, o: Rc<Ofd>) {
        let was = self.stepped(tgid);
        if let Some(p) = self.procs.get(&tgid) {
            p.fds.borrow_mut().fds.insert(fd, o);
        }
        if !was && self.stepped(tgid) {
            if let Some(p) = self.procs.get_mut(&tgid) {
                p.step_left = super::STEP_BUDGET;
                p.convert = false;
            }
        }
    }

    /// Is the tracee's `fd` still open on the file `o` was opened on? If not
    /// (it ended in a way the tracer did not see), it is forgotten, and the
    /// call goes to the kernel as the plain fd it now is.
    fn still_open(&mut self, tgid: i32, fd: i32, o: &Ofd) -> bool {
        if crate::fds::ident(tgid, fd) == Some(o.ident) {
            return true;
        }
        self.untrack(tgid, fd);
        false
    }

    /// At a stepped thread's syscall-enter stop: handles an fd call on an
    /// emulated fd that no filter stops; counts down the step budget.
    pub(super) fn on_step_entry(&mut self, tid: i32, tgid: i32, policy: &mut dyn Policy) {
        let Some(regs) = getregs(tid) else { return };
        let nr = regs.orig_rax as i64;
        let args = args_of(&regs);
        if let Some(call) = fd_call(nr) {
            if !self.filtered(tgid, call, &args) {
                let mut work = ExitWork::new(false, self.report.then(Instant::now));
                work.rec = self.record(tid, tgid, nr);
                if self.on_fd_call(tid, tgid, call, &regs, &mut work, policy) {
                    return;
                }
            }
        }
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.step_left = p.step_left.saturating_sub(1);
            if p.step_left == 0 && !p.step_only {
                p.convert = true;
            }
        }
        self.resume(tid, 0);
    }

    /// At a stepped thread's syscall-exit stop: when the step budget ran out,
    /// covers the process's emulated fds with a per-fd filter instead.
    pub(super) fn on_step_exit(&mut self, tid: i32, tgid: i32, policy: &mut dyn Policy) {
        let convert = self.procs.get(&tgid).map(|p| p.convert).unwrap_or(false);
        if convert {
            if let Some(cur) = getregs(tid).filter(|r| !is_restart(r.rax)) {
                if let Some(p) = self.procs.get_mut(&tgid) {
                    p.convert = false;
                }
                let fds = self.uncovered(tgid);
                let mut sigs = Sigs::new();
                let done = if fds.is_empty() {
                    Ok(true)
                } else {
                    self.add_fd_filter(tid, tgid, &cur, &fds, &mut sigs)
                };
                match done {
                    Ok(ok) => {
                        if !ok {
                            if let Some(p) = self.procs.get_mut(&tgid) {
                                p.step_only = true;
                            }
                        }
                        setregs(tid, &cur);
                        self.requeue(tid, &sigs);
                    }
                    Err(st) => return self.injection_failed(tid, st, policy),
                }
            }
        }
        self.resume(tid, 0);
    }

    /// A trace record of a syscall passed as it is (filled in as it goes), when reporting.
    pub(super) fn record(&mut self, tid: i32, tgid: i32, nr: i64) -> Option<SyscallRecord> {
        self.report.then(|| SyscallRecord {
            pid: tgid,
            tid,
            comm: self.comm(tid),
            name: sysent::name(nr),
            args: String::new(),
            path: None,
            action: Action::Passed,
            backing: None,
            ret: 0,
            dur_us: 0,
        })
    }

    /// An fd syscall at its entry (seccomp stop, or a stepped thread's enter
    /// stop). Returns true when handled (the thread was resumed or left for
    /// the exit stop); false: the caller lets it run untouched.
    pub(super) fn on_fd_call(
        &mut self,
        tid: i32,
        tgid: i32,
        call: &FdCall,
        regs: &Regs,
        work: &mut ExitWork,
        policy: &mut dyn Policy,
    ) -> bool {
        let args = args_of(regs);
        let nr = call.sysno.id() as i64;
        let fd = args[0] as i32;
        if let Some(r) = work.rec.as_mut() {
            r.args = crate::decode::raw_args(&args);
        }
        let ret: i64 = match nr {
            libc::SYS_write
            | libc::SYS_pwrite64
            | libc::SYS_writev
            | libc::SYS_pwritev
            | libc::SYS_pwritev2 => {
                let Some(o) = self.emulated(tgid, args[0]) else {
                    return false;
                };
                let Kind::Write { token } = o.kind else {
                    return false;
                };
                if !self.still_open(tgid, fd, &o) {
                    return false;
                }
                self.emulated_write(tid, tgid, nr, &args, &o, token, policy)
            }
            // procfs ignores truncation: the next write replaces the value anyway.
            libc::SYS_ftruncate => match self.emulated(tgid, args[0]) {
                Some(o) if matches!(o.kind, Kind::Write { .. }) => 0,
                _ => return false,
            },
            libc::SYS_close => {
                self.untrack(tgid, fd);
                return false;
            }
            libc::SYS_close_range => {
                let (lo, hi) = (args[0] as u32, args[1] as u32);
                let meets = self.procs.get(&tgid).is_some_and(|p| {
                    p.fds
                        .borrow()
                        .fds
                        .keys()
                        .any(|&f| (lo..=hi).contains(&(f as u32)))
                });
                if !meets {
                    return false;
                }
                work.close_range = Some((lo, hi, args[2] as u32));
                return self.run_to_exit(tid, work, policy);
            }
            libc::SYS_dup | libc::SYS_fcntl => {
                let Some(o) = self.emulated(tgid, args[0]) else {
                    return false;
                };
                let (cmd, min) = if nr == libc::SYS_dup {
                    (libc::F_DUPFD, 0)
                } else {
                    (args[1] as i32, args[2])
                };
                work.dup_of = Some(o);
                if self.mode == FilterMode::Paths && !self.can_step(tgid, tid) && min < FD_TRAP_BASE
                {
                    // Several threads: the copy goes into the fd range, which the
                    // filter covers (the original lowest fd is the fallback).
                    let mut m = *regs;
                    m.orig_rax = libc::SYS_fcntl as u64;
                    set_arg(&mut m, 1, cmd as u64);
                    set_arg(&mut m, 2, FD_TRAP_BASE);
                    if !setregs(tid, &m) {
                        return true;
                    }
                    work.saved = Some(*regs);
                    work.dup_fallback = Some((fd, cmd, min));
                }
                return self.run_to_exit(tid, work, policy);
            }
            libc::SYS_dup2 | libc::SYS_dup3 => {
                let new = args[1] as i32;
                if new != fd {
                    if let Some(o) = self.emulated(tgid, args[1]) {
                        let _ = o;
                        work.replaces = Some(new);
                    }
                    work.dup_of = self.emulated(tgid, args[0]);
                }
                if work.replaces.is_none() && work.dup_of.is_none() {
                    return false;
                }
                return self.run_to_exit(tid, work, policy);
            }
            libc::SYS_getdents | libc::SYS_getdents64 => {
                let Some(o) = self.emulated(tgid, args[0]) else {
                    return false;
                };
                if !matches!(o.kind, Kind::Dir { .. }) || !self.still_open(tgid, fd, &o) {
                    return false;
                }
                self.emulated_listing(tid, nr, &args, &o, policy)
            }
            libc::SYS_lseek => {
                let Some(o) = self.emulated(tgid, args[0]) else {
                    return false;
                };
                let cur = o.pos.get() as i64;
                let off = args[1] as i64;
                let new = match args[2] as i32 {
                    libc::SEEK_SET => Some(off),
                    libc::SEEK_CUR => cur.checked_add(off),
                    // procfs files and directories have size 0.
                    libc::SEEK_END => Some(off),
                    _ => None,
                };
                match new {
                    Some(n) if n >= 0 => {
                        o.pos.set(n as u64);
                        n
                    }
                    _ => -(libc::EINVAL as i64),
                }
            }
            libc::SYS_sendfile | libc::SYS_splice | libc::SYS_copy_file_range => {
                let out = if nr == libc::SYS_sendfile {
                    args[0]
                } else {
                    args[2]
                };
                let Some(o) = self.emulated(tgid, out) else {
                    return false;
                };
                let Kind::Write { token } = o.kind else {
                    return false;
                };
                if !self.still_open(tgid, out as i32, &o) {
                    return false;
                }
                match nr {
                    // Into procfs from another file system: the kernel refuses.
                    libc::SYS_copy_file_range => -(libc::EXDEV as i64),
                    libc::SYS_sendfile => {
                        match self.emulated_sendfile(tid, tgid, regs, &o, token, work, policy) {
                            Some(r) => r,
                            None => return true,
                        }
                    }
                    _ => match self.emulated_splice(tid, tgid, regs, &o, token, work, policy) {
                        Some(r) => r,
                        None => return true,
                    },
                }
            }
            _ => return false,
        };
        if let Some(r) = work.rec.as_mut() {
            r.action = Action::Emulated;
        }
        let w = std::mem::replace(work, ExitWork::new(false, None));
        self.emulate(tid, *regs, w, ret, policy);
        true
    }

    /// Lets the call run, with its exit stop taken for `work`.
    fn run_to_exit(&mut self, tid: i32, work: &mut ExitWork, policy: &mut dyn Policy) -> bool {
        let w = std::mem::replace(work, ExitWork::new(false, None));
        self.finish_entry(tid, w, Some(()), policy);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn emulated_write(
        &mut self,
        tid: i32,
        tgid: i32,
        nr: i64,
        args: &[u64; 6],
        o: &Ofd,
        token: u64,
        policy: &mut dyn Policy,
    ) -> i64 {
        let data = if matches!(nr, libc::SYS_write | libc::SYS_pwrite64) {
            let len = (args[2] as usize).min(MAX_WRITE);
            let mut buf = vec![0u8; len];
            if self.mem.read(tgid, tid, args[1], &mut buf) < len {
                return -(libc::EFAULT as i64);
            }
            buf
        } else {
            let cnt = args[2];
            if cnt > MAX_IOV {
                return -(libc::EINVAL as i64);
            }
            let mut data = Vec::new();
            for i in 0..cnt {
                let Some(iov) = self.mem.read_bytes::<16>(tgid, tid, args[1] + 16 * i) else {
                    return -(libc::EFAULT as i64);
                };
                let base = u64::from_ne_bytes(iov[0..8].try_into().expect("8"));
                let len = u64::from_ne_bytes(iov[8..16].try_into().expect("8"));
                if len as i64 > isize::MAX as i64 || len as i64 <= -1 {
                    return -(libc::EINVAL as i64);
                }
                let len = (len as usize).min(MAX_WRITE.saturating_sub(data.len()));
                let mut b = vec![0u8; len];
                if self.mem.read(tgid, tid, base, &mut b) < len {
                    return -(libc::EFAULT as i64);
                }
                data.extend_from_slice(&b);
            }
            data
        };
        let positional = match nr {
            libc::SYS_write | libc::SYS_writev => false,
            libc::SYS_pwrite64 => true,
            _ => args[3] as i64 != -1,
        };
        let pos = if positional { args[3] } else { o.pos.get() };
        self.fake_write(o, token, tgid, pos, &data, !positional, policy)
    }

    #[allow(clippy::too_many_arguments)]
    fn fake_write(
        &mut self,
        o: &Ofd,
        token: u64,
        pid: i32,
        pos: u64,
        data: &[u8],
        advance: bool,
        policy: &mut dyn Policy,
    ) -> i64 {
        match policy.on_write(token, pid, pos, data) {
            Ok(n) => {
                if advance {
                    o.pos.set(o.pos.get() + n as u64);
                }
                n as i64
            }
            Err(e) => -(e as i64),
        }
    }

    /// getdents/getdents64 on a directory of the fake tree: `.`, `..`, then
    /// the entries by name, written into the program's buffer.
    fn emulated_listing(
        &mut self,
        tid: i32,
        nr: i64,
        args: &[u64; 6],
        o: &Ofd,
        policy: &mut dyn Policy,
    ) -> i64 {
        let Kind::Dir { dir, entries } = &o.kind else {
            return -(libc::ENOTDIR as i64);
        };
        let pos = o.pos.get();
        if pos == 0 || entries.borrow().is_none() {
            // `..` as the program sees it: the parent's backing directory
            // within the fake tree, the real parent above it (/proc for /proc/sys).
            let parent = dir.join("..");
            let up = match dir.parent().and_then(|p| policy.untranslate(p)) {
                Some(_) => parent,
                None => policy
                    .untranslate(dir)
                    .and_then(|g| g.parent().map(|p| p.to_path_buf()))
                    .unwrap_or(parent),
            };
            let pino = std::os::unix::fs::MetadataExt::ino(&match std::fs::metadata(&up) {
                Ok(m) => m,
                Err(_) => return -(libc::ENOENT as i64),
            });
            match crate::dirents::list(dir, pino) {
                Ok(l) => *entries.borrow_mut() = Some(Rc::new(l)),
                Err(e) => return -(e.raw_os_error().unwrap_or(libc::EIO) as i64),
            }
        }
        let list = entries.borrow().clone().expect("listed");
        let flavour = if nr == libc::SYS_getdents64 {
            crate::dirents::Flavour::Dirent64
        } else {
            crate::dirents::Flavour::Dirent
        };
        match crate::dirents::fill(&list, pos, args[2] as u32 as usize, flavour) {
            Ok((bytes, next)) => {
                if !self.mem.write(tid, args[1], &bytes) {
                    return -(libc::EFAULT as i64);
                }
                o.pos.set(next);
                bytes.len() as i64
            }
            Err(e) => -(e as i64),
        }
    }

    /// sendfile(out, in, offp, count) into a writable entry: the data is read
    /// from `in` (a regular file) by the tracer, at *offp or at in's position,
    /// and written as write(2) would. On success in's position (or *offp)
    /// moves by what was taken: the call becomes lseek(in, n, SEEK_CUR).
    /// None when the call was left to run (the exit stop has the work).
    #[allow(clippy::too_many_arguments)]
    fn emulated_sendfile(
        &mut self,
        tid: i32,
        tgid: i32,
        regs: &Regs,
        o: &Ofd,
        token: u64,
        work: &mut ExitWork,
        policy: &mut dyn Policy,
    ) -> Option<i64> {
        let args = args_of(regs);
        let (infd, offp) = (args[1] as i32, args[2]);
        let count = (args[3] as usize).min(MAX_WRITE);
        let Ok(f) = std::fs::File::open(format!("/proc/{tgid}/fd/{infd}")) else {
            return Some(-(libc::EBADF as i64));
        };
        if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
            // Only regular files are taken here (see README).
            return Some(-(libc::EINVAL as i64));
        }
        let pos = if offp != 0 {
            match self.mem.read_bytes::<8>(tgid, tid, offp) {
                Some(b) => u64::from_ne_bytes(b),
                None => return Some(-(libc::EFAULT as i64)),
            }
        } else {
            match fd_pos(tgid, infd) {
                Some(p) => p,
                None => {
                    // No position in fdinfo (gVisor): the call becomes
                    // lseek(in, 0, SEEK_CUR), and the copy is made at its exit.
                    let mut m = *regs;
                    m.orig_rax = libc::SYS_lseek as u64;
                    m.rdi = infd as u64;
                    m.rsi = 0;
                    m.rdx = libc::SEEK_CUR as u64;
                    if setregs(tid, &m) {
                        let mut w = std::mem::replace(work, ExitWork::new(false, None));
                        w.saved = Some(*regs);
                        let ofd = self.emulated(tgid, args[0]).expect("checked by the caller");
                        w.sendfile = Some((ofd, token, infd, count));
                        if let Some(rec) = w.rec.as_mut() {
                            rec.action = Action::Emulated;
                        }
                        self.finish_entry(tid, w, Some(()), policy);
                    }
                    return None;
                }
            }
        };
        let r = self.copy_from_file(&f, pos, count, o, token, tgid, policy);
        if r <= 0 {
            return Some(r);
        }
        if offp != 0 {
            if !self.mem.write(tid, offp, &(pos + r as u64).to_ne_bytes()) {
                return Some(-(libc::EFAULT as i64));
            }
            return Some(r);
        }
        // Move in's position by what was taken: the call becomes lseek.
        let mut m = *regs;
        m.orig_rax = libc::SYS_lseek as u64;
        m.rdi = infd as u64;
        m.rsi = r as u64;
        m.rdx = libc::SEEK_CUR as u64;
        if setregs(tid, &m) {
            let mut w = std::mem::replace(work, ExitWork::new(false, None));
            w.saved = Some(*regs);
            w.set_ret = Some(r);
            if let Some(rec) = w.rec.as_mut() {
                rec.action = Action::Emulated;
            }
            self.finish_entry(tid, w, Some(()), policy);
        }
        None
    }

    /// Reads up to `count` bytes of `f` at `pos` and writes them as write(2)
    /// on `o` would; returns what the write returns (0 at the end of `f`).
    #[allow(clippy::too_many_arguments)]
    fn copy_from_file(
        &mut self,
        f: &std::fs::File,
        pos: u64,
        count: usize,
        o: &Ofd,
        token: u64,
        tgid: i32,
        policy: &mut dyn Policy,
    ) -> i64 {
        let mut buf = vec![0u8; count];
        let n = f.read_at(&mut buf, pos).unwrap_or(0);
        if n == 0 {
            return 0;
        }
        self.fake_write(o, token, tgid, o.pos.get(), &buf[..n], true, policy)
    }

    /// splice(in, off_in, out, off_out, len, flags) into a writable entry:
    /// `in` must be a pipe. Its data is looked at without being taken (tee),
    /// written as write(2) would, and only what was accepted is taken from the
    /// pipe (a refused value stays in it, as with procfs). An empty pipe that
    /// would block is waited on in the kernel: the call becomes a read of
    /// one byte into no buffer, which blocks until data comes and then fails
    /// (EFAULT) without taking it; the splice then runs again.
    #[allow(clippy::too_many_arguments)]
    fn emulated_splice(
        &mut self,
        tid: i32,
        tgid: i32,
        regs: &Regs,
        o: &Ofd,
        token: u64,
        work: &mut ExitWork,
        policy: &mut dyn Policy,
    ) -> Option<i64> {
        let args = args_of(regs);
        let (infd, off_in, off_out) = (args[0] as i32, args[1], args[3]);
        let len = (args[4] as usize).min(MAX_WRITE);
        let flags = args[5] as u32;
        let Ok(pipe) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/{tgid}/fd/{infd}"))
        else {
            return Some(-(libc::EBADF as i64));
        };
        if !pipe
            .metadata()
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false)
        {
            return Some(-(libc::EINVAL as i64));
        }
        if off_in != 0 {
            return Some(-(libc::ESPIPE as i64));
        }
        let data = match peek_pipe(&pipe, len) {
            Ok(d) => d,
            Err(libc::EAGAIN) => {
                let nonblock = flags & libc::SPLICE_F_NONBLOCK != 0
                    || fd_flags(tgid, infd).is_some_and(|f| f & libc::O_NONBLOCK != 0);
                if nonblock {
                    return Some(-(libc::EAGAIN as i64));
                }
                let mut m = *regs;
                m.orig_rax = libc::SYS_read as u64;
                m.rdi = infd as u64;
                m.rsi = 0;
                m.rdx = 1;
                if setregs(tid, &m) {
                    let mut w = std::mem::replace(work, ExitWork::new(false, None));
                    w.saved = Some(*regs);
                    w.rerun_on_efault = true;
                    w.rec = None;
                    self.finish_entry(tid, w, Some(()), policy);
                }
                return None;
            }
            Err(e) => return Some(-(e as i64)),
        };
        if data.is_empty() {
            return Some(0);
        }
        let pos = if off_out != 0 {
            match self.mem.read_bytes::<8>(tgid, tid, off_out) {
                Some(b) => u64::from_ne_bytes(b),
                None => return Some(-(libc::EFAULT as i64)),
            }
        } else {
            o.pos.get()
        };
        let r = self.fake_write(o, token, tgid, pos, &data, off_out == 0, policy);
        if r > 0 {
            let mut sink = vec![0u8; r as usize];
            let _ = (&pipe).read_exact(&mut sink);
            if off_out != 0
                && !self
                    .mem
                    .write(tid, off_out, &(pos + r as u64).to_ne_bytes())
            {
                return Some(-(libc::EFAULT as i64));
            }
        }
        Some(r)
    }

    /// At the exit stop of a call with fd work: the fd table follows what
    /// happened, and new emulated fds are covered (see the module comment).
    /// Returns the result the program gets.
    pub(super) fn fd_exit(
        &mut self,
        tid: i32,
        tgid: i32,
        w: &mut ExitWork,
        cur: &Regs,
        ret: i64,
        policy: &mut dyn Policy,
    ) -> Result<i64, i32> {
        let mut ret = ret;
        let mut sigs = Sigs::new();
        if w.rerun_on_efault {
            if ret == -(libc::EFAULT as i64) {
                // Data came: run the splice again from its instruction.
                if let Some(s) = w.saved.as_mut() {
                    s.rip -= super::SYSCALL_INSN_LEN;
                    w.set_ret = Some(s.orig_rax as i64);
                }
            }
            return Ok(ret);
        }
        if let Some((o, token, infd, count)) = w.sendfile.take() {
            // ret is in's position (the call was lseek(in, 0, SEEK_CUR)).
            if ret < 0 {
                return Ok(ret);
            }
            let Ok(f) = std::fs::File::open(format!("/proc/{tgid}/fd/{infd}")) else {
                return Ok(-(libc::EBADF as i64));
            };
            let r = self.copy_from_file(&f, ret as u64, count, &o, token, tgid, policy);
            if r > 0 {
                self.inject(
                    tid,
                    cur,
                    libc::SYS_lseek,
                    &[infd as u64, r as u64, libc::SEEK_CUR as u64],
                    &mut sigs,
                )?;
            }
            self.requeue(tid, &sigs);
            return Ok(r);
        }
        if let Some(n) = w.replaces {
            if ret >= 0 {
                self.untrack(tgid, n);
            }
        }
        if let Some((lo, hi, flags)) = w.close_range {
            if ret == 0 {
                if flags & libc::CLOSE_RANGE_UNSHARE != 0 {
                    if let Some(p) = self.procs.get_mut(&tgid) {
                        let copy = p.fds.borrow().clone();
                        p.fds = Rc::new(std::cell::RefCell::new(copy));
                    }
                }
                if flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
                    if let Some(p) = self.procs.get(&tgid) {
                        p.fds
                            .borrow_mut()
                            .fds
                            .retain(|&f, _| !(lo..=hi).contains(&(f as u32)));
                    }
                }
            }
        }
        if let Some(o) = w.dup_of.take() {
            if let Some((old, cmd, min)) = w.dup_fallback {
                let fell_short = ret < 0 || ret as u64 >= FD_TRAP_END;
                if fell_short {
                    // No room in the range (or RLIMIT_NOFILE below it): the
                    // copy goes where the program asked, if a filter can cover it.
                    if ret >= 0 {
                        self.inject(tid, cur, libc::SYS_close, &[ret as u64], &mut sigs)?;
                    }
                    ret = self.inject(
                        tid,
                        cur,
                        libc::SYS_fcntl,
                        &[old as u64, cmd as u64, min],
                        &mut sigs,
                    )?;
                }
            }
            if ret >= 0 {
                ret = self.place_fd(tid, tgid, cur, ret, o, None, &mut sigs)?;
            }
        }
        if let Some((nf, cloexec)) = w.new_fd.take() {
            if ret >= 0 {
                match crate::fds::ident(tgid, ret as i32) {
                    Some(ident) => {
                        let kind = match nf {
                            NewFd::Write { token } => Kind::Write { token },
                            NewFd::Dir { dir } => Kind::Dir {
                                dir,
                                entries: Default::default(),
                            },
                        };
                        let o = Rc::new(Ofd {
                            kind,
                            pos: Default::default(),
                            ident,
                        });
                        ret = self.place_fd(tid, tgid, cur, ret, o, Some(cloexec), &mut sigs)?;
                    }
                    None => {
                        // Closed by another thread already: nothing to follow.
                    }
                }
            }
        }
        self.requeue(tid, &sigs);
        let first = self
            .uncoverable
            .and_then(|pid| self.procs.get_mut(&pid))
            .is_some_and(|p| !std::mem::replace(&mut p.warned, true));
        if let (Some(pid), true) = (self.uncoverable.take(), first) {
            policy.on_event(&crate::event::Event::Warning {
                pid,
                message: "an fd of an emulated entry could not be covered (no room for another per-fd filter): the call that made it failed with EMFILE (said once per process)".into(),
            });
        }
        Ok(ret)
    }

    /// A new emulated fd `n` (from an open, or a copy): keeps it where its
    /// writes are seen. `movable`: an open (with its O_CLOEXEC), whose fd may
    /// move into the range. Returns the fd the program gets, or -EMFILE when
    /// nothing could cover it (it is closed again).
    #[allow(clippy::too_many_arguments)]
    fn place_fd(
        &mut self,
        tid: i32,
        tgid: i32,
        cur: &Regs,
        n: i64,
        o: Rc<Ofd>,
        movable: Option<bool>,
        sigs: &mut Sigs,
    ) -> Result<i64, i32> {
        let covered = self.mode == FilterMode::Everything
            || FdSet::Range.contains(n as u64)
            || self
                .procs
                .get(&tgid)
                .is_some_and(|p| p.filters.borrow().fds.contains(&(n as i32)));
        if covered || self.can_step(tgid, tid) {
            self.track(tgid, n as i32, o);
            return Ok(n);
        }
        if let Some(cloexec) = movable {
            let m = self.move_to_range(tid, cur, n, cloexec, sigs)?;
            if m != n {
                self.track(tgid, m as i32, o);
                return Ok(m);
            }
        }
        // A process that filled the range (or whose RLIMIT_NOFILE is below it)
        // writes many entries at once: its next fds come next to this one, so
        // one filter covers a block of numbers.
        let block: Vec<i32> = (n as i32..n as i32 + FILTER_BLOCK).collect();
        if self.add_fd_filter(tid, tgid, cur, &block, sigs)? {
            self.track(tgid, n as i32, o);
            return Ok(n);
        }
        self.inject(tid, cur, libc::SYS_close, &[n as u64], sigs)?;
        self.uncoverable = Some(tgid);
        Ok(-(libc::EMFILE as i64))
    }
}

/// The file position of the tracee's `fd` (/proc/PID/fdinfo).
fn fd_pos(pid: i32, fd: i32) -> Option<u64> {
    fdinfo(pid, fd, "pos:")
}

/// The open flags of the tracee's `fd` (/proc/PID/fdinfo, octal).
fn fd_flags(pid: i32, fd: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    i32::from_str_radix(v, 8).ok()
}

fn fdinfo(pid: i32, fd: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// Up to `len` bytes waiting in `pipe`, left in it (tee into a pipe of ours).
/// Err(EAGAIN) when it is empty and has writers; Ok(empty) at its end.
fn peek_pipe(pipe: &std::fs::File, len: usize) -> Result<Vec<u8>, i32> {
    use std::os::fd::AsRawFd;
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(libc::ENOMEM);
    }
    // SAFETY: both fds are ours from here on.
    let (r, w) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(p[0]),
            std::fs::File::from_raw_fd(p[1]),
        )
    };
    // SAFETY: tee between two pipe fds we hold; no memory is passed.
    let n = unsafe {
        libc::tee(
            pipe.as_raw_fd(),
            w.as_raw_fd(),
            len.min(65536),
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    let mut out = vec![0u8; n as usize];
    (&r).read_exact(&mut out).map_err(|_| libc::EIO)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn restart_codes_are_recognized() {
        assert!(super::is_restart((-512i64) as u64) && super::is_restart((-516i64) as u64));
        assert!(!super::is_restart((-4i64) as u64) && !super::is_restart(0));
    }
}
