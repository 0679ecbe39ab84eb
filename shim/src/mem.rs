//! Reading tracee memory. Natively process_vm_readv is one syscall with no fd;
//! inside gVisor it fails with ENOSYS and pread on /proc/PID/mem works, so the
//! mode is probed once and a /proc/PID/mem fd is cached per process.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// How tracee memory is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    ProcessVmReadv,
    ProcMem,
}

pub struct Mem {
    pub mode: ReadMode,
    files: HashMap<i32, File>,
}

const PAGE: u64 = 4096;
/// Longest path the kernel accepts, with its NUL.
pub const PATH_MAX: usize = 4096;

impl Mem {
    pub fn new(mode: ReadMode) -> Self {
        Mem {
            mode,
            files: HashMap::new(),
        }
    }

    /// Forget the cached fd of a process (after exec its mm changed; after exit it is gone).
    pub fn forget(&mut self, tgid: i32) {
        self.files.remove(&tgid);
    }

    /// Reads up to buf.len() bytes at addr of process `tgid` (thread `tid`); returns how many.
    pub fn read(&mut self, tgid: i32, tid: i32, addr: u64, buf: &mut [u8]) -> usize {
        match self.mode {
            ReadMode::ProcessVmReadv => {
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                // SAFETY: `local` points into `buf`, which is valid for writes of buf.len() bytes;
                // the remote iovec is only interpreted by the kernel in the tracee's address space.
                let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
                if n < 0 {
                    0
                } else {
                    n as usize
                }
            }
            ReadMode::ProcMem => {
                let f = match self.files.get(&tgid) {
                    Some(f) => f,
                    None => match File::open(format!("/proc/{tid}/mem")) {
                        Ok(f) => self.files.entry(tgid).or_insert(f),
                        Err(_) => return 0,
                    },
                };
                f.read_at(buf, addr).unwrap_or(0)
            }
        }
    }

    /// Reads a NUL-terminated string of at most PATH_MAX bytes. None when the
    /// memory cannot be read or no NUL comes within PATH_MAX (the kernel then
    /// fails the call with EFAULT or ENAMETOOLONG, so the caller passes it through).
    pub fn read_cstr(&mut self, tgid: i32, tid: i32, addr: u64) -> Option<Vec<u8>> {
        if addr == 0 {
            return None;
        }
        let mut out = Vec::new();
        let mut at = addr;
        // The first read stops at the page end: the next page may be unmapped,
        // and most paths are short.
        let mut want = ((PAGE - at % PAGE) as usize).min(256);
        let mut buf = [0u8; 4096];
        while out.len() < PATH_MAX {
            let want_now = want.min(PATH_MAX - out.len());
            let n = self.read(tgid, tid, at, &mut buf[..want_now]);
            if n == 0 {
                return None;
            }
            if let Some(z) = buf[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..z]);
                return Some(out);
            }
            out.extend_from_slice(&buf[..n]);
            at += n as u64;
            want = (PAGE - at % PAGE) as usize;
        }
        None
    }

    /// Writes `data` at addr of thread `tid` (a buffer the tracee handed to a
    /// syscall the engine answers, e.g. getdents). process_vm_writev where it
    /// works; else PTRACE_POKEDATA, a word at a time (gVisor refuses writes to
    /// /proc/PID/mem), which needs `tid` to be in a ptrace stop. Returns false
    /// if any byte could not be written.
    pub fn write(&mut self, tid: i32, addr: u64, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        if self.mode == ReadMode::ProcessVmReadv {
            let local = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let remote = libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: data.len(),
            };
            // SAFETY: `local` points into `data`, valid for reads of data.len() bytes; the
            // remote iovec is only interpreted by the kernel in the tracee's address space.
            let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
            return n == data.len() as isize;
        }
        let mut at = addr & !7;
        let end = addr + data.len() as u64;
        while at < end {
            let mut word = [0u8; 8];
            let (lo, hi) = (addr.max(at), end.min(at + 8));
            if lo > at || hi < at + 8 {
                // A partial word: keep the bytes around it.
                // SAFETY: PEEKDATA returns the word (errno tells errors apart from -1).
                unsafe { *libc::__errno_location() = 0 };
                // SAFETY: PTRACE_PEEKDATA on a stopped tracee takes an address and no buffer.
                let v = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, tid, at, 0) };
                // SAFETY: reading our own errno.
                if v == -1 && unsafe { *libc::__errno_location() } != 0 {
                    return false;
                }
                word = v.to_ne_bytes();
            }
            word[(lo - at) as usize..(hi - at) as usize]
                .copy_from_slice(&data[(lo - addr) as usize..(hi - addr) as usize]);
            // SAFETY: PTRACE_POKEDATA on a stopped tracee takes the word by value.
            if unsafe { libc::ptrace(libc::PTRACE_POKEDATA, tid, at, i64::from_ne_bytes(word)) }
                != 0
            {
                return false;
            }
            at += 8;
        }
        true
    }

    /// Reads a plain value (e.g. struct open_how) at addr.
    pub fn read_bytes<const N: usize>(
        &mut self,
        tgid: i32,
        tid: i32,
        addr: u64,
    ) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        (self.read(tgid, tid, addr, &mut b) == N).then_some(b)
    }
}
