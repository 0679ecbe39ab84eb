//! Property tests: `shim::resolve::resolve` agrees with the kernel's own path
//! resolution on a real directory tree without symlinks (lexically), and on
//! one with symlinks of every kind (with the file system looked up as the
//! tracer does, `symlinks_on_the_way_match_the_kernel`).
//!
//! Paths are built from the components {".", "..", "a", "b", "", "sys"}; the
//! tree holds directories for most of those names up to depth 3, one regular
//! file (`b/sys`) and one missing name (`sys/b`), so walks through files and
//! missing names happen too. Whenever the kernel resolves a path
//! (`std::fs::canonicalize` succeeds), the lexical result must be the same
//! absolute path. When the kernel refuses (ENOENT/ENOTDIR through a missing or
//! non-directory component followed by `..`), the lexical result may name an
//! existing file: that divergence is documented by
//! `lexical_dotdot_through_a_missing_directory_is_a_known_divergence`.
//!
//! Case counts: PROPTEST_CASES (default 256 per property here; 1024 for the
//! cheap resolve properties); K3SHIM_SOAK_SECS > 0 multiplies them by 20.

use proptest::prelude::*;
use shim::resolve::{resolve, Base, Lookup, PathKind};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Cases for one property: PROPTEST_CASES, else `default`; x20 when soaking.
fn cases(default: u32) -> u32 {
    let base = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let soak = std::env::var("K3SHIM_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if soak > 0 {
        base.saturating_mul(20)
    } else {
        base
    }
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The tree, built once: `<tmp>/root/{a,b,sys}/{a,b,sys}/{a,b,sys}` minus
/// `sys/b` (missing), with `b/sys` a regular file.
fn tree() -> &'static PathBuf {
    static T: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &T.get_or_init(|| {
        let td = tempfile::tempdir().expect("tempdir");
        // Canonical, so that the temp dir's own path has no symlink in it.
        let root = std::fs::canonicalize(td.path()).unwrap().join("root");
        let names = ["a", "b", "sys"];
        for x in names {
            for y in names {
                for z in names {
                    let rel = format!("{x}/{y}/{z}");
                    if rel.starts_with("sys/b") || rel.starts_with("b/sys") {
                        continue;
                    }
                    std::fs::create_dir_all(root.join(rel)).unwrap();
                }
            }
        }
        std::fs::create_dir_all(root.join("sys")).unwrap();
        std::fs::write(root.join("b/sys"), b"file").unwrap();
        (td, root)
    })
    .1
}

/// A Lookup backed by the real file system: the "process" has its cwd at
/// `cwd`, and fd N names `fds[N]`.
struct Real {
    cwd: PathBuf,
    fds: Vec<PathBuf>,
}

impl Lookup for Real {
    fn cwd(&mut self, _pid: i32) -> Option<Vec<u8>> {
        Some(self.cwd.as_os_str().as_bytes().to_vec())
    }
    fn fd_path(&mut self, _pid: i32, fd: i32) -> Option<Vec<u8>> {
        self.fds
            .get(fd as usize)
            .map(|p| p.as_os_str().as_bytes().to_vec())
    }
    /// Like the launcher for /proc/sys, it knows the paths of its own tree.
    fn kind(&mut self, path: &[u8]) -> Option<PathKind> {
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        if !p.starts_with(tree()) {
            return None;
        }
        Some(match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => PathKind::Dir,
            Ok(_) => PathKind::File,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => PathKind::NotDir,
            Err(_) => PathKind::Missing,
        })
    }
}

fn component() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("."),
        Just(".."),
        Just("a"),
        Just("b"),
        Just(""),
        Just("sys")
    ]
}

/// A relative path of 0..10 components (empty components make `//`), with an
/// optional trailing slash.
fn rel_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(component(), 0..10), any::<bool>()).prop_map(|(v, slash)| {
        let mut s = v.join("/");
        if slash && !s.is_empty() {
            s.push('/');
        }
        s
    })
}

/// Where a relative path starts inside the tree.
fn base_dir() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(""),
        Just("a"),
        Just("a/b"),
        Just("sys"),
        Just("sys/a/sys"),
        Just("b/a")
    ]
}

fn kernel(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

fn lexical(raw: &str, base: Base, lk: &mut Real) -> Result<PathBuf, i32> {
    resolve(raw.as_bytes(), base, 1, 1, true, lk).expect("a known base always resolves")
}

/// Our answer against the kernel's for `path` (the same spelling, resolved by
/// realpath): the same directory, or the same errno when we fail it. The
/// kernel may fail where we do not: a missing last name is the syscall's own
/// ENOENT, which the resolver leaves to it.
fn agrees(ours: &Result<PathBuf, i32>, path: &Path) -> Result<(), TestCaseError> {
    match (ours, std::fs::canonicalize(path)) {
        (Ok(o), Ok(k)) => prop_assert_eq!(o, &k),
        (Err(e), Err(k)) => prop_assert_eq!(Some(*e), k.raw_os_error(), "errno for {:?}", path),
        (Err(e), Ok(k)) => prop_assert!(
            false,
            "we fail {:?} with {} where the kernel finds {:?}",
            path,
            e,
            k
        ),
        (Ok(_), Err(_)) => {}
    }
    Ok(())
}

fn is_normal(p: &Path) -> bool {
    let b = p.as_os_str().as_bytes();
    b.first() == Some(&b'/')
        && (b == b"/" || !b.ends_with(b"/"))
        && !b.windows(2).any(|w| w == b"//")
        && p.components().all(|c| {
            !matches!(
                c,
                std::path::Component::CurDir | std::path::Component::ParentDir
            )
        })
}

proptest! {
    #![proptest_config(config(1024))]

    /// openat(AT_FDCWD, rel) with the cwd somewhere in the tree.
    #[test]
    fn relative_to_cwd_matches_the_kernel(base in base_dir(), rel in rel_path()) {
        let cwd = tree().join(base);
        let mut lk = Real { cwd: cwd.clone(), fds: vec![] };
        let ours = lexical(&rel, Base::Cwd, &mut lk);
        if let Ok(o) = &ours {
            prop_assert!(is_normal(o), "{o:?} is not normalized");
        }
        agrees(&ours, &cwd.join(&rel))?;
    }

    /// openat(dirfd, rel): the base comes from the dirfd, not the cwd.
    #[test]
    fn relative_to_a_dirfd_matches_the_kernel(base in base_dir(), rel in rel_path()) {
        let dir = tree().join(base);
        let mut lk = Real { cwd: PathBuf::from("/nonexistent-cwd"), fds: vec![PathBuf::new(), PathBuf::new(), PathBuf::new(), dir.clone()] };
        let ours = lexical(&rel, Base::Fd(3), &mut lk);
        agrees(&ours, &dir.join(&rel))?;
    }

    /// An absolute path ignores cwd and dirfd, and `..` above / stays at /.
    #[test]
    fn absolute_paths_match_the_kernel(pre in prop::collection::vec(prop_oneof![Just(".."), Just("."), Just("")], 0..4), rel in rel_path()) {
        let mut raw = String::from("/");
        for p in &pre {
            raw.push_str(p);
            raw.push('/');
        }
        raw.push_str(tree().to_str().unwrap().trim_start_matches('/'));
        raw.push('/');
        raw.push_str(&rel);
        let mut lk = Real { cwd: PathBuf::from("/nonexistent-cwd"), fds: vec![] };
        let ours = lexical(&raw, Base::Fd(77), &mut lk);
        agrees(&ours, Path::new(&raw))?;
    }

    /// /proc/self/fd/N/rel: the magic link is followed as the kernel does.
    #[test]
    fn proc_fd_magic_links_match_the_kernel(base in base_dir(), rel in rel_path()) {
        let dir = tree().join(base);
        let f = std::fs::File::open(&dir).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let me = std::process::id() as i32;
        let mut lk = RealProc;
        for spelling in [format!("/proc/self/fd/{fd}/{rel}"), format!("/proc/{me}/fd/{fd}/{rel}"), format!("/proc/thread-self/fd/{fd}/{rel}")] {
            // thread-self's tid must be ours: pass gettid.
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() };
            let ours = resolve(spelling.as_bytes(), Base::Cwd, me, tid, true, &mut lk).unwrap().expect("no kinds known here");
            if let Some(k) = kernel(Path::new(&spelling)) {
                prop_assert_eq!(&ours, &k, "{}", spelling);
            }
        }
        drop(f);
    }

    /// Never panics, and always gives an absolute, normalized path, whatever
    /// the bytes (non-UTF-8, NUL-free junk, very long).
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), any::<u8>()], 0..600)) {
        let mut lk = Real { cwd: PathBuf::from("/x/y"), fds: vec![PathBuf::from("/z")] };
        for base in [Base::Cwd, Base::Fd(0), Base::Fd(9)] {
            if let Some(Ok(p)) = resolve(&raw, base, 1, 1, raw.len() % 2 == 0, &mut lk) {
                prop_assert!(is_normal(&p) || raw.contains(&0), "{p:?}");
            }
        }
    }
}

/// Lookup through this process's real /proc (cwd and fds).
struct RealProc;

impl Lookup for RealProc {
    fn cwd(&mut self, pid: i32) -> Option<Vec<u8>> {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .map(|p| p.into_os_string().into_encoded_bytes())
    }
    fn fd_path(&mut self, pid: i32, fd: i32) -> Option<Vec<u8>> {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|p| p.into_os_string().into_encoded_bytes())
    }
}

#[test]
fn dotdot_through_a_missing_directory_or_a_file_fails_as_in_the_kernel() {
    // The kernel walks `sys/b` (missing) or `b/sys` (a file) before it sees
    // `..`; folding alone would drop them and name `sys/a`, which exists.
    // With the kinds of its paths known (the launcher knows /proc/sys), the
    // resolver fails them with the kernel's errno.
    let root = tree();
    let mut lk = Real {
        cwd: root.clone(),
        fds: vec![],
    };
    for (rel, errno) in [
        ("sys/b/../a", libc::ENOENT),
        ("b/sys/../a", libc::ENOTDIR),
        ("b/sys/", libc::ENOTDIR),
        ("b/sys/.", libc::ENOTDIR),
    ] {
        let kernel_errno = std::fs::canonicalize(root.join(rel))
            .err()
            .and_then(|e| e.raw_os_error());
        assert_eq!(kernel_errno, Some(errno), "{rel}: the kernel refuses");
        assert_eq!(lexical(rel, Base::Cwd, &mut lk), Err(errno), "{rel}");
    }
}

/// A tree with symlinks of every kind, built once: `<tmp>/links/{a/b/, f}`
/// and links to them (relative, absolute, to a file, up, a loop, dangling, a
/// chain through `..`).
fn link_tree() -> &'static PathBuf {
    static T: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &T.get_or_init(|| {
        let td = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(td.path()).unwrap().join("links");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("f"), b"file").unwrap();
        std::fs::write(root.join("a/b/f"), b"file").unwrap();
        let l = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        l("a", "la");
        l(root.join("a/b").to_str().unwrap(), "lab");
        l("f", "lf");
        l("..", "lup");
        l("lloop", "lloop");
        l("missing", "ldang");
        l("a/../la/b", "lchain");
        l("../la", "a/lback");
        (td, root)
    })
    .1
}

fn link_component() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("."),
        Just(".."),
        Just("a"),
        Just("b"),
        Just("f"),
        Just("la"),
        Just("lab"),
        Just("lf"),
        Just("lup"),
        Just("lloop"),
        Just("ldang"),
        Just("lchain"),
        Just("lback"),
        Just("")
    ]
}

/// Lookup with the real file system behind it (the tracer's lstat).
struct RealLinks {
    cwd: PathBuf,
}

impl Lookup for RealLinks {
    fn cwd(&mut self, _pid: i32) -> Option<Vec<u8>> {
        Some(self.cwd.as_os_str().as_bytes().to_vec())
    }
    fn fd_path(&mut self, _pid: i32, _fd: i32) -> Option<Vec<u8>> {
        None
    }
    fn lstat(&mut self, path: &[u8]) -> shim::resolve::Node {
        shim::fsnode::lstat(path)
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// With symlinks on the way, the walk ends where the kernel's does
    /// (realpath), or leaves the path to the kernel where the kernel fails it
    /// (nothing is served here, so it never answers an errno itself).
    #[test]
    fn symlinks_on_the_way_match_the_kernel(v in prop::collection::vec(link_component(), 1..8), slash in any::<bool>()) {
        let mut rel = v.join("/");
        if slash && !rel.is_empty() {
            rel.push('/');
        }
        let root = link_tree();
        let mut lk = RealLinks { cwd: root.clone() };
        let ours = resolve(rel.as_bytes(), Base::Cwd, 1, 1, true, &mut lk);
        prop_assert!(!matches!(ours, Some(Err(_))), "{rel}: {ours:?}");
        if let Some(k) = kernel(&root.join(&rel)) {
            prop_assert_eq!(ours, Some(Ok(k)), "{}", rel);
        }
    }
}
