//! fakefs: the fake /proc/sys tree that k3s's components meet under k3shim.
//!
//! fakefs knows nothing of ptrace. The launcher asks [`FakeFs::covers`] on
//! every path syscall, [`FakeFs::decide`] for the covered ones, and carries
//! out the returned [`Outcome`]; writes on fds opened through a write token
//! are emulated through [`FakeFs::write`], which validates like procfs,
//! stores atomically and journals.
//!
//! State directory layout (version [`LAYOUT_VERSION`]):
//!
//! ```text
//! DIR/k3shim-state.toml  layout version, creator, mode of the last writing opener; marks DIR as ours
//! DIR/index.json         fake entries: source (profile|real|written), seed, rule, readonly, mode
//! DIR/values/<rel>       fake /proc/sys/<rel>: value + "\n", mode 0644 or 0444
//! DIR/views/<rel>/       directory views (names only; dirs 0555, files with the
//!                        kernel's mode and size 0) for getdents and stat
//! DIR/files/<abs>        stand-ins outside /proc/sys (files/dev/kmsg)
//! DIR/journal.jsonl      one JSON line per write(2) attempt
//! DIR/tmp/               temp files renamed into values/ (same filesystem)
//! DIR/lock               flock(2) guarding index.json updates across processes
//! DIR/generation         shared change counter of index.json (one mapped page)
//! DIR/checked.json       stamps of the last integrity check (what is unchanged is not re-read)
//! DIR/damaged/<time>/    what `fakefs init` moved aside (symlinks, garbage values)
//! ```
//!
//! Every opener checks the tree first ([`integrity`]): what is damaged is
//! listed by [`FakeFs::damaged`], never served, and repaired by
//! [`FakeFs::open_repairing`].

mod fsutil;
mod integrity;
pub mod profile;
pub mod rules;
pub mod view;

pub use profile::{Dynamic, Profile, ProfileEntry};
pub use rules::Rule;

/// Whether fakefs's own file operations use openat2 (Some(true)), the
/// O_NOFOLLOW walk (Some(false)), or have not probed yet: for `k3shim doctor`.
pub use fsutil::openat2_in_use;
pub use integrity::Damage;

use fsutil::Root;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Version of the state directory layout this crate writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// The file that marks a directory as a k3shim state directory.
pub const STATE_FILE: &str = "k3shim-state.toml";
pub(crate) const INDEX_FILE: &str = "index.json";
pub(crate) const JOURNAL_FILE: &str = "journal.jsonl";

/// Where /proc/sys accesses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A real entry that exists and answers is used; the rest is fake.
    #[default]
    Overlay,
    /// Every /proc/sys path is fake (seeded from the real value when readable).
    Shadow,
}

/// How to open a fake tree.
#[derive(Debug, Clone)]
pub struct Options {
    /// State directory: created and seeded if absent or empty.
    pub state: PathBuf,
    /// "k3s", "none", or a .toml/.tsv path; layered, later wins. Empty = ["k3s"].
    pub profiles: Vec<String>,
    pub mode: Mode,
    /// Overlay only: writes to real, writable entries go to the kernel.
    pub write_through: bool,
    /// Where the real /proc/sys is ("/proc/sys"; tests use a temp dir so
    /// that nothing ever writes the host's).
    pub proc_root: PathBuf,
    /// (src on host, dst in guest), from [`parse_bind`].
    pub binds: Vec<(PathBuf, PathBuf)>,
}

impl Options {
    /// Defaults: k3s profile, overlay, no write-through, the real /proc/sys.
    pub fn new(state: impl Into<PathBuf>) -> Options {
        Options {
            state: state.into(),
            profiles: Vec::new(),
            mode: Mode::Overlay,
            write_through: false,
            proc_root: PathBuf::from("/proc/sys"),
            binds: Vec::new(),
        }
    }
}

/// The operation a path syscall performs, as the launcher classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// open O_RDONLY (of a file or, without O_DIRECTORY, of a directory).
    Read,
    /// open O_WRONLY; `trunc` = O_TRUNC (procfs ignores it: a write replaces the value anyway).
    Write {
        trunc: bool,
    },
    /// open O_RDWR.
    ReadWrite,
    /// open with O_CREAT (`excl`: and O_EXCL); fakefs decides whether the target exists.
    CreateFile {
        excl: bool,
    },
    /// open with O_DIRECT, for reading and/or writing: procfs cannot (EINVAL,
    /// once the lookup and the permission check pass).
    Direct {
        read: bool,
        write: bool,
    },
    /// stat family, statfs, listxattr, inotify_add_watch.
    Stat,
    /// access family; `mode` is R_OK|W_OK|X_OK bits (F_OK = 0).
    Access {
        mode: i32,
    },
    Readlink,
    /// open O_DIRECTORY, chdir.
    OpenDir,
    /// A new name: mkdir, mknod, symlink.
    Mkdir,
    /// unlink (`rmdir` Some(false)), rmdir (Some(true)) or unlinkat (None:
    /// the flag is not known); `slash`: the path ends with '/'.
    Remove {
        rmdir: Option<bool>,
        slash: bool,
    },
    /// rename family (each of the two paths is asked about).
    Rename,
    /// link family (each of the two paths is asked about).
    Link,
    /// chmod, chown (procfs refuses both with EPERM).
    Chmod,
    /// utime, utimes, utimensat, futimesat.
    Utime,
    /// getxattr (`write` false), setxattr and removexattr (true).
    Xattr {
        write: bool,
    },
    /// truncate(2) on a path.
    Truncate,
    Exec,
}

/// What the launcher does with the syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass the syscall through untouched.
    Real,
    /// Use `backing` instead of the guest path. For open-family syscalls,
    /// flags become `(flags & !clear_flags) | add_flags`; other syscalls
    /// ignore the flags. With a `write_token`, every write(2)/pwrite/writev
    /// on the resulting fd must be emulated through [`FakeFs::write`]: the fd
    /// itself is opened read-only (clear_flags has O_ACCMODE), so a write the
    /// tracer misses fails with EBADF instead of tearing the value.
    Fake {
        backing: PathBuf,
        add_flags: i32,
        clear_flags: i32,
        write_token: Option<u64>,
        /// `backing` is a directory of the fake tree (a view): its listing
        /// must look like procfs's (`.` and `..` first, then the entries),
        /// whatever order the state directory's file system keeps.
        listing: bool,
    },
    /// Fail the syscall with this errno, as procfs would.
    Error(i32),
    /// Succeed without running the syscall: procfs accepts it and changes
    /// nothing (truncate(2) or utime of an entry by its owner, access(2)).
    Done,
}

/// Who makes a request: the credentials procfs checks. Linux's
/// proc_sys_permission (test_perm) looks at the effective uid (root: the
/// owner's bits), else whether root's group is the effective or a
/// supplementary group (the group's bits), else the others' bits; no
/// capability overrides it (root gets EACCES on a 0444 entry), except that
/// net.* entries give CAP_NET_ADMIN holders the owner's bits
/// (net_ctl_permissions) and user.* entries CAP_SYS_RESOURCE holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub euid: u32,
    pub egid: u32,
    pub groups: Vec<u32>,
    /// Effective capabilities (bit N = capability N).
    pub cap_eff: u64,
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_FOWNER: u32 = 3;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_RESOURCE: u32 = 24;
const MAY_READ: u32 = 4;
const MAY_WRITE: u32 = 2;

impl Caller {
    /// Root with every capability (what `decide` assumes).
    pub fn root() -> Caller {
        Caller {
            euid: 0,
            egid: 0,
            groups: Vec::new(),
            cap_eff: u64::MAX,
        }
    }

    /// Parses /proc/PID/status (the Uid, Gid, Groups and CapEff lines).
    pub fn from_status(text: &str) -> Option<Caller> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        // "Uid:\treal\teffective\tsaved\tfs"
        let second =
            |name: &str| -> Option<u32> { field(name)?.split_whitespace().nth(1)?.parse().ok() };
        Some(Caller {
            euid: second("Uid:")?,
            egid: second("Gid:")?,
            groups: field("Groups:")
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect(),
            cap_eff: u64::from_str_radix(field("CapEff:")?, 16).ok()?,
        })
    }

    fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }

    /// test_perm(): may this caller do `want` (MAY_* bits) on entry `rel` of `mode`?
    fn permits(&self, rel: &str, mode: u32, want: u32) -> bool {
        let mut mode = mode & 0o777;
        let admin = (rel.starts_with("net/") && self.has_cap(CAP_NET_ADMIN))
            || (rel.starts_with("user/") && self.has_cap(CAP_SYS_RESOURCE));
        if admin {
            let owner = (mode >> 6) & 7;
            mode = owner << 6 | owner << 3 | owner;
        }
        let bits = if self.euid == 0 {
            mode >> 6
        } else if self.egid == 0 || self.groups.contains(&0) {
            mode >> 3
        } else {
            mode
        } & 7;
        want & !bits == 0
    }
}

/// The caller of one decision, asked for only when an answer depends on it
/// (reading /proc/TID/status costs syscalls).
struct Who<'a> {
    get: &'a mut dyn FnMut() -> Option<Caller>,
    got: Option<Caller>,
}

impl Who<'_> {
    fn caller(&mut self) -> &Caller {
        if self.got.is_none() {
            // A caller that cannot be looked at (it is gone) is taken as root:
            // nothing it does can be seen anyway.
            self.got = Some((self.get)().unwrap_or_else(Caller::root));
        }
        self.got.as_ref().expect("set above")
    }

    /// test_perm for entry `rel` of `mode`; the caller is looked at only
    /// when the others' bits do not already allow it.
    fn permits(&mut self, rel: &str, mode: u32, want: u32) -> bool {
        want & !(mode & 7) == 0 || self.caller().permits(rel, mode, want)
    }

    fn is_root_or(&mut self, cap: u32) -> bool {
        let c = self.caller();
        c.euid == 0 || c.has_cap(cap)
    }
}

/// Where an entry's current value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The real /proc/sys (live in overlay, or copied into the fake tree).
    Real,
    /// The profile's default, never written.
    Profile,
    /// Written by a traced program or `k3shim fakefs set`.
    Written,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Real => "real",
            Source::Profile => "profile",
            Source::Written => "written",
        })
    }
}

/// One line of `k3shim fakefs show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    /// Absolute guest path, e.g. /proc/sys/vm/panic_on_oom.
    pub path: String,
    /// Value without the trailing newline.
    pub value: String,
    pub source: Source,
    pub rule: String,
    pub readonly: bool,
    /// Why the state directory cannot serve this entry (see [`Damage`]); the
    /// value is then what a traced read would get, if anything (overlay reads
    /// of a working real entry), else empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// One line of `k3shim fakefs diff`: a written entry whose value differs
/// from the profile (or, for entries outside the profile, from its seed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    pub path: String,
    pub baseline: String,
    pub current: String,
}

/// A write attempt, for the timeline and DIR/journal.jsonl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Unix time in milliseconds.
    pub t_ms: u64,
    pub pid: i32,
    pub comm: String,
    /// Absolute guest path.
    pub path: String,
    /// Value before the write (None if there was none).
    pub old: Option<String>,
    /// Normalized value when accepted; what was written (lossy, trimmed) when rejected.
    pub new: String,
    pub accepted: bool,
    /// errno name when rejected, e.g. "EINVAL".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

/// fakefs errors: one line naming the file or path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {0} is not a k3shim state directory (no k3shim-state.toml) and is not empty: pick an empty or new directory")]
    ForeignDir(PathBuf),
    #[error("state directory {0} has no k3shim-state.toml but holds index.json and values/ (a k3shim state directory whose marker was lost); nothing was changed: `k3shim fakefs init --state {0}` writes it anew and checks the rest")]
    LostMarker(PathBuf),
    #[error("state directory {0} exists but is not a directory: pick an empty or new directory")]
    NotADir(PathBuf),
    #[error("state directory {dir}: {file} is corrupt ({reason}); nothing was changed: `k3shim fakefs init --state {dir}` moves it aside and rebuilds it (keeping the values), `k3shim fakefs reset --state {dir} --yes` starts over from the profile")]
    Corrupt {
        dir: PathBuf,
        file: String,
        reason: String,
    },
    #[error("state directory {dir} has layout version {found} but this k3shim reads version {supported}: use a matching k3shim or a new state directory")]
    Layout {
        dir: PathBuf,
        found: i64,
        supported: u32,
    },
    #[error("profile {file} line {line}: {msg}")]
    Profile {
        file: String,
        line: usize,
        msg: String,
    },
    #[error("profile {name}: {reason} (use k3s, none, or a path to a .toml or .tsv file)")]
    ProfileRead { name: String, reason: String },
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}: no such entry in the fake tree or the real one: check the path (relative to /proc/sys, e.g. vm/panic_on_oom)")]
    NoEntry(String),
    #[error("{0}: not a /proc/sys entry or a profile file: give a path relative to /proc/sys (vm/panic_on_oom) or a sysctl name (vm.panic_on_oom)")]
    NotAnEntry(String),
    #[error("{path}: value {value:?} rejected with {errno} (rule: {rule}): give a value the rule accepts")]
    Rejected {
        path: String,
        value: String,
        errno: String,
        rule: String,
    },
    #[error("{0} is read-only (0444): it cannot be set")]
    ReadOnly(String),
    #[error("state directory {dir} is damaged ({what}); nothing was changed: `k3shim fakefs init --state {dir}` moves what is damaged aside and repairs it")]
    Damaged { dir: PathBuf, what: String },
    #[error("{path} cannot be served: {what}; `k3shim fakefs init --state {dir}` moves it aside and restores the entry")]
    DamagedEntry {
        path: String,
        what: String,
        dir: PathBuf,
    },
    #[error("state directory {0} was opened read-only")]
    OpenedReadOnly(PathBuf),
    #[error("bind {spec:?}: {why} (expected SRC:DST with absolute paths, as proot -b)")]
    Bind { spec: String, why: String },
}

fn io_err(path: impl Into<PathBuf>, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, what, source }
}

/// Parses proot's `-b` syntax: `SRC:DST`, or `PATH` for the same path on
/// both sides. A relative SRC is taken from the current directory; DST must
/// be absolute. Both are normalized lexically.
pub fn parse_bind(spec: &str) -> Result<(PathBuf, PathBuf), Error> {
    let bad = |why: &str| Error::Bind {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (src, dst) = match spec.split_once(':') {
        Some((s, d)) => (s, d),
        None => (spec, spec),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(bad("empty path"));
    }
    if !dst.starts_with('/') {
        return Err(bad("DST must be an absolute guest path"));
    }
    let src = if src.starts_with('/') {
        PathBuf::from(src)
    } else {
        std::env::current_dir()
            .map_err(|_| bad("cannot resolve relative SRC"))?
            .join(src)
    };
    Ok((normalize(&src), normalize(Path::new(dst))))
}

/// Lexical normalization: drops `.`, empty parts, resolves `..`.
fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.as_os_str().as_bytes().split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    let mut s = Vec::new();
    for c in out {
        s.push(b'/');
        s.extend_from_slice(c);
    }
    if s.is_empty() {
        s.push(b'/');
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&s))
}

/// `b` equals `prefix` or lies beneath it (component-wise).
fn is_under(b: &[u8], prefix: &[u8]) -> bool {
    b.starts_with(prefix) && (b.len() == prefix.len() || prefix == b"/" || b[prefix.len()] == b'/')
}

/// The part of `b` below `prefix` ("" for `prefix` itself), if under it.
fn below<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if !is_under(b, prefix) {
        return None;
    }
    let rest = &b[prefix.len()..];
    Some(rest.strip_prefix(b"/").unwrap_or(rest))
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EBADF => "EBADF",
        libc::EIO => "EIO",
        libc::ENOENT => "ENOENT",
        _ => return format!("errno {e}"),
    }
    .to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parent_of(rel: &str) -> &str {
    rel.rfind('/').map(|i| &rel[..i]).unwrap_or("")
}

fn strip_nl(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct IndexEntry {
    source: Source,
    /// The value the entry started from (profile default or real value).
    seed: String,
    rule: String,
    readonly: bool,
    /// The kernel's permission bits, for an entry copied from the real tree
    /// (kernel/cad_pid is 0600, vm/drop_caches 0200); else 0644 or 0444.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    layout: u32,
    /// The profile (and machine facts it depends on) that every entry still
    /// at its profile default was last brought in line with: when the next
    /// opener's is the same, its start-up resync has nothing to do and is
    /// skipped (the per-entry check was ~850 of the ~1,050 start-up syscalls).
    /// Absent in older index files: the resync then runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile_fingerprint: Option<String>,
    entries: BTreeMap<String, IndexEntry>,
}

impl IndexFile {
    fn empty() -> IndexFile {
        IndexFile {
            layout: LAYOUT_VERSION,
            profile_fingerprint: None,
            entries: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    layout: u32,
    created_by: String,
    created_unix_ms: u64,
    /// The mode of the last opener that could write (what `fakefs show`
    /// shows by default); absent in older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

/// What a covered path names (FakeFs::kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Missing,
    /// A component before the last is not a directory.
    NotDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RealKind {
    Missing,
    Dir,
    File { mode: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    Dir,
    Missing { parent_exists: bool },
    NotDir,
}

const READ_CLEAR: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_APPEND;
const WRITE_CLEAR: i32 = libc::O_ACCMODE | READ_CLEAR;

/// The fake tree of one state directory.
pub struct FakeFs {
    root: Root,
    state: PathBuf,
    profile: Profile,
    profile_dirs: HashSet<String>,
    mode: Mode,
    write_through: bool,
    proc_root: PathBuf,
    binds: Vec<(PathBuf, PathBuf)>,
    /// Guest paths of the profile's stand-in files, as bytes, for covers().
    file_paths: Vec<Vec<u8>>,
    index: BTreeMap<String, IndexEntry>,
    index_dirs: HashSet<String>,
    index_stamp: Option<(u64, i64, i64, i64)>,
    /// profile_fingerprint as last read from (or to be written to) index.json.
    stored_fingerprint: Option<String>,
    /// Shared change counter of index.json (None: stat it every time).
    generation: Option<fsutil::Generation>,
    seen_generation: u64,
    real_kind: RefCell<HashMap<String, RealKind>>,
    real_readable: RefCell<HashMap<String, bool>>,
    tokens: Vec<String>,
    token_of: HashMap<String, u64>,
    journal_new: Vec<JournalEntry>,
    views_built: HashSet<String>,
    /// Opened by `show`, `get`, `diff`: nothing is written, no lock is taken.
    read_only: bool,
    /// What the opening check found and left in place (never served).
    damage: Vec<Damage>,
    /// What open_repairing did, one line each.
    repairs: Vec<String>,
    /// Read-only opens: values the profile resync would write.
    pending: HashMap<String, String>,
    /// Values read by the opening check, used once by the first resync.
    scanned: Option<HashMap<String, String>>,
    /// How many value files the opening check read (the rest were unchanged).
    opened_reads: usize,
}

/// How a state directory is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// For traced programs: damage is reported and not served; a damaged
    /// top level or a corrupt index is refused.
    Run,
    /// Writes nothing (works without write permission).
    ReadOnly,
    /// Moves aside what is damaged or corrupt, then repairs.
    Repair,
}

/// Holds the state directory's flock until dropped.
struct LockGuard(std::fs::File);
impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: valid fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl FakeFs {
    /// Opens DIR for a run, creating and seeding it if it is new or empty.
    /// Refuses a non-empty directory that is not a state directory, a
    /// newer/older layout, a corrupt state/index file or a damaged top level,
    /// without changing anything. Damaged entries (see [`FakeFs::damaged`])
    /// fail with EIO instead of being served.
    pub fn open(opts: Options) -> Result<FakeFs, Error> {
        Self::open_with(opts, Access::Run)
    }

    /// Opens an existing (or empty) DIR without writing anything, for
    /// commands that only look (works on a directory the user cannot write).
    /// Shows what a run would see, including the profile's values that a run
    /// would bring unwritten entries in line with.
    pub fn open_read_only(opts: Options) -> Result<FakeFs, Error> {
        Self::open_with(opts, Access::ReadOnly)
    }

    /// As [`FakeFs::open`], repairing instead of refusing: a corrupt
    /// k3shim-state.toml or index.json is moved aside (`<name>.corrupt-<time>`)
    /// and written anew (the index rebuilt from values/); whatever is damaged
    /// is moved to DIR/damaged/<time>/ and its entries restored (profile
    /// entries to the profile's value, others forgotten); every entry at its
    /// profile default is checked. [`FakeFs::repairs`] says what was done.
    pub fn open_repairing(opts: Options) -> Result<FakeFs, Error> {
        Self::open_with(opts, Access::Repair)
    }

    fn open_with(opts: Options, access: Access) -> Result<FakeFs, Error> {
        // Parse everything that can be wrong before touching the disk.
        let profile = Profile::load(&opts.profiles)?;
        let write = access != Access::ReadOnly;
        let (state, found) = prepare_state_dir(&opts.state, write)?;
        let fresh = found == Found::Fresh;
        if found == Found::Unmarked && access != Access::Repair {
            return Err(Error::LostMarker(state));
        }
        let root = Root::open(&state).map_err(io_err(&state, "cannot open state directory"))?;
        let mut repairs = Vec::new();
        let mut stamp = None;
        let mut stamp = move || stamp.get_or_insert_with(integrity::stamp).clone();
        let moved = |root: &Root, path: &str, stamp: &str, beside: bool| {
            integrity::move_aside(root, path, stamp, beside)
                .map_err(io_err(state.join(path), "cannot move aside"))
        };
        let mut write_state_file = fresh;
        if found == Found::Unmarked {
            repairs.push(format!(
                "{STATE_FILE} was missing ({INDEX_FILE} and values/ are there): written anew"
            ));
            write_state_file = true;
        } else if !fresh {
            match check_state_file(&root, &state) {
                Err(Error::Corrupt { reason, .. }) if access == Access::Repair => {
                    let to = moved(&root, STATE_FILE, &stamp(), true)?;
                    repairs.push(format!(
                        "{STATE_FILE} was corrupt ({reason}): moved to {to}, written anew"
                    ));
                    write_state_file = true;
                }
                r => r?,
            }
        }
        if access == Access::Repair {
            // Where repairs put things must itself be a directory.
            if let Some(what) = not_a_dir(&root, "damaged") {
                let to = moved(&root, "damaged", &stamp(), true)?;
                repairs.push(format!("damaged was {what}: moved it to {to}"));
            }
        }
        let mut damage = Vec::new();
        let mut rebuild = false;
        for d in integrity::scan_top(&root).map_err(io_err(&state, "cannot list"))? {
            match access {
                Access::Run => {
                    return Err(Error::Damaged {
                        dir: state,
                        what: d.to_string(),
                    })
                }
                Access::ReadOnly if d.path == INDEX_FILE => {
                    return Err(Error::Corrupt {
                        dir: state,
                        file: INDEX_FILE.into(),
                        reason: d.problem,
                    })
                }
                Access::ReadOnly => damage.push(d),
                Access::Repair => {
                    let to = moved(&root, &d.path, &stamp(), false)?;
                    let again = if d.path == INDEX_FILE {
                        ", rebuilt it from values/"
                    } else {
                        ""
                    };
                    repairs.push(format!(
                        "{} was {}: moved it to {to}{again}",
                        d.path, d.problem
                    ));
                    rebuild |= d.path == INDEX_FILE;
                }
            }
        }
        let mut index_file = match read_index(&root, &state) {
            Err(Error::Corrupt { reason, .. }) if access == Access::Repair => {
                let to = moved(&root, INDEX_FILE, &stamp(), true)?;
                repairs.push(format!(
                    "{INDEX_FILE} was corrupt ({reason}): moved to {to}, rebuilt from values/"
                ));
                rebuild = true;
                IndexFile::empty()
            }
            r => r?,
        };
        if write && (write_state_file || recorded_mode(&state) != Some(opts.mode)) {
            // A new marker, or the mode changed: `fakefs show` shows what the
            // last run saw. The creation stamp of an existing file is kept.
            let old: Option<StateFile> = (!write_state_file)
                .then(|| root.read(STATE_FILE).ok())
                .flatten()
                .and_then(|b| toml::from_str(&String::from_utf8_lossy(&b)).ok());
            let sf = StateFile {
                layout: LAYOUT_VERSION,
                mode: Some(mode_name(opts.mode).to_string()),
                ..old.unwrap_or_else(|| StateFile {
                    layout: LAYOUT_VERSION,
                    created_by: format!("k3shim fakefs {}", env!("CARGO_PKG_VERSION")),
                    created_unix_ms: now_ms(),
                    mode: None,
                })
            };
            let text = format!(
                "# k3shim fakefs state directory (do not edit while k3shim runs)\n{}",
                toml::to_string(&sf).unwrap_or_default()
            );
            root.write_atomic(STATE_FILE, text.as_bytes(), 0o644, true)
                .map_err(io_err(state.join(STATE_FILE), "cannot write"))?;
        }
        if write {
            for d in integrity::TOP_DIRS {
                root.open_dir(d, true)
                    .map_err(io_err(state.join(d), "cannot create"))?;
            }
        }

        // Every value and stand-in, checked once.
        let index = &index_file.entries;
        let mut dirs = profile.dirs();
        for k in index.keys() {
            let mut cur = k.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                dirs.insert(cur.to_string());
            }
        }
        let rule_of = |rel: &str| -> Option<Rule> {
            if let Some(p) = profile.entries.get(rel) {
                return Some(p.rule.clone());
            }
            index
                .get(rel)
                .map(|e| Rule::parse(&e.rule).unwrap_or(Rule::Text))
        };
        let required: Vec<String> = index.keys().cloned().collect();
        let expect = integrity::Expect {
            rule_of: &rule_of,
            dirs: &dirs,
            required: &required,
            adopt_strays: rebuild,
            key: check_key(&profile, index),
        };
        // A repair looks at everything; the others skip what is unchanged
        // since the last clean check.
        let cache = match access {
            Access::Repair => None,
            _ => integrity::Checked::load(&root),
        };
        let scan = if damage.iter().any(|d| d.path == "values") {
            integrity::ValueScan::default()
        } else {
            match integrity::scan_values(&root, &expect, cache.as_ref()) {
                Err(e) if !write && e.raw_os_error() == Some(libc::ENOENT) => {
                    integrity::ValueScan::default()
                }
                r => r.map_err(io_err(state.join("values"), "cannot check"))?,
            }
        };
        if write {
            scan.checked.save(&root, cache.as_ref());
        }
        let mut found = scan.damage;
        found.extend(
            integrity::scan_standins(&root, profile.files.keys())
                .map_err(io_err(state.join("files"), "cannot check"))?,
        );
        let mut forgot_any = false;
        if access == Access::Repair {
            for d in found.drain(..) {
                let entries: Vec<String> = index_file
                    .entries
                    .keys()
                    .filter(|rel| integrity::covers(&d.path, rel))
                    .cloned()
                    .collect();
                let mut what = if d.problem.starts_with("missing") {
                    format!("{} was {}", d.path, d.problem)
                } else {
                    let to = moved(&root, &d.path, &stamp(), false)?;
                    format!("{} was {}: moved it to {to}", d.path, d.problem)
                };
                // Profile entries are written again below; the others (written or
                // copied values) are forgotten: the next access seeds them afresh.
                let forgotten: Vec<String> = entries
                    .into_iter()
                    .filter(|rel| {
                        index_file.entries.get(rel).map(|e| e.source) != Some(Source::Profile)
                    })
                    .collect();
                for rel in &forgotten {
                    index_file.entries.remove(rel);
                }
                forgot_any |= !forgotten.is_empty();
                if !forgotten.is_empty() {
                    what.push_str(&format!(
                        "; forgot {} (no longer fake: the next write seeds it again)",
                        forgotten.join(", ")
                    ));
                }
                repairs.push(what);
            }
        }
        damage.extend(found);
        if rebuild {
            index_file.entries = rebuilt_index(&root, &profile, &scan.values);
        }

        let file_paths = profile
            .files
            .keys()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let mut fs = FakeFs {
            root,
            profile_dirs: profile.dirs(),
            profile,
            mode: opts.mode,
            write_through: opts.write_through,
            proc_root: opts.proc_root,
            binds: opts.binds,
            file_paths,
            index: BTreeMap::new(),
            index_dirs: HashSet::new(),
            index_stamp: None,
            stored_fingerprint: None,
            generation: None,
            seen_generation: 0,
            real_kind: RefCell::new(HashMap::new()),
            real_readable: RefCell::new(HashMap::new()),
            tokens: Vec::new(),
            token_of: HashMap::new(),
            journal_new: Vec::new(),
            views_built: HashSet::new(),
            read_only: !write,
            damage,
            repairs,
            pending: HashMap::new(),
            opened_reads: scan.values.len(),
            scanned: Some(scan.values),
            state,
        };
        if write {
            fs.generation = fsutil::Generation::map(&fs.root, "generation");
            // Read before the index is: a change made after this is seen on the next decision.
            fs.seen_generation = fs.generation.as_ref().map(|g| g.load()).unwrap_or(0);
        }
        if rebuild || forgot_any {
            // Stored first: the resync below reloads the index from disk.
            fs.index = index_file.entries;
            fs.stored_fingerprint = index_file.profile_fingerprint;
            fs.save_index()?;
        }
        fs.resync_profile(access == Access::Repair)?;
        if write {
            for (guest, content) in fs.profile.files.clone() {
                if fs.standin_damaged(guest.as_bytes()) {
                    continue;
                }
                let rel = format!("files{guest}");
                fs.root
                    .create_new(&rel, content.as_bytes(), 0o644)
                    .map_err(io_err(fs.state.join(&rel), "cannot create stand-in"))?;
            }
        }
        Ok(fs)
    }

    /// What the opening check found damaged and left in place: entries below
    /// it fail with EIO instead of being served (empty after
    /// [`FakeFs::open_repairing`]).
    pub fn damaged(&self) -> &[Damage] {
        &self.damage
    }

    /// One line for a run to print once when the state directory is damaged.
    pub fn damage_warning(&self) -> Option<String> {
        if self.damage.is_empty() {
            return None;
        }
        let mut list: Vec<String> = self.damage.iter().take(3).map(|d| d.to_string()).collect();
        if self.damage.len() > 3 {
            list.push(format!("and {} more", self.damage.len() - 3));
        }
        Some(format!(
            "state directory {} is damaged: {}; those entries fail with EIO until `k3shim fakefs init --state {}` moves them aside and restores them",
            self.state.display(),
            list.join("; "),
            self.state.display()
        ))
    }

    /// How many value files the opening check read; the others were
    /// unchanged since the last clean check and only stat'ed (diagnostics).
    pub fn opened_reads(&self) -> usize {
        self.opened_reads
    }

    /// What [`FakeFs::open_repairing`] did, one line each.
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// The canonical state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Overlay: writes to real, writable entries go to the kernel.
    pub fn write_through(&self) -> bool {
        self.write_through
    }

    /// Cheap check, called on every path syscall: is `guest` under /proc/sys,
    /// a stand-in file of the profile, or under a bind destination? No
    /// syscalls and no allocation.
    pub fn covers(&self, guest: &Path) -> bool {
        let b = guest.as_os_str().as_bytes();
        if is_under(b, b"/proc/sys") {
            return true;
        }
        if self.file_paths.iter().any(|f| f.as_slice() == b) {
            return true;
        }
        self.binds
            .iter()
            .any(|(_, dst)| is_under(b, dst.as_os_str().as_bytes()))
    }

    /// Decides one path syscall of a root caller (see [`FakeFs::decide_as`]).
    pub fn decide(&mut self, guest: &Path, op: Op) -> Outcome {
        self.decide_as(guest, op, &mut || Some(Caller::root()))
    }

    /// Decides one path syscall. `guest` is absolute and normalized;
    /// `caller` gives the calling thread's credentials, asked for only when
    /// the answer depends on them (permission checks as procfs makes them).
    ///
    /// Errnos are Linux's (fs/proc/proc_sysctl.c and the VFS above it,
    /// measured against the kernel): a new name (O_CREAT, mkdir, mknod,
    /// symlink) is ENOENT, as procfs's lookup refuses missing names;
    /// unlink and rmdir are EACCES (the directories are 0555 to everyone)
    /// except `unlink("dir/")` (EISDIR) and rmdir of /proc/sys itself (EPERM
    /// for root); chmod and chown are EPERM; truncate(2) and utime by the
    /// owner succeed and change nothing; getxattr and setxattr are
    /// EOPNOTSUPP (after the permission check); O_DIRECT is EINVAL. A rename
    /// or link that involves an entry is left to the kernel, which cannot
    /// carry it out on procfs and answers as Linux does (EXDEV across
    /// filesystems, after its own checks of the other path); where the
    /// entry's directory does not exist in the real tree, EXDEV is answered
    /// here. This gVisor differs (EPERM for new names, unlink and chmod,
    /// EOPNOTSUPP for setxattr on a directory): Linux is what programs expect.
    pub fn decide_as(
        &mut self,
        guest: &Path,
        op: Op,
        caller: &mut dyn FnMut() -> Option<Caller>,
    ) -> Outcome {
        let b = guest.as_os_str().as_bytes();
        if let Some(o) = self.decide_bind(b) {
            return o;
        }
        if let Some(rest) = below(b, b"/proc/sys") {
            return match sys_name(rest) {
                SysName::Name(rel) => {
                    let mut who = Who {
                        get: caller,
                        got: None,
                    };
                    self.decide_sys(rel, op, &mut who)
                }
                SysName::NoSuchEntry => Outcome::Error(libc::ENOENT),
                SysName::KernelDecides => Outcome::Real,
            };
        }
        if self.file_paths.iter().any(|f| f.as_slice() == b) {
            return self.decide_standin(b, op);
        }
        Outcome::Real
    }

    /// What a covered path names for a traced program (None: not covered).
    /// The engine asks for the names that `.`, `..` or a trailing slash walk
    /// through, which must be directories.
    pub fn kind(&self, guest: &Path) -> Option<Kind> {
        let b = guest.as_os_str().as_bytes();
        if let Some(Outcome::Fake { backing, .. }) = self.decide_bind(b) {
            return Some(match std::fs::symlink_metadata(&backing) {
                Ok(m) if m.is_dir() => Kind::Dir,
                Ok(_) => Kind::File,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Kind::NotDir,
                Err(_) => Kind::Missing,
            });
        }
        if let Some(rest) = below(b, b"/proc/sys") {
            let rel = match sys_name(rest) {
                SysName::Name(rel) => rel,
                SysName::NoSuchEntry => return Some(Kind::Missing),
                SysName::KernelDecides => return None,
            };
            return Some(match self.node(rel) {
                Node::Dir => Kind::Dir,
                Node::File => Kind::File,
                Node::Missing { .. } => Kind::Missing,
                Node::NotDir => Kind::NotDir,
            });
        }
        if self.file_paths.iter().any(|f| f.as_slice() == b) {
            return Some(Kind::File);
        }
        None
    }

    fn decide_bind(&self, b: &[u8]) -> Option<Outcome> {
        let (src, rest) = self
            .binds
            .iter()
            .filter_map(|(src, dst)| below(b, dst.as_os_str().as_bytes()).map(|r| (src, r)))
            .max_by_key(|(_, r)| usize::MAX - r.len())?;
        let backing = if rest.is_empty() {
            src.clone()
        } else {
            src.join(std::ffi::OsStr::from_bytes(rest))
        };
        Some(Outcome::Fake {
            backing,
            add_flags: 0,
            clear_flags: 0,
            write_token: None,
            listing: false,
        })
    }

    fn decide_standin(&self, guest: &[u8], op: Op) -> Outcome {
        if self.standin_damaged(guest) {
            return Outcome::Error(libc::EIO);
        }
        let backing = self
            .state
            .join("files")
            .join(std::ffi::OsStr::from_bytes(&guest[1..]));
        let fake = |add: i32, clear: i32| Outcome::Fake {
            backing: backing.clone(),
            add_flags: add | libc::O_NOFOLLOW,
            clear_flags: clear,
            write_token: None,
            listing: false,
        };
        match op {
            Op::Read | Op::Stat | Op::Truncate => fake(0, READ_CLEAR & !libc::O_TRUNC),
            Op::Access { mode } if mode & libc::X_OK != 0 => Outcome::Error(libc::EACCES),
            Op::Access { .. } => fake(0, 0),
            Op::CreateFile { excl: true } => Outcome::Error(libc::EEXIST),
            // Like /dev/kmsg: what is written shows up for readers.
            Op::Write { .. } | Op::ReadWrite | Op::CreateFile { .. } | Op::Direct { .. } => {
                fake(libc::O_APPEND, libc::O_TRUNC | libc::O_EXCL | libc::O_CREAT)
            }
            Op::OpenDir => Outcome::Error(libc::ENOTDIR),
            Op::Readlink => Outcome::Error(libc::EINVAL),
            Op::Mkdir => Outcome::Error(libc::EEXIST),
            Op::Exec => Outcome::Error(libc::EACCES),
            Op::Xattr { .. } => Outcome::Error(libc::EOPNOTSUPP),
            // The stand-in stays where programs expect it.
            Op::Remove { .. } | Op::Rename | Op::Link | Op::Chmod | Op::Utime => {
                Outcome::Error(libc::EPERM)
            }
        }
    }

    fn decide_sys(&mut self, rel: &str, op: Op, who: &mut Who) -> Outcome {
        self.refresh_index();
        match self.node(rel) {
            Node::NotDir => Outcome::Error(libc::ENOTDIR),
            // procfs's lookup refuses a missing name, also one to be created;
            // a rename's mount check comes before it (EXDEV).
            Node::Missing {
                parent_exists: true,
            } if op == Op::Rename => self.cross_mount(rel),
            Node::Missing { .. } => Outcome::Error(libc::ENOENT),
            Node::Dir => self.decide_dir(rel, op, who),
            Node::File => self.decide_file(rel, op, who),
        }
    }

    /// A rename or link of an entry with a path elsewhere: the kernel's own
    /// answer (it cannot complete one on procfs: EXDEV across filesystems,
    /// after checking the other path), unless the entry's directory is not
    /// in the real tree, where that answer would be ENOENT.
    fn cross_mount(&self, rel: &str) -> Outcome {
        if rel.is_empty() || self.real(parent_of(rel)) == RealKind::Dir {
            Outcome::Real
        } else {
            Outcome::Error(libc::EXDEV)
        }
    }

    fn decide_dir(&mut self, rel: &str, op: Op, who: &mut Who) -> Outcome {
        let real_dir = self.mode == Mode::Overlay && self.real(rel) == RealKind::Dir;
        match op {
            Op::CreateFile { excl: true } | Op::Mkdir => Outcome::Error(libc::EEXIST),
            Op::Write { .. }
            | Op::ReadWrite
            | Op::CreateFile { .. }
            | Op::Truncate
            | Op::Direct { write: true, .. } => Outcome::Error(libc::EISDIR),
            Op::Direct { .. } => Outcome::Error(libc::EINVAL),
            Op::Chmod => Outcome::Error(libc::EPERM),
            // Directories are 0555 to everyone: no write permission.
            Op::Xattr { write: true } => Outcome::Error(libc::EACCES),
            Op::Xattr { write: false } => Outcome::Error(libc::EOPNOTSUPP),
            Op::Utime if who.is_root_or(CAP_FOWNER) => Outcome::Done,
            Op::Utime => Outcome::Error(libc::EACCES),
            Op::Remove {
                rmdir: Some(false),
                slash: true,
            } => Outcome::Error(libc::EISDIR),
            // /proc/sys itself: /proc lets a CAP_DAC_OVERRIDE holder past its
            // permission check; procfs then has no rmdir (and unlink of a
            // directory is EISDIR).
            Op::Remove { rmdir, .. }
                if rel.is_empty() && who.caller().has_cap(CAP_DAC_OVERRIDE) =>
            {
                Outcome::Error(if rmdir == Some(false) {
                    libc::EISDIR
                } else {
                    libc::EPERM
                })
            }
            Op::Remove { .. } => Outcome::Error(libc::EACCES),
            Op::Rename | Op::Link => self.cross_mount(rel),
            Op::Readlink => Outcome::Error(libc::EINVAL),
            Op::Exec => Outcome::Error(libc::EACCES),
            Op::Access { mode } if mode & libc::W_OK != 0 => Outcome::Error(libc::EACCES),
            Op::Access { .. } => Outcome::Done,
            Op::Stat if real_dir => Outcome::Real,
            Op::Stat | Op::Read | Op::OpenDir => match self.build_view(rel) {
                Ok(backing) => Outcome::Fake {
                    backing,
                    add_flags: libc::O_NOFOLLOW,
                    clear_flags: READ_CLEAR,
                    write_token: None,
                    listing: true,
                },
                Err(e) => Outcome::Error(e),
            },
        }
    }

    fn decide_file(&mut self, rel: &str, op: Op, who: &mut Who) -> Outcome {
        let mode = self.kmode(rel);
        let ro = mode & 0o222 == 0;
        let pinned = self.pinned(rel);
        let overlay = self.mode == Mode::Overlay;
        // A working real entry that is not fake (yet): the kernel answers reads.
        let live = overlay && !pinned && self.real_is_readable(rel);
        let may = |read: bool, write: bool| {
            (if read { MAY_READ } else { 0 }) | (if write { MAY_WRITE } else { 0 })
        };
        match op {
            Op::OpenDir => Outcome::Error(libc::ENOTDIR),
            Op::Mkdir | Op::CreateFile { excl: true } => Outcome::Error(libc::EEXIST),
            Op::Readlink => Outcome::Error(libc::EINVAL),
            Op::Exec => Outcome::Error(libc::EACCES),
            Op::Chmod => Outcome::Error(libc::EPERM),
            // unlink and rmdir need write permission on the (0555) directory.
            Op::Remove { .. } => Outcome::Error(libc::EACCES),
            Op::Rename => self.cross_mount(rel),
            // The kernel checks the other path first, then the mount: it answers
            // where it has the entry.
            Op::Link if matches!(self.real(rel), RealKind::File { .. }) => Outcome::Real,
            Op::Link => Outcome::Error(libc::EXDEV),
            Op::Xattr { write } if !who.permits(rel, mode, may(!write, write)) => {
                Outcome::Error(libc::EACCES)
            }
            Op::Xattr { .. } => Outcome::Error(libc::EOPNOTSUPP),
            Op::Truncate if who.permits(rel, mode, MAY_WRITE) => Outcome::Done,
            Op::Truncate => Outcome::Error(libc::EACCES),
            Op::Utime if who.is_root_or(CAP_FOWNER) || who.permits(rel, mode, MAY_WRITE) => {
                Outcome::Done
            }
            Op::Utime => Outcome::Error(libc::EACCES),
            Op::Direct { read, write } if !who.permits(rel, mode, may(read, write)) => {
                Outcome::Error(libc::EACCES)
            }
            Op::Direct { .. } => Outcome::Error(libc::EINVAL),
            // Regular files under /proc/sys are never executable.
            Op::Access { mode: m } if m & libc::X_OK != 0 => Outcome::Error(libc::EACCES),
            Op::Access { .. } | Op::Stat if live => {
                // An entry k3shim takes writes for stats writable, as on procfs,
                // even where the real one says 0444 (this gVisor's do, writable
                // or not): procps checks the mode first.
                let real_ro =
                    matches!(self.real(rel), RealKind::File { mode } if mode & 0o200 == 0);
                match op {
                    _ if ro || !real_ro => Outcome::Real,
                    Op::Access { mode: m } => self.access(rel, mode, m, who),
                    _ => self.view_of(rel),
                }
            }
            Op::Access { mode: m } => self.access(rel, mode, m, who),
            Op::Stat => match self.entry_damage(rel) {
                Some(_) => Outcome::Error(libc::EIO),
                // The entry's name in its directory's view: size 0 and the
                // kernel's mode, as procfs reports them.
                None => self.view_of(rel),
            },
            Op::Read if !who.permits(rel, mode, MAY_READ) => Outcome::Error(libc::EACCES),
            Op::Read if live => Outcome::Real,
            Op::Read => {
                if self.entry_damage(rel).is_some() {
                    return Outcome::Error(libc::EIO);
                }
                match self.materialize(rel, !overlay, false) {
                    Ok(backing) => Outcome::Fake {
                        backing,
                        add_flags: libc::O_NOFOLLOW,
                        clear_flags: READ_CLEAR,
                        write_token: None,
                        listing: false,
                    },
                    // Nothing to serve (real but unreadable): the kernel answers.
                    Err(libc::ENOENT) => Outcome::Real,
                    Err(e) => Outcome::Error(e),
                }
            }
            Op::Write { .. } | Op::ReadWrite | Op::CreateFile { .. } => {
                let read = op == Op::ReadWrite;
                if ro || !who.permits(rel, mode, may(read, true)) {
                    return Outcome::Error(libc::EACCES);
                }
                if overlay && self.write_through && !pinned {
                    if let RealKind::File { mode } = self.real(rel) {
                        if mode & 0o200 != 0 {
                            return Outcome::Real;
                        }
                    }
                }
                if self.entry_damage(rel).is_some() {
                    return Outcome::Error(libc::EIO);
                }
                match self.materialize(rel, true, true) {
                    Ok(backing) => Outcome::Fake {
                        backing,
                        add_flags: libc::O_NOFOLLOW,
                        clear_flags: WRITE_CLEAR,
                        write_token: Some(self.token_for(rel)),
                        listing: false,
                    },
                    Err(e) => Outcome::Error(e),
                }
            }
        }
    }

    /// access(2) of an entry, answered here: procfs's permission check.
    fn access(&self, rel: &str, mode: u32, want: i32, who: &mut Who) -> Outcome {
        if self.entry_damage(rel).is_some() {
            return Outcome::Error(libc::EIO);
        }
        let mut may = 0;
        if want & libc::R_OK != 0 {
            may |= MAY_READ;
        }
        if want & libc::W_OK != 0 {
            may |= MAY_WRITE;
        }
        if may & MAY_WRITE != 0 && mode & 0o222 == 0 {
            return Outcome::Error(libc::EACCES);
        }
        if who.permits(rel, mode, may) {
            Outcome::Done
        } else {
            Outcome::Error(libc::EACCES)
        }
    }

    /// The entry's name in its directory's view: an empty file with the mode
    /// procfs would show (stat and access only).
    fn view_of(&mut self, rel: &str) -> Outcome {
        match self.build_view(parent_of(rel)) {
            Ok(dir) => Outcome::Fake {
                backing: dir.join(rel.rsplit('/').next().unwrap_or(rel)),
                add_flags: libc::O_NOFOLLOW,
                clear_flags: READ_CLEAR,
                write_token: None,
                listing: false,
            },
            Err(e) => Outcome::Error(e),
        }
    }

    /// The damage that keeps `rel`'s value file from being served, if any.
    fn entry_damage(&self, rel: &str) -> Option<&Damage> {
        if self.damage.is_empty() {
            return None;
        }
        self.damage.iter().find(|d| integrity::covers(&d.path, rel))
    }

    /// Is the stand-in for guest path `guest` (e.g. /dev/kmsg) damaged?
    fn standin_damaged(&self, guest: &[u8]) -> bool {
        self.damage.iter().any(|d| {
            d.path
                .strip_prefix("files")
                .is_some_and(|p| p.is_empty() || is_under(guest, p.as_bytes()))
        })
    }

    /// Emulates one write(2) at file position `offset` on an fd opened with
    /// `token`, as the kernel's handler for the entry's rule does it (see
    /// [`rules`]: a numeric entry ignores a write at a non-zero position but
    /// reports success, as sysctl_writes_strict=1 does); an accepted value is
    /// stored atomically and journaled. Returns what write(2) returns (the
    /// bytes the handler took: "1 2" to one integer takes 2), or
    /// EINVAL/EACCES (old value kept), EBADF for an unknown token, EIO if the
    /// state directory cannot be written.
    pub fn write(
        &mut self,
        token: u64,
        pid: i32,
        comm: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, i32> {
        let rel = token
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i as usize))
            .cloned()
            .ok_or(libc::EBADF)?;
        if self.read_only || self.entry_damage(&rel).is_some() {
            return Err(libc::EIO);
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.refresh_index();
        if !self.index.contains_key(&rel) {
            // reset() ran since the open: seed again like a fresh open.
            self.materialize(&rel, true, true)?;
        }
        let old = self
            .root
            .read(&format!("values/{rel}"))
            .ok()
            .map(|v| strip_nl(String::from_utf8_lossy(&v).into_owned()));
        let rule = self.rule(&rel, old.as_deref().unwrap_or(""));
        let res = if self.readonly(&rel) {
            Err(libc::EACCES)
        } else {
            rule.write(data, old.as_deref().unwrap_or(""), offset)
        };
        let res = res.and_then(|w| match w.value {
            // Ignored (a numeric entry at a non-zero position): nothing to
            // store or journal.
            None => Ok((None, w.consumed)),
            Some(new) => self
                .store_written(&rel, &new)
                .map(|_| (Some(new), w.consumed)),
        });
        let path = format!("/proc/sys/{rel}");
        match res {
            Ok((None, n)) => Ok(n),
            Ok((Some(new), n)) => {
                self.journal(pid, comm, path, old, new, Ok(()));
                Ok(n)
            }
            Err(e) => {
                let attempted = String::from_utf8_lossy(data).trim_end().to_string();
                self.journal(pid, comm, path, old, attempted, Err(e));
                Err(e)
            }
        }
    }

    /// Maps a backing path (value file, directory view, stand-in, bind
    /// source) back to the guest path it stands for. Used to resolve
    /// dirfd-relative calls whose dirfd came from a Fake outcome.
    pub fn untranslate(&self, host: &Path) -> Option<PathBuf> {
        let b = host.as_os_str().as_bytes();
        let st = self.state.as_os_str().as_bytes();
        if let Some(inner) = below(b, st) {
            let join = |prefix: &str, rest: &[u8]| {
                let mut v = prefix.as_bytes().to_vec();
                if !rest.is_empty() {
                    v.push(b'/');
                    v.extend_from_slice(rest);
                }
                PathBuf::from(std::ffi::OsStr::from_bytes(&v))
            };
            if let Some(r) = below(inner, b"values").or_else(|| below(inner, b"views")) {
                return Some(join("/proc/sys", r));
            }
            if let Some(r) = below(inner, b"files") {
                if !r.is_empty() {
                    return Some(join("", r));
                }
            }
            return None;
        }
        let (dst, rest) = self
            .binds
            .iter()
            .filter_map(|(src, dst)| below(b, src.as_os_str().as_bytes()).map(|r| (dst, r)))
            .min_by_key(|(_, r)| r.len())?;
        Some(if rest.is_empty() {
            dst.clone()
        } else {
            dst.join(std::ffi::OsStr::from_bytes(rest))
        })
    }

    /// Journal entries recorded since the last call (also in DIR/journal.jsonl).
    pub fn drain_journal(&mut self) -> Vec<JournalEntry> {
        std::mem::take(&mut self.journal_new)
    }

    /// Every profile and fake entry with its current value and source (real
    /// entries outside the profile are listed once they became fake), and
    /// whether it is damaged.
    pub fn entries(&self) -> Vec<EntryInfo> {
        let mut rels: BTreeSet<&String> = self.profile.entries.keys().collect();
        rels.extend(self.index.keys());
        let mut out = Vec::new();
        for rel in rels {
            let damage = self.entry_damage(rel).map(|d| d.to_string());
            let (value, source) = match self.current(rel) {
                Ok(v) => v,
                Err(Error::DamagedEntry { .. }) => (
                    String::new(),
                    self.index.get(rel).map_or(Source::Profile, |e| e.source),
                ),
                Err(_) => continue,
            };
            let rule = self.rule(rel, &value).to_string();
            out.push(EntryInfo {
                path: format!("/proc/sys/{rel}"),
                value,
                source,
                rule,
                readonly: self.readonly(rel),
                damage,
            });
        }
        for guest in self.profile.files.keys() {
            let damaged = self.standin_damaged(guest.as_bytes());
            let v = if damaged {
                Vec::new()
            } else {
                self.root.read(&format!("files{guest}")).unwrap_or_default()
            };
            out.push(EntryInfo {
                path: guest.clone(),
                value: String::from_utf8_lossy(&v).into_owned(),
                source: Source::Profile,
                rule: "file".into(),
                readonly: false,
                damage: damaged.then(|| {
                    self.damage
                        .iter()
                        .find(|d| d.path.starts_with("files"))
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                }),
            });
        }
        out
    }

    /// The value a traced program would read at `guest_rel` (relative to
    /// /proc/sys, a sysctl name such as `vm.panic_on_oom`, or absolute),
    /// without the trailing newline. A damaged entry is refused.
    pub fn get(&self, guest_rel: &str) -> Result<String, Error> {
        if guest_rel.starts_with('/') && !is_under(guest_rel.as_bytes(), b"/proc/sys") {
            if self.profile.files.contains_key(guest_rel) {
                if self.standin_damaged(guest_rel.as_bytes()) {
                    return Err(self.damaged_entry(guest_rel.to_string(), None));
                }
                let v = self
                    .root
                    .read(&format!("files{guest_rel}"))
                    .map_err(io_err(self.state.join("files"), "cannot read"))?;
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            return Err(Error::NotAnEntry(guest_rel.into()));
        }
        let rel = to_rel(guest_rel)?;
        // Refused even where an overlay read would reach the real entry: a
        // write would fail with EIO, and `show` lists it as damaged.
        if self.entry_damage(&rel).is_some() {
            return Err(self.damaged_entry(format!("/proc/sys/{rel}"), Some(&rel)));
        }
        self.current(&rel).map(|(v, _)| v)
    }

    /// Checks what [`FakeFs::set`] would check, changing nothing: the entry
    /// exists, is writable and not damaged, and its rule accepts `value`.
    pub fn check_set(&self, guest_rel: &str, value: &str) -> Result<(), Error> {
        let rel = to_rel(guest_rel)?;
        let path = format!("/proc/sys/{rel}");
        match self.node(&rel) {
            Node::File => {}
            _ => return Err(Error::NoEntry(path)),
        }
        if self.readonly(&rel) {
            return Err(Error::ReadOnly(path));
        }
        if self.entry_damage(&rel).is_some() {
            return Err(self.damaged_entry(path, Some(&rel)));
        }
        // The value a write would replace: the fake one, else what seeding copies.
        let old = if self.pinned(&rel) {
            self.fake_value(&rel)
        } else {
            None
        }
        .or_else(|| self.current(&rel).ok().map(|(v, _)| v))
        .unwrap_or_default();
        let rule = self.rule(&rel, &old);
        // Every byte must be a value: `set kernel.panic "1 2"` is a mistake,
        // not a 1 (which a write(2) of it would store).
        let line = format!("{value}\n");
        rule.write(line.as_bytes(), &old, 0)
            .and_then(|w| {
                if w.consumed == line.len() && w.value.is_some() {
                    Ok(())
                } else {
                    Err(libc::EINVAL)
                }
            })
            .map(|_| ())
            .map_err(|e| Error::Rejected {
                path,
                value: value.to_string(),
                errno: errno_name(e),
                rule: rule.to_string(),
            })
    }

    /// Sets an entry as a traced write would (validated, stored atomically,
    /// journaled with this process's pid and comm "k3shim"). Never writes
    /// the real /proc/sys, even with write_through: the entry becomes fake.
    /// A refused value changes nothing (checked before the entry is seeded).
    pub fn set(&mut self, guest_rel: &str, value: &str) -> Result<(), Error> {
        let rel = to_rel(guest_rel)?;
        self.refresh_index();
        self.check_set(guest_rel, value)?;
        let path = format!("/proc/sys/{rel}");
        self.materialize(&rel, true, true).map_err(|e| Error::Io {
            path: self.state.join("values").join(&rel),
            what: "cannot store",
            source: std::io::Error::from_raw_os_error(e),
        })?;
        let token = self.token_for(&rel);
        let mut data = value.to_string();
        if !data.ends_with('\n') {
            data.push('\n');
        }
        let pid = std::process::id() as i32;
        self.write(token, pid, "k3shim", 0, data.as_bytes())
            .map(|_| ())
            .map_err(|e| Error::Rejected {
                path: path.clone(),
                value: value.to_string(),
                errno: errno_name(e),
                rule: self.rule(&rel, "").to_string(),
            })
    }

    fn damaged_entry(&self, path: String, rel: Option<&str>) -> Error {
        let what = match rel {
            Some(rel) => self.entry_damage(rel).map(|d| d.to_string()),
            None => self
                .damage
                .iter()
                .find(|d| d.path.starts_with("files"))
                .map(|d| d.to_string()),
        };
        Error::DamagedEntry {
            path,
            what: what.unwrap_or_default(),
            dir: self.state.clone(),
        }
    }

    /// Written entries whose value differs from the profile's (or, outside
    /// the profile, from the value they were seeded with).
    pub fn diff(&self) -> Vec<DiffLine> {
        let mut out = Vec::new();
        for (rel, e) in &self.index {
            if e.source != Source::Written || self.entry_damage(rel).is_some() {
                continue;
            }
            let baseline = self
                .profile
                .entries
                .get(rel)
                .map(|p| p.value.clone())
                .unwrap_or_else(|| e.seed.clone());
            let current = self.fake_value(rel).unwrap_or_default();
            if current != baseline {
                out.push(DiffLine {
                    path: format!("/proc/sys/{rel}"),
                    baseline,
                    current,
                });
            }
        }
        out
    }

    /// Forgets every written or copied value and restores the profile. The
    /// journal is kept (it is history).
    pub fn reset(&mut self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::OpenedReadOnly(self.state.clone()));
        }
        {
            let _g = self.lock()?;
            for d in ["values", "views"] {
                self.root
                    .remove(d, true)
                    .map_err(io_err(self.state.join(d), "cannot remove"))?;
                self.root
                    .open_dir(d, true)
                    .map_err(io_err(self.state.join(d), "cannot create"))?;
            }
            self.index.clear();
            self.stored_fingerprint = None;
            self.save_index()?;
        }
        self.views_built.clear();
        self.resync_profile(true)
    }

    /// Re-checks every entry still at its profile default (value and mode)
    /// and repairs what drifted, even when the profile is the one the state
    /// directory was last opened with (open() then skips that check).
    pub fn verify(&mut self) -> Result<(), Error> {
        self.resync_profile(true)
    }

    // ----- internals -----

    /// Current value and source of an entry, as a traced read would see it.
    fn current(&self, rel: &str) -> Result<(String, Source), Error> {
        let not_found = || Error::NoEntry(format!("/proc/sys/{rel}"));
        if self.mode == Mode::Overlay && !self.pinned(rel) {
            if let Some(v) = self.real_value(rel) {
                return Ok((v, Source::Real));
            }
        }
        if self.entry_damage(rel).is_some() {
            return Err(self.damaged_entry(format!("/proc/sys/{rel}"), Some(rel)));
        }
        if let Some(e) = self.index.get(rel) {
            if self.mode == Mode::Shadow && e.source == Source::Profile {
                if let Some(v) = self.real_value(rel) {
                    return Ok((v, Source::Real));
                }
            }
            return Ok((self.fake_value(rel).ok_or_else(not_found)?, e.source));
        }
        if let Some(p) = self.profile.entries.get(rel) {
            return Ok((p.value.clone(), Source::Profile));
        }
        if self.mode == Mode::Shadow {
            if let Some(v) = self.real_value(rel) {
                return Ok((v, Source::Real));
            }
        }
        Err(not_found())
    }

    fn fake_value(&self, rel: &str) -> Option<String> {
        if let Some(v) = self.pending.get(rel) {
            return Some(v.clone());
        }
        self.root
            .read(&format!("values/{rel}"))
            .ok()
            .map(|v| strip_nl(String::from_utf8_lossy(&v).into_owned()))
    }

    /// Overlay: a fake entry seeded from the real tree or written stays
    /// fake (across runs); one only seeded from the profile defers to a
    /// working real entry.
    fn pinned(&self, rel: &str) -> bool {
        self.index
            .get(rel)
            .is_some_and(|e| e.source != Source::Profile)
    }

    fn readonly(&self, rel: &str) -> bool {
        self.kmode(rel) & 0o222 == 0
    }

    /// The permission bits procfs shows for an entry: the profile's (0644,
    /// or 0444 read-only), else those it was copied with, else the real ones.
    fn kmode(&self, rel: &str) -> u32 {
        let plain = |ro: bool| if ro { 0o444 } else { 0o644 };
        if let Some(p) = self.profile.entries.get(rel) {
            return plain(p.readonly);
        }
        if let Some(e) = self.index.get(rel) {
            return e.mode.unwrap_or_else(|| plain(e.readonly)) & 0o777;
        }
        match self.real(rel) {
            RealKind::File { mode } => mode & 0o777,
            _ => 0o644,
        }
    }

    fn rule(&self, rel: &str, value: &str) -> Rule {
        if let Some(p) = self.profile.entries.get(rel) {
            return p.rule.clone();
        }
        if let Some(r) = self.index.get(rel).and_then(|e| Rule::parse(&e.rule).ok()) {
            return r;
        }
        Rule::infer(value)
    }

    fn node(&self, rel: &str) -> Node {
        if rel.is_empty() {
            return Node::Dir;
        }
        if self.index.contains_key(rel) || self.profile.entries.contains_key(rel) {
            return Node::File;
        }
        if self.profile_dirs.contains(rel) || self.index_dirs.contains(rel) {
            return Node::Dir;
        }
        match self.real(rel) {
            RealKind::File { .. } => return Node::File,
            RealKind::Dir => return Node::Dir,
            RealKind::Missing => {}
        }
        match self.node(parent_of(rel)) {
            Node::Dir => Node::Missing {
                parent_exists: true,
            },
            Node::File | Node::NotDir => Node::NotDir,
            Node::Missing { .. } => Node::Missing {
                parent_exists: false,
            },
        }
    }

    fn real(&self, rel: &str) -> RealKind {
        if let Some(k) = self.real_kind.borrow().get(rel) {
            return *k;
        }
        let k = match std::fs::symlink_metadata(self.proc_root.join(rel)) {
            Ok(m) if m.is_dir() => RealKind::Dir,
            Ok(m) if m.is_file() => RealKind::File {
                mode: m.permissions().mode() & 0o7777,
            },
            _ => RealKind::Missing,
        };
        self.real_kind.borrow_mut().insert(rel.to_string(), k);
        k
    }

    fn real_is_readable(&self, rel: &str) -> bool {
        if !matches!(self.real(rel), RealKind::File { .. }) {
            return false;
        }
        if let Some(r) = self.real_readable.borrow().get(rel) {
            return *r;
        }
        let ok = self.read_real(rel).is_some();
        self.real_readable.borrow_mut().insert(rel.to_string(), ok);
        ok
    }

    fn read_real(&self, rel: &str) -> Option<String> {
        let v = std::fs::read(self.proc_root.join(rel)).ok()?;
        Some(strip_nl(String::from_utf8_lossy(&v).into_owned()))
    }

    fn real_value(&self, rel: &str) -> Option<String> {
        if !self.real_is_readable(rel) {
            return None;
        }
        self.read_real(rel)
    }

    /// Makes sure `rel` has a value file and returns its path. With
    /// `prefer_real`, an entry not yet copied from the real tree is seeded
    /// from the real value when readable (overlay's first write, shadow's
    /// first use). With `allow_empty`, a real entry that cannot be read is
    /// seeded empty rather than refused.
    fn materialize(
        &mut self,
        rel: &str,
        prefer_real: bool,
        allow_empty: bool,
    ) -> Result<PathBuf, i32> {
        if self.read_only {
            return Err(libc::EROFS);
        }
        let backing = self.state.join("values").join(rel);
        let existing = self.index.get(rel).map(|e| e.source);
        let real_kind = self.real(rel);
        let reseed = match existing {
            Some(Source::Profile) => prefer_real && self.real_is_readable(rel),
            Some(_) => false,
            None => true,
        };
        if !reseed {
            return Ok(backing);
        }
        // A real value is stored as the entry's rule prints it (this gVisor's
        // "16000 65535" becomes "16000\t65535"); one the rule cannot take
        // (a kernel that differs) is not copied: the profile's value is.
        let real_seed = (prefer_real && self.real_is_readable(rel))
            .then(|| self.read_real(rel).unwrap_or_default())
            .and_then(|v| match self.profile.entries.get(rel) {
                Some(p) => p.rule.normalize(&v).ok(),
                None => Some(v),
            });
        let (value, source) = if let Some(v) = real_seed {
            (v, Source::Real)
        } else if let Some(p) = self.profile.entries.get(rel) {
            (p.value.clone(), Source::Profile)
        } else if allow_empty && matches!(real_kind, RealKind::File { .. }) {
            (String::new(), Source::Real)
        } else {
            return Err(libc::ENOENT);
        };
        let (rule, readonly, kmode) = match self.profile.entries.get(rel) {
            Some(p) => (p.rule.to_string(), p.readonly, None),
            None => match real_kind {
                RealKind::File { mode } => (
                    Rule::infer(&value).to_string(),
                    mode & 0o222 == 0,
                    Some(mode & 0o777),
                ),
                _ => (Rule::infer(&value).to_string(), false, None),
            },
        };
        let entry = IndexEntry {
            source,
            seed: value.clone(),
            rule,
            readonly,
            mode: kmode,
        };
        let mode = if readonly { 0o444 } else { 0o644 };
        let _g = self.lock().map_err(|_| libc::EIO)?;
        self.reload_index().map_err(|_| libc::EIO)?;
        // Another process may have seeded or written it meanwhile.
        if let Some(e) = self.index.get(rel) {
            if e.source != Source::Profile || !(prefer_real && source == Source::Real) {
                return Ok(backing);
            }
        }
        self.root
            .write_atomic(
                &format!("values/{rel}"),
                format!("{value}\n").as_bytes(),
                mode,
                true,
            )
            .map_err(|_| libc::EIO)?;
        self.index.insert(rel.to_string(), entry);
        self.save_index().map_err(|_| libc::EIO)?;
        Ok(backing)
    }

    /// Stores an accepted value and marks the entry written.
    fn store_written(&mut self, rel: &str, value: &str) -> Result<(), i32> {
        if self.read_only {
            return Err(libc::EROFS);
        }
        let mode = if self.readonly(rel) { 0o444 } else { 0o644 };
        self.root
            .write_atomic(
                &format!("values/{rel}"),
                format!("{value}\n").as_bytes(),
                mode,
                true,
            )
            .map_err(|_| libc::EIO)?;
        if self.index.get(rel).map(|e| e.source) != Some(Source::Written) {
            let _g = self.lock().map_err(|_| libc::EIO)?;
            self.reload_index().map_err(|_| libc::EIO)?;
            let seed = value.to_string();
            let rule = self.rule(rel, value).to_string();
            let readonly = self.readonly(rel);
            let mode = (!self.profile.entries.contains_key(rel)).then(|| self.kmode(rel));
            let e = self.index.entry(rel.to_string()).or_insert(IndexEntry {
                source: Source::Written,
                seed,
                rule,
                readonly,
                mode,
            });
            e.source = Source::Written;
            self.save_index().map_err(|_| libc::EIO)?;
        }
        Ok(())
    }

    fn token_for(&mut self, rel: &str) -> u64 {
        if let Some(t) = self.token_of.get(rel) {
            return *t;
        }
        self.tokens.push(rel.to_string());
        let t = self.tokens.len() as u64;
        self.token_of.insert(rel.to_string(), t);
        t
    }

    fn journal(
        &mut self,
        pid: i32,
        comm: &str,
        path: String,
        old: Option<String>,
        new: String,
        res: Result<(), i32>,
    ) {
        let e = JournalEntry {
            t_ms: now_ms(),
            pid,
            comm: comm.to_string(),
            path,
            old,
            new,
            accepted: res.is_ok(),
            errno: res.err().map(errno_name),
        };
        match serde_json::to_string(&e) {
            Ok(mut line) => {
                line.push('\n');
                if let Err(err) = self.root.append(JOURNAL_FILE, line.as_bytes()) {
                    tracing::warn!(
                        "fakefs: cannot append to {}: {err}",
                        self.state.join(JOURNAL_FILE).display()
                    );
                }
            }
            Err(err) => tracing::warn!("fakefs: cannot encode journal entry: {err}"),
        }
        self.journal_new.push(e);
    }

    fn lock(&self) -> Result<LockGuard, Error> {
        if self.read_only {
            return Err(Error::OpenedReadOnly(self.state.clone()));
        }
        let fd = self
            .root
            .open_file("lock", libc::O_RDWR | libc::O_CREAT, 0o644)
            .map_err(io_err(self.state.join("lock"), "cannot open"))?;
        let f = std::fs::File::from(fd);
        // SAFETY: valid fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
            return Err(Error::Io {
                path: self.state.join("lock"),
                what: "cannot lock",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(LockGuard(f))
    }

    fn index_stamp(&self) -> Option<(u64, i64, i64, i64)> {
        self.root
            .lstat(INDEX_FILE)
            .ok()
            .flatten()
            .map(|st| (st.st_ino, st.st_mtime, st.st_mtime_nsec, st.st_size))
    }

    /// Picks up index changes made by another process: no syscall while the shared
    /// generation counter is unchanged, else one lstat.
    fn refresh_index(&mut self) {
        if let Some(g) = &self.generation {
            let now = g.load();
            if now == self.seen_generation {
                return;
            }
            self.seen_generation = now;
        }
        if self.index_stamp() != self.index_stamp {
            if let Err(e) = self.reload_index() {
                tracing::warn!("fakefs: keeping the index in memory: {e}");
            }
        }
    }

    fn reload_index(&mut self) -> Result<(), Error> {
        let stamp = self.index_stamp();
        if stamp.is_some() && stamp == self.index_stamp {
            return Ok(());
        }
        let f = read_index(&self.root, &self.state)?;
        self.index = f.entries;
        self.stored_fingerprint = f.profile_fingerprint;
        self.index_stamp = stamp;
        self.index_changed();
        Ok(())
    }

    fn save_index(&mut self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::OpenedReadOnly(self.state.clone()));
        }
        let f = IndexFile {
            layout: LAYOUT_VERSION,
            profile_fingerprint: self.stored_fingerprint.clone(),
            entries: self.index.clone(),
        };
        let text = serde_json::to_string_pretty(&f).unwrap_or_default() + "\n";
        self.root
            .write_atomic(INDEX_FILE, text.as_bytes(), 0o644, true)
            .map_err(io_err(self.state.join(INDEX_FILE), "cannot write"))?;
        self.index_stamp = self.index_stamp();
        if let Some(g) = &self.generation {
            // Others re-read the index on their next decision; we are up to date.
            self.seen_generation = g.bump();
        }
        self.index_changed();
        Ok(())
    }

    fn index_changed(&mut self) {
        let mut dirs = HashSet::new();
        for p in self.index.keys() {
            let mut cur = p.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                dirs.insert(cur.to_string());
            }
        }
        self.index_dirs = dirs;
        self.views_built.clear();
    }

    /// What resync_profile's outcome depends on: the layout, every profile
    /// entry, and uname's release when an entry takes its value from it.
    fn profile_fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (LAYOUT_VERSION, env!("CARGO_PKG_VERSION")).hash(&mut h);
        for (rel, pe) in &self.profile.entries {
            (
                rel,
                &pe.value,
                pe.rule.to_string(),
                pe.readonly,
                format!("{:?}", pe.dynamic),
            )
                .hash(&mut h);
            if pe.dynamic == Some(Dynamic::UnameRelease) {
                uname_release().hash(&mut h);
            }
        }
        format!("{:016x}-{}", h.finish(), self.profile.entries.len())
    }

    /// Brings entries still at their profile default in line with the
    /// current profile (a state directory may be opened with other
    /// profiles than the last time); written and copied entries are kept.
    fn resync_profile(&mut self, always: bool) -> Result<(), Error> {
        // Read-only opens take no lock (readers see whole files: every write
        // is a rename) and keep what they would write in `pending`.
        let _g = if self.read_only {
            None
        } else {
            Some(self.lock()?)
        };
        // The values the opening check read (only good before anything changed).
        let scanned = self.scanned.take();
        self.index_stamp = None;
        self.reload_index()?;
        let fingerprint = self.profile_fingerprint();
        if !always && self.stored_fingerprint.as_deref() == Some(fingerprint.as_str()) {
            return Ok(());
        }
        self.stored_fingerprint = Some(fingerprint);
        let entries: Vec<(String, ProfileEntry)> = self
            .profile
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (rel, pe) in entries {
            let known = self.index.get(&rel).cloned();
            if known.as_ref().is_some_and(|e| e.source != Source::Profile) {
                continue;
            }
            // Left as it is until `fakefs init` moves it aside.
            if self.entry_damage(&rel).is_some() {
                continue;
            }
            let vrel = format!("values/{rel}");
            // Values the check did not read (unchanged since it last passed) are read now.
            let cur = scanned
                .as_ref()
                .and_then(|values| values.get(&rel).cloned())
                .or_else(|| self.fake_value(&rel));
            let want = match pe.dynamic {
                Some(Dynamic::RandomUuid) if known.is_some() && cur.is_some() => {
                    cur.clone().unwrap_or_default()
                }
                Some(Dynamic::RandomUuid) => random_uuid(),
                Some(Dynamic::UnameRelease) => uname_release().unwrap_or_else(|| pe.value.clone()),
                None => pe.value.clone(),
            };
            let mode = if pe.readonly { 0o444 } else { 0o644 };
            let entry = IndexEntry {
                source: Source::Profile,
                seed: want.clone(),
                rule: pe.rule.to_string(),
                readonly: pe.readonly,
                mode: None,
            };
            if self.read_only {
                if cur.as_deref() != Some(want.as_str()) {
                    self.pending.insert(rel.clone(), want);
                }
            } else {
                let mode_ok = self
                    .root
                    .lstat(&vrel)
                    .ok()
                    .flatten()
                    .is_some_and(|st| st.st_mode & 0o777 == mode);
                if cur.as_deref() != Some(want.as_str()) || !mode_ok {
                    self.root
                        .write_atomic(&vrel, format!("{want}\n").as_bytes(), mode, false)
                        .map_err(io_err(self.state.join(&vrel), "cannot write"))?;
                }
            }
            if known.as_ref() != Some(&entry) {
                self.index.insert(rel, entry);
            }
        }
        let stale: Vec<String> = self
            .index
            .iter()
            .filter(|(k, e)| e.source == Source::Profile && !self.profile.entries.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for rel in stale {
            if !self.read_only {
                self.root
                    .remove(&format!("values/{rel}"), false)
                    .map_err(io_err(
                        self.state.join("values").join(&rel),
                        "cannot remove",
                    ))?;
            }
            self.index.remove(&rel);
        }
        if self.read_only {
            self.index_changed();
            return Ok(());
        }
        // Saved even when no entry changed: the new fingerprint is the change.
        self.save_index()
    }

    /// Builds DIR/views/<rel>/: one empty file or directory per entry that
    /// a listing of /proc/sys/<rel> shows (real and fake merged; modes as
    /// procfs: files 0644/0444, directories 0555). Only names matter: the
    /// launcher resolves opens through a view back to /proc/sys paths.
    /// The names in directory `rel` of the fake tree: Some(mode) for files,
    /// None for directories (the real directory's names, then the profile's
    /// and the index's).
    fn children_of(&self, rel: &str) -> BTreeMap<String, Option<u32>> {
        let mut children: BTreeMap<String, Option<u32>> = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.proc_root.join(rel)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match e.metadata() {
                    Ok(m) if m.is_dir() => children.insert(name, None),
                    Ok(m) => children.insert(name, Some(m.mode() & 0o777)),
                    Err(_) => None,
                };
            }
        }
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let fake: BTreeSet<String> = self
            .profile
            .entries
            .keys()
            .chain(self.index.keys())
            .cloned()
            .collect();
        for p in fake {
            let Some(rest) = p.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    children.insert(dir.to_string(), None);
                }
                None => {
                    if children.get(rest) != Some(&None) {
                        children.insert(rest.to_string(), Some(self.kmode(&p)));
                    }
                }
            }
        }
        children
    }

    fn build_view(&mut self, rel: &str) -> Result<PathBuf, i32> {
        let path = if rel.is_empty() {
            self.state.join("views")
        } else {
            self.state.join("views").join(rel)
        };
        if self.views_built.contains(rel) {
            return Ok(path);
        }
        if !rel.is_empty() {
            self.build_view(parent_of(rel))?;
        }
        let children = self.children_of(rel);
        let vrel = if rel.is_empty() {
            "views".to_string()
        } else {
            format!("views/{rel}")
        };
        let dir = self.root.open_dir(&vrel, true).map_err(|_| libc::EIO)?;
        fsutil::fchmod(&dir, 0o755);
        let res = (|| -> std::io::Result<()> {
            // Only the right kind of name stays: a symlink, FIFO or stale name
            // put there is removed (never followed), so a view lists only names.
            for (name, kind) in fsutil::list(&dir)? {
                match (children.get(&name), kind) {
                    (Some(None), fsutil::FileType::Dir) => {}
                    (Some(Some(_)), fsutil::FileType::File) => {}
                    _ => fsutil::remove_at(&dir, &name, true)?,
                }
            }
            for (name, kind) in &children {
                if name.contains('/') || name == "." || name == ".." {
                    continue;
                }
                match kind {
                    Some(mode) => fsutil::touch_at(&dir, name, *mode)?,
                    None => {
                        fsutil::mkdir_at(&dir, name)?;
                        fsutil::chmod_at(&dir, name, 0o555)?;
                    }
                }
            }
            Ok(())
        })();
        fsutil::fchmod(&dir, 0o555);
        res.map_err(|_| libc::EIO)?;
        self.views_built.insert(rel.to_string());
        Ok(path)
    }
}

/// `vm/x`, `/proc/sys/vm/x`, or sysctl's `vm.x` -> `vm/x`, checked clean.
fn to_rel(guest_rel: &str) -> Result<String, Error> {
    let rel = if guest_rel.starts_with('/') {
        match below(guest_rel.as_bytes(), b"/proc/sys") {
            Some(r) => String::from_utf8_lossy(r).into_owned(),
            None => return Err(Error::NotAnEntry(guest_rel.into())),
        }
    } else {
        sysctl_name_to_path(guest_rel)
            .trim_end_matches('/')
            .to_string()
    };
    profile::check_rel_path(&rel).map_err(|_| Error::NotAnEntry(guest_rel.into()))?;
    Ok(rel)
}

/// procps sysctl's rule (slashdot() in sysctl.c): the first separator
/// decides. A name whose first separator is `/` is a path already; otherwise
/// every `.` becomes `/` and every `/` becomes `.`, so that an interface name
/// with a dot is written with a slash: `net.ipv4.conf.eth0/1.forwarding` is
/// net/ipv4/conf/eth0.1/forwarding.
pub fn sysctl_name_to_path(name: &str) -> String {
    match name.find(['.', '/']) {
        // A leading '.' cannot start a dotted name (".-" is a path).
        Some(i) if i > 0 && name.as_bytes()[i] == b'.' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// What a state directory is, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Marked by k3shim-state.toml.
    Ours,
    /// Created, or empty: to be seeded.
    Fresh,
    /// No k3shim-state.toml, but index.json and values/ are there: ours, with
    /// its marker lost (a foreign directory does not hold both).
    Unmarked,
}

/// Finds (and with `create`, makes) the state directory; returns its
/// canonical path and what it is. Never modifies a directory it refuses.
fn prepare_state_dir(path: &Path, create: bool) -> Result<(PathBuf, Found), Error> {
    let created = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => false,
        Ok(_) => return Err(Error::NotADir(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(path).map_err(io_err(path, "cannot create state directory"))?;
            true
        }
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                what: "cannot access state directory",
                source: e,
            })
        }
    };
    let state =
        std::fs::canonicalize(path).map_err(io_err(path, "cannot resolve state directory"))?;
    if std::fs::symlink_metadata(state.join(STATE_FILE)).is_ok() {
        // Ours, whatever the file holds (checked through the root next).
        return Ok((state, Found::Ours));
    }
    let empty = std::fs::read_dir(&state)
        .map_err(io_err(&state, "cannot list state directory"))?
        .next()
        .is_none();
    let is = |name: &str, dir: bool| {
        std::fs::symlink_metadata(state.join(name)).is_ok_and(|m| {
            if dir {
                m.is_dir()
            } else {
                m.is_file()
            }
        })
    };
    if created || empty {
        Ok((state, Found::Fresh))
    } else if is(INDEX_FILE, false) && is("values", true) {
        Ok((state, Found::Unmarked))
    } else {
        Err(Error::ForeignDir(state))
    }
}

/// The mode DIR was last opened with for writing (by `run` or `fakefs
/// init|set|reset`), as its k3shim-state.toml records it; None if it says
/// nothing or cannot be read. The file is read without following symlinks.
pub fn recorded_mode(dir: &Path) -> Option<Mode> {
    let root = Root::open(dir).ok()?;
    let text = String::from_utf8(root.read(STATE_FILE).ok()?).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    match table.get("mode")?.as_str()? {
        "overlay" => Some(Mode::Overlay),
        "shadow" => Some(Mode::Shadow),
        _ => None,
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Overlay => "overlay",
        Mode::Shadow => "shadow",
    }
}

/// What a check of values/ depends on: every entry's path and rule.
fn check_key(profile: &Profile, index: &BTreeMap<String, IndexEntry>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (LAYOUT_VERSION, env!("CARGO_PKG_VERSION")).hash(&mut h);
    let mut all: BTreeMap<&str, String> = BTreeMap::new();
    for (rel, e) in index {
        all.insert(rel, e.rule.clone());
    }
    for (rel, p) in &profile.entries {
        all.insert(rel, p.rule.to_string());
    }
    for (rel, rule) in &all {
        (rel, rule, index.contains_key(*rel)).hash(&mut h);
    }
    format!("{:016x}-{}", h.finish(), all.len())
}

/// How a repair line describes a name that is there but not a directory.
fn not_a_dir(root: &Root, name: &str) -> Option<String> {
    match fsutil::type_at(root.fd(), name) {
        Ok(Some(fsutil::FileType::Dir)) | Ok(None) => None,
        Ok(Some(fsutil::FileType::Symlink)) => Some(match fsutil::readlink_at(root.fd(), name) {
            Some(t) => format!("a symlink to {t}"),
            None => "a symlink".into(),
        }),
        Ok(Some(k)) => Some(k.name().to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// How a repair line describes a name that is not a regular file.
fn not_a_file(root: &Root, name: &str) -> Option<String> {
    match fsutil::type_at(root.fd(), name) {
        Ok(Some(fsutil::FileType::File)) | Ok(None) => None,
        Ok(Some(fsutil::FileType::Symlink)) => Some(match fsutil::readlink_at(root.fd(), name) {
            Some(t) => format!("a symlink to {t}"),
            None => "a symlink".into(),
        }),
        Ok(Some(k)) => Some(format!("{}, not a regular file", k.name())),
        Err(e) => Some(e.to_string()),
    }
}

fn check_state_file(root: &Root, state: &Path) -> Result<(), Error> {
    let corrupt = |reason: String| Error::Corrupt {
        dir: state.to_path_buf(),
        file: STATE_FILE.into(),
        reason,
    };
    if let Some(why) = not_a_file(root, STATE_FILE) {
        return Err(corrupt(why));
    }
    let bytes = root.read(STATE_FILE).map_err(|e| corrupt(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| corrupt(e.message().trim().replace('\n', " ")))?;
    let layout = table
        .get("layout")
        .and_then(|v| v.as_integer())
        .ok_or_else(|| corrupt("no integer `layout` key".into()))?;
    if layout != LAYOUT_VERSION as i64 {
        return Err(Error::Layout {
            dir: state.to_path_buf(),
            found: layout,
            supported: LAYOUT_VERSION,
        });
    }
    Ok(())
}

/// What a name below /proc/sys can be, before looking it up.
enum SysName<'a> {
    Name(&'a str),
    /// Not a name any entry has (non-UTF-8: every /proc/sys name is ASCII; or
    /// not a valid relative path).
    NoSuchEntry,
    /// Over NAME_MAX no entry can exist; kernels differ in the errno (Linux's
    /// procfs says ENOENT, gVisor ENAMETOOLONG), so the real one answers.
    KernelDecides,
}

fn sys_name(rest: &[u8]) -> SysName<'_> {
    let Ok(rel) = std::str::from_utf8(rest) else {
        return SysName::NoSuchEntry;
    };
    if rel.split('/').any(|c| c.len() > 255) {
        return SysName::KernelDecides;
    }
    if !rel.is_empty() && profile::check_rel_path(rel).is_err() {
        return SysName::NoSuchEntry;
    }
    SysName::Name(rel)
}

/// Reads DIR/index.json through the root (a symlink there is refused, never
/// followed); a missing index is an empty one.
fn read_index(root: &Root, state: &Path) -> Result<IndexFile, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        dir: state.to_path_buf(),
        file: INDEX_FILE.into(),
        reason,
    };
    if let Some(why) = not_a_file(root, INDEX_FILE) {
        return Err(corrupt(why));
    }
    let bytes = match root.read(INDEX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexFile::empty()),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let f: IndexFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if f.layout != LAYOUT_VERSION {
        return Err(Error::Layout {
            dir: state.to_path_buf(),
            found: f.layout as i64,
            supported: LAYOUT_VERSION,
        });
    }
    for k in f.entries.keys() {
        profile::check_rel_path(k).map_err(corrupt)?;
    }
    Ok(f)
}

/// An index for the values found under values/ when index.json was corrupt:
/// a profile entry at its default is a profile entry; anything else is kept
/// as written (so that it stays fake and `diff` shows it), with the profile's
/// value, or its own, as the baseline.
fn rebuilt_index(
    root: &Root,
    profile: &Profile,
    values: &HashMap<String, String>,
) -> BTreeMap<String, IndexEntry> {
    let mut out = BTreeMap::new();
    for (rel, value) in values {
        let entry = match profile.entries.get(rel) {
            Some(p) => IndexEntry {
                source: if *value == p.value || p.dynamic.is_some() {
                    Source::Profile
                } else {
                    Source::Written
                },
                seed: p.value.clone(),
                rule: p.rule.to_string(),
                readonly: p.readonly,
                mode: None,
            },
            None => IndexEntry {
                source: Source::Written,
                seed: value.clone(),
                rule: Rule::infer(value).to_string(),
                readonly: root
                    .lstat(&format!("values/{rel}"))
                    .ok()
                    .flatten()
                    .is_some_and(|st| st.st_mode & 0o222 == 0),
                mode: None,
            },
        };
        out.insert(rel.clone(), entry);
    }
    out
}

fn uname_release() -> Option<String> {
    // SAFETY: utsname is plain data filled by uname(2).
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates release.
    let s = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (!s.is_empty()).then_some(s)
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests;
