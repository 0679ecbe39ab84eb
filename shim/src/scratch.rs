//! Memory the shim owns inside the tracee: a memfd mapped read-only by the
//! tracee and read-write by the tracer. A replacement path is placed with a
//! plain memcpy in the tracer (no syscall), in a slot held from the syscall's
//! entry to its exit, so a thread never writes into the program's own strings
//! or below a goroutine's stack pointer.

use std::fs::File;
use std::os::fd::AsRawFd;

/// One slot: two paths and a small struct (open_how), each in its own page.
pub const SLOT_SIZE: usize = 3 * 4096;
/// Slots per area. Slot 0 holds the trampoline; the others, one each, the
/// syscalls in flight with a rewritten path (at most SLOTS - 1).
pub const SLOTS: usize = 512;
/// `syscall; int3`, at the start of every area: injected syscalls run from
/// here (see tracer::inject). The tracee maps the area read+exec.
pub const TRAMPOLINE: [u8; 3] = [0x0f, 0x05, 0xcc];
pub const AREA_SIZE: usize = SLOT_SIZE * SLOTS;

/// What the tracer knows of one address space (shared by processes made with
/// CLONE_VM: vfork and posix_spawn children map into their parent's memory).
#[derive(Default, Clone)]
pub struct AddrSpace {
    /// Where the scratch area is mapped here, if it is (as far as the tracer
    /// knows: the program may have unmapped or replaced it; every use reads
    /// back what it placed).
    pub scratch: Option<(u64, std::rc::Rc<std::cell::RefCell<Area>>)>,
}

/// The tracer's side of one memfd, shared by every process that inherited the mapping.
pub struct Area {
    ptr: *mut u8,
    _file: File,
    free: Vec<u32>,
    /// Stable id, for logs.
    pub id: u64,
}

impl Area {
    /// Maps `file` (a memfd of the tracee, opened through /proc/PID/fd/N) read-write.
    pub fn map(file: File, id: u64) -> std::io::Result<Area> {
        file.set_len(AREA_SIZE as u64)?;
        // SAFETY: a fresh shared mapping of a file we hold open, of the length we just set;
        // the kernel picks the address, so nothing of ours is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                AREA_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: offset 0 of a mapping of AREA_SIZE bytes made above.
        unsafe { std::ptr::copy_nonoverlapping(TRAMPOLINE.as_ptr(), ptr.cast::<u8>(), 3) };
        // LIFO reuse keeps the touched pages (and so the tracer's RSS) few.
        let free = (1..SLOTS as u32).rev().collect();
        Ok(Area {
            ptr: ptr.cast(),
            _file: file,
            free,
            id,
        })
    }

    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    pub fn release(&mut self, slot: u32) {
        debug_assert!(!self.free.contains(&slot));
        self.free.push(slot);
    }

    /// Writes `bytes` plus a NUL at region `region` (0..3) of `slot`; returns the
    /// offset from the area's start. Bytes beyond a region are cut (paths are at most PATH_MAX).
    pub fn put(&mut self, slot: u32, region: usize, bytes: &[u8]) -> usize {
        assert!(region < 3 && (slot as usize) < SLOTS);
        let off = slot as usize * SLOT_SIZE + region * 4096;
        let n = bytes.len().min(4095);
        // SAFETY: off + n + 1 <= AREA_SIZE (slot < SLOTS, region < 3, n < 4096), and the
        // mapping lives as long as self; the tracee only reads this memory.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), n);
            *self.ptr.add(off + n) = 0;
        }
        off
    }
}

impl Area {
    /// Writes `bytes` as they are at `offset` within `slot` (cut at the slot's end).
    pub fn put_raw(&mut self, slot: u32, offset: usize, bytes: &[u8]) {
        assert!((slot as usize) < SLOTS && offset < SLOT_SIZE);
        let n = bytes.len().min(SLOT_SIZE - offset);
        let off = slot as usize * SLOT_SIZE + offset;
        // SAFETY: off + n <= (slot + 1) * SLOT_SIZE <= AREA_SIZE, and the mapping
        // lives as long as self; the tracee only reads this memory.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), n) };
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.cast(), AREA_SIZE) };
    }
}
