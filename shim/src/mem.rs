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
    /// Per process: the thread whose /proc/TID/mem is open, and the file.
    files: HashMap<i32, (i32, File)>,
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
                if let Some((owner, f)) = self.files.get(&tgid) {
                    match f.read_at(buf, addr) {
                        Ok(n) if n > 0 => return n,
                        // The thread it was opened through may be gone (a leader that
                        // called pthread_exit is a zombie with no memory): try again
                        // through the calling thread.
                        _ if *owner != tid => {}
                        _ => return 0,
                    }
                }
                match File::open(format!("/proc/{tid}/mem")) {
                    Ok(f) => {
                        let n = f.read_at(buf, addr).unwrap_or(0);
                        self.files.insert(tgid, (tid, f));
                        n
                    }
                    Err(_) => 0,
                }
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

    /// Writes `data` at `addr` of thread `tid` (the program's own output buffer,
    /// e.g. readlink's). process_vm_writev natively; where it is missing
    /// (gVisor) PTRACE_POKEDATA a word at a time, the words at both ends read
    /// first so that no byte outside `data` changes. False when any byte could
    /// not be written (EFAULT for the program).
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
            // SAFETY: `local` points into `data`, valid for reads of data.len() bytes;
            // the remote iovec is only interpreted by the kernel in the tracee.
            let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
            if n >= 0 {
                return n as usize == data.len();
            }
        }
        let start = addr & !7;
        let end = (addr + data.len() as u64).div_ceil(8) * 8;
        let mut at = start;
        while at < end {
            let mut word = [0u8; 8];
            let lo = addr.max(at);
            let hi = (addr + data.len() as u64).min(at + 8);
            if lo > at || hi < at + 8 {
                // SAFETY: PEEKDATA of a tracee we have stopped; errors come back as -1 + errno.
                let v = unsafe {
                    *libc::__errno_location() = 0;
                    libc::ptrace(libc::PTRACE_PEEKDATA, tid, at, 0)
                };
                if v == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0) {
                    return false;
                }
                word = v.to_ne_bytes();
            }
            word[(lo - at) as usize..(hi - at) as usize]
                .copy_from_slice(&data[(lo - addr) as usize..(hi - addr) as usize]);
            // SAFETY: POKEDATA of a tracee we have stopped, with a word we built.
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
