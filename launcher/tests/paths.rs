//! Path resolution agrees with the kernel's (issue 11): symlinks on the way,
//! the calling thread's own cwd and fd table, openat2's RESOLVE_* flags,
//! what getcwd and /proc/self/{cwd,fd} report, and i386/x32 syscalls.
//!
//! tests/fixtures/c/paths.c prints one line per case; each test runs it
//! without k3shim (the kernel's answer: natively on the real /proc/sys/vm,
//! read only; in gVisor, which lacks the entries, on a real directory holding
//! the same file) and under k3shim, and compares the lines, and checks that
//! every value read under k3shim is the fake one. Natively k3shim runs in
//! shadow mode and the host's sysctls are checked unchanged.

mod sandbox;

use sandbox::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// tests/fixtures/c/paths.c, built once (into its own directory: other test
/// binaries build the other fixtures concurrently).
fn paths_prog() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = ws().join("target/fixtures/c-paths");
        std::fs::create_dir_all(&out).unwrap();
        let bin = out.join("paths");
        let tmp = out.join(format!("paths.{}", std::process::id()));
        let o = Command::new("cc")
            .args(["-O2", "-Wall", "-pthread", "-o"])
            .arg(&tmp)
            .arg(ws().join("tests/fixtures/c/paths.c"))
            .output()
            .expect("run cc");
        assert_ok(&o, "cc tests/fixtures/c/paths.c");
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
    .clone()
}

fn k() -> String {
    k3shim().display().to_string()
}

/// The value k3shim serves for vm/panic_on_oom in these tests: one the host
/// does not have, so a line that reads the host's entry shows.
fn fake_value() -> &'static str {
    match std::fs::read_to_string("/proc/sys/vm/panic_on_oom")
        .unwrap_or_default()
        .trim()
    {
        "2" => "1",
        _ => "2",
    }
}

/// The lines with the value after "ok " replaced (fake and real values differ by design).
fn comparable(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| match l.split_once(": ok ") {
            Some((name, v)) if !matches!(v, "reg" | "dir" | "lnk" | "other") => {
                format!("{name}: ok <value>")
            }
            _ => l.to_string(),
        })
        .collect()
}

/// (case, value) of every "ok VALUE" line.
fn values(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(": ok "))
        .filter(|(_, v)| !matches!(*v, "reg" | "dir" | "lnk" | "other"))
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn assert_same_as_kernel(shim: &str, kernel: &str, fake: &str) {
    assert_eq!(
        comparable(shim),
        comparable(kernel),
        "under k3shim (left) vs the kernel (right)\n--- k3shim\n{shim}\n--- kernel\n{kernel}"
    );
    let wrong: Vec<_> = values(shim)
        .into_iter()
        .filter(|(_, v)| v != fake)
        .collect();
    assert!(
        wrong.is_empty(),
        "these cases read something else than the fake value {fake:?}: {wrong:?}\n{shim}"
    );
}

/// Runs `paths CASE` natively on the real /proc/sys/vm (the kernel's answer)
/// and under k3shim in shadow mode with a fake value, and compares.
fn native_case(case: &str) {
    let before = host_sysctls();
    let st = scratch(&format!("paths-{case}"));
    let s = st.join("s");
    let (kdir, sdir) = (st.join("kernel"), st.join("shim"));
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::create_dir_all(&sdir).unwrap();
    let fake = fake_value();
    let set = native(&format!(
        "{} fakefs init --state {} --mode shadow && {} fakefs set --state {} vm/panic_on_oom {fake}",
        k(),
        s.display(),
        k(),
        s.display()
    ));
    assert_ok(&set, "fakefs set");
    let p = paths_prog();
    let kernel = native(&format!(
        "{} {case} /proc/sys/vm panic_on_oom {}",
        p.display(),
        kdir.display()
    ));
    assert_ok(&kernel, &format!("paths {case} without k3shim"));
    let shim = native(&format!(
        "{} run --mode shadow --state {} -- {} {case} /proc/sys/vm panic_on_oom {}",
        k(),
        s.display(),
        p.display(),
        sdir.display()
    ));
    assert_ok(&shim, &format!("paths {case} under k3shim"));
    assert_same_as_kernel(&stdout(&shim), &stdout(&kernel), fake);
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

/// The same inside gVisor: the kernel's answer comes from a real directory
/// holding the file (gVisor has no vm/panic_on_oom), k3shim's from /proc/sys.
fn gvisor_case(case: &str) -> Option<(String, String)> {
    if !have_gvisor() {
        return None;
    }
    let p = paths_prog();
    let k = k();
    let script = format!(
        "set -e; S=/tmp/k3shim-paths; mkdir -p /tmp/ref/vm /tmp/a /tmp/b; echo 0 > /tmp/ref/vm/panic_on_oom; \
         {k} fakefs init --state $S >/dev/null; {k} fakefs set --state $S vm/panic_on_oom 2 >/dev/null; \
         {p} {case} /tmp/ref/vm panic_on_oom /tmp/a; echo ---; \
         {k} run --state $S -- {p} {case} /proc/sys/vm panic_on_oom /tmp/b",
        p = p.display()
    );
    let o = gvisor(&script);
    assert_ok(&o, &format!("paths {case} in gVisor"));
    let out = stdout(&o);
    let (kernel, shim) = out.split_once("---\n").expect("both runs printed");
    Some((kernel.to_string(), shim.to_string()))
}

// ------------------------------------------------------------ threads (item 3)

#[test]
fn relative_paths_use_the_calling_threads_cwd_and_fd_table_natively() {
    native_case("threads");
}

#[test]
fn relative_paths_use_the_calling_threads_cwd_and_fd_table_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_case("threads") {
        assert_same_as_kernel(&shim, &kernel, "2");
    }
}

// ------------------------------------------------------------ misc (item 15)

#[test]
fn inotify_paths_statx_of_an_fd_and_non_empty_paths_with_at_empty_path_natively() {
    native_case("misc");
}

#[test]
fn inotify_paths_statx_of_an_fd_and_non_empty_paths_with_at_empty_path_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_case("misc") {
        // This gVisor refuses AT_NO_AUTOMOUNT (EINVAL); k3shim's statx-no-automount
        // fix drops the flag, also when the path is empty (coreutils `stat -`).
        let fixed = "statx(fd, \"\", AT_EMPTY_PATH|AT_NO_AUTOMOUNT): ok reg";
        assert!(shim.lines().any(|l| l == fixed), "{shim}");
        let kernel = kernel.replace(
            "statx(fd, \"\", AT_EMPTY_PATH|AT_NO_AUTOMOUNT): EINVAL",
            fixed,
        );
        assert_same_as_kernel(&shim, &kernel, "2");
    }
}

// ------------------------------------------------------------ i386 and x32 (item 6)

/// tests/fixtures/c/cat32.S: a real 32-bit program.
fn cat32() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = ws().join("target/fixtures/c-paths");
        std::fs::create_dir_all(&out).unwrap();
        let obj = out.join(format!("cat32.{}.o", std::process::id()));
        let tmp = out.join(format!("cat32.{}", std::process::id()));
        let o = Command::new("as")
            .arg("--32")
            .arg("-o")
            .arg(&obj)
            .arg(ws().join("tests/fixtures/c/cat32.S"))
            .output()
            .expect("run as (binutils)");
        assert_ok(&o, "as --32 tests/fixtures/c/cat32.S");
        let o = Command::new("ld")
            .args(["-m", "elf_i386", "-static", "-o"])
            .arg(&tmp)
            .arg(&obj)
            .output()
            .expect("run ld (binutils)");
        assert_ok(&o, "ld -m elf_i386");
        let bin = out.join("cat32");
        std::fs::rename(&tmp, &bin).unwrap();
        let _ = std::fs::remove_file(&obj);
        bin
    })
    .clone()
}

/// The lines k3shim gives for the int80 and x32 cases: i386 and x32 path
/// syscalls fail (EPERM; ENOSYS, as on a kernel without x32), other i386
/// syscalls run.
const REFUSED: &str = "i386 open via int $0x80: EPERM\ni386 getpid via int $0x80: ok\nx32 open: ENOSYS\nx32 openat: ENOSYS\n";

#[test]
fn i386_and_x32_path_syscalls_fail_cleanly_and_never_reach_the_real_entry_natively() {
    let before = host_sysctls();
    let st = scratch("abi");
    let s = st.join("s").display().to_string();
    let p = paths_prog().display().to_string();
    // The kernel itself runs an i386 open from 64-bit code.
    let kernel = native(&format!("{p} int80 /proc/sys/vm panic_on_oom"));
    assert!(
        stdout(&kernel).starts_with("i386 open via int $0x80: ok "),
        "{}",
        stdout(&kernel)
    );
    for filter in ["paths", "none"] {
        let o = native(&format!(
            "{k} run --filter {filter} --mode shadow --state {s} -- {p} int80 /proc/sys/vm panic_on_oom; \
             {k} run --filter {filter} --mode shadow --state {s} -- {p} x32 /proc/sys/vm panic_on_oom",
            k = k()
        ));
        assert_ok(&o, &format!("int80 and x32 under --filter {filter}"));
        assert_eq!(stdout(&o), REFUSED, "--filter {filter}\n{}", stderr(&o));
        // A 32-bit program exec'd by the command: its open fails with EPERM
        // (cat32 exits with the errno), and k3shim says why.
        let tl = st.join(format!("tl-{filter}.jsonl"));
        let o = native(&format!(
            "{k} run --filter {filter} --mode shadow --state {s} --timeline {} -- sh -c '{} /proc/sys/vm/panic_on_oom; echo exit=$?'",
            tl.display(),
            cat32().display(),
            k = k()
        ));
        assert_eq!(stdout(&o), "exit=1\n", "--filter {filter}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is a 32-bit (i386) program: k3shim cannot follow its paths"),
            "{}",
            stderr(&o)
        );
        let tl = std::fs::read_to_string(&tl).unwrap();
        assert!(
            tl.contains("\"warning\"") && tl.contains("32-bit (i386)"),
            "{tl}"
        );
    }
    // As the command itself it is refused before it runs, with the same reason.
    let o = native(&format!(
        "{} run --mode shadow --state {s} -- {} /proc/sys/vm/panic_on_oom",
        k(),
        cat32().display()
    ));
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("i386 32-bit program") && stderr(&o).contains("EPERM for i386"),
        "{}",
        stderr(&o)
    );
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

/// gVisor runs no i386 code (an `int $0x80` is taken as a 64-bit syscall,
/// 32-bit programs do not load) and has no x32: under k3shim the same.
#[test]
fn i386_and_x32_syscalls_in_gvisor_behave_as_gvisor_does() {
    if !have_gvisor() {
        return;
    }
    let p = paths_prog().display().to_string();
    for filter in ["paths", "none"] {
        let o = gvisor(&format!(
            "for c in int80 x32; do {p} $c /proc/sys/vm panic_on_oom; done; echo ---; \
             for c in int80 x32; do {k} run --filter {filter} --state /tmp/s -- {p} $c /proc/sys/vm panic_on_oom; done",
            k = k()
        ));
        let out = stdout(&o);
        let (kernel, shim) = out.split_once("---\n").expect("both runs");
        assert_eq!(shim, kernel, "--filter {filter}: {}", stderr(&o));
        assert!(!shim.contains(": ok "), "nothing is read: {shim}");
    }
}
// ------------------------------------------------------------ symlinks (item 2)

#[test]
fn symlinks_into_proc_sys_are_followed_as_the_kernel_follows_them_natively() {
    native_case("links");
}

#[test]
fn symlinks_into_proc_sys_are_followed_as_the_kernel_follows_them_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_case("links") {
        // The kernel's run read its own directory's "0"; k3shim's must read the fake "2".
        assert_same_as_kernel(&shim, &kernel, "2");
    }
}

// ------------------------------------------------------------ openat2 (item 15)

/// openat2's RESOLVE_* flags on a redirected path give the kernel's answer
/// for the program's own path (EXDEV, ELOOP, ENOENT under RESOLVE_IN_ROOT...),
/// and a larger open_how with zero extra bytes is redirected too.
#[test]
fn openat2_resolve_flags_are_honoured_as_the_kernel_does_natively() {
    native_case("resolve");
}

/// This gVisor has no openat2 (ENOSYS, whatever the flags): k3shim gives a
/// redirected path the same answer (probed at start-up, not assumed).
#[test]
fn openat2_resolve_flags_in_gvisor_get_gvisors_answers() {
    if let Some((kernel, shim)) = gvisor_case("resolve") {
        assert!(
            kernel.contains("RESOLVE_BENEATH absolute: ENOSYS"),
            "{kernel}"
        );
        assert_same_as_kernel(&shim, &kernel, "2");
    }
}

// ------------------------------------------------------------ getcwd and /proc/self (item 15)

/// After a redirected chdir or open, getcwd, /proc/self/cwd and
/// /proc/self/fd/N report the path the program used, not the state
/// directory (truncated readlink and a short getcwd buffer included).
#[test]
fn getcwd_and_proc_self_links_show_the_programs_paths_natively() {
    native_case("cwd");
    let st = scratch("pwd");
    let o = native(&format!(
        "{} run --mode shadow --state {} -- sh -c 'cd /proc/sys/vm && pwd -P && /bin/pwd'",
        k(),
        st.join("s").display()
    ));
    assert_eq!(stdout(&o), "/proc/sys/vm\n/proc/sys/vm\n", "{}", stderr(&o));
}

#[test]
fn getcwd_and_proc_self_links_show_the_programs_paths_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_case("cwd") {
        assert_same_as_kernel(&shim, &kernel, "2");
    }
    if have_gvisor() {
        let o = gvisor(&format!(
            "{} run --state /tmp/s -- sh -c 'cd /proc/sys/net/bridge && pwd -P && /bin/pwd'",
            k()
        ));
        assert_eq!(
            stdout(&o),
            "/proc/sys/net/bridge\n/proc/sys/net/bridge\n",
            "{}",
            stderr(&o)
        );
    }
}

// ------------------------------------------------------------ chroot and pivot_root (item 15)

/// The lines of `paths chroot*` when the entry reads `read` and a write of
/// `wrote` is read back.
fn in_new_root_lines(read: &str, wrote: &str) -> String {
    format!(
        "in the new root, read: ok {read}\nin the new root, stat: ok reg\nin the new root, access: ok\n\
         in the new root, write: ok\nin the new root, read back: ok {wrote}\nchild: ok\n"
    )
}

/// As a container runtime writes a container's sysctls: a new mount namespace
/// with its own procfs, chroot or pivot_root, then read, stat, access, write and read back
/// /proc/sys/vm/panic_on_oom: in the same pid namespace (the state directory is
/// named through /proc/TRACER/root) and in a new one, where k3shim cannot be
/// seen (the open becomes a memfd that k3shim fills; the write is validated
/// and kept as any other).
#[test]
fn after_chroot_and_in_a_new_pid_namespace_redirects_still_reach_the_fake_entry_natively() {
    let before = host_sysctls();
    let host = before
        .iter()
        .find(|(p, _)| p == "vm/panic_on_oom")
        .map(|(_, v)| v.trim().to_string())
        .unwrap();
    let fake = fake_value();
    for case in ["chroot", "chroot-pidns", "pivot", "pivot-pidns"] {
        let st = scratch(&format!("paths-{case}"));
        let s = st.join("s").display().to_string();
        let root = st.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let o = native(&format!(
            "{k} fakefs init --state {s} --mode shadow >/dev/null && {k} fakefs set --state {s} vm/panic_on_oom {fake} >/dev/null && \
             {k} run --mode shadow --state {s} -- {p} {case} /proc/sys/vm panic_on_oom {r} {host} && \
             {k} fakefs get --state {s} vm/panic_on_oom",
            k = k(),
            p = paths_prog().display(),
            r = root.display()
        ));
        // The value written is the host's own: should it ever leak, nothing changes.
        assert_eq!(
            stdout(&o),
            format!("{}{host}\n", in_new_root_lines(fake, &host)),
            "{case}: {}",
            stderr(&o)
        );
    }
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn after_chroot_and_in_a_new_pid_namespace_redirects_still_reach_the_fake_entry_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    // pivot_root fails with EINVAL in this gVisor (even alone): chroot only.
    for case in ["chroot", "chroot-pidns"] {
        let o = gvisor(&format!(
            "S=/tmp/k3shim-{case}; {k} fakefs init --state $S >/dev/null; {k} fakefs set --state $S vm/panic_on_oom 2 >/dev/null; \
             mkdir -p /tmp/plain-{case} /tmp/root-{case}; {p} {case} /proc/sys/vm panic_on_oom /tmp/plain-{case}; echo ---; \
             {k} run --state $S -- {p} {case} /proc/sys/vm panic_on_oom /tmp/root-{case} 1; \
             {k} fakefs get --state $S vm/panic_on_oom",
            k = k(),
            p = paths_prog().display(),
        ));
        let out = stdout(&o);
        let (plain, shim) = out.split_once("---\n").expect("both runs");
        assert!(
            plain.starts_with("in the new root, read: ENOENT"),
            "gVisor alone has no such entry: {plain}"
        );
        assert_eq!(
            shim,
            format!("{}1\n", in_new_root_lines("2", "1")),
            "{case}: {}",
            stderr(&o)
        );
    }
}
