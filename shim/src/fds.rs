//! The tracer's record of a tracee's emulated fds: fds opened through a
//! redirect whose writes (or directory listing) the engine answers itself.
//!
//! The record mirrors the kernel's objects: an fd table per process (shared
//! by threads, copied by fork, unshared and purged of close-on-exec fds by
//! exec), holding numbers that point to open file descriptions (shared by
//! dup and fork, so a write's position is shared too). Each description
//! keeps the identity (device, inode) of the file it was opened on, so an fd
//! number that was closed behind the tracer's back (io_uring, an fd table
//! that another process shares) is never taken for the emulated file: the
//! identity is checked before every emulated write or listing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;

/// What the engine answers for an emulated fd.
#[derive(Debug)]
pub enum Kind {
    /// A writable entry: write(2) and friends go to the policy with `token`.
    Write { token: u64 },
    /// A directory of the fake tree: getdents answers `.`, `..`, then the
    /// entries of `dir` by name, as procfs lists its directories.
    Dir {
        dir: PathBuf,
        /// The listing as first read (a snapshot per open, as lxcfs does).
        entries: RefCell<Option<Rc<Vec<crate::dirents::Entry>>>>,
    },
}

/// One open file description.
#[derive(Debug)]
pub struct Ofd {
    pub kind: Kind,
    /// Write offset, or the index of the next directory entry.
    pub pos: Cell<u64>,
    /// (st_dev, st_ino) of the file the fd was opened on.
    pub ident: (u64, u64),
}

/// A process's emulated fds, by number.
#[derive(Debug, Default, Clone)]
pub struct FdTable {
    pub fds: HashMap<i32, Rc<Ofd>>,
}

pub type FdTableRef = Rc<RefCell<FdTable>>;

/// The (device, inode) of what the tracee's fd `fd` is open on, if it is open.
pub fn ident(pid: i32, fd: i32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Per-fd seccomp filters added to a process (they are inherited by children
/// and survive exec, so this record follows the same lineage). Each filter
/// stops the fd syscalls of a few fd numbers, for as long as the process and
/// its descendants live: their number is capped.
#[derive(Debug, Default, Clone)]
pub struct FdFilters {
    pub fds: BTreeSet<i32>,
    pub count: u32,
}

/// At most this many per-fd filters in one lineage; beyond, a process that
/// needs one keeps being stepped, or gets EMFILE where it is multi-threaded.
pub const MAX_FD_FILTERS: u32 = 8;
