//! Ways around the engine that an independent review found (issue 11,
//! follow-up): io_uring, a write-open raced against a symlink swap, a cwd
//! deeper than PATH_MAX, openat2's open_how checks, and removals through
//! `link/`. tests/fixtures/c/escapes.c prints one line per case; each test
//! runs it without k3shim (the kernel's answer: natively on the real
//! /proc/sys/vm, which it only reads or opens without writing; in gVisor on a
//! real directory holding the same file) and under k3shim, and compares.
//! Natively k3shim runs in shadow mode and the host's sysctls are checked
//! unchanged.

mod sandbox;

use sandbox::*;

fn k() -> String {
    k3shim().display().to_string()
}

fn prog() -> String {
    c_fixture("escapes").display().to_string()
}

/// A value the host does not have, so a line that read the host's entry shows.
fn fake_value() -> &'static str {
    match std::fs::read_to_string("/proc/sys/vm/panic_on_oom")
        .unwrap_or_default()
        .trim()
    {
        "2" => "1",
        _ => "2",
    }
}

/// The lines with every "ok VALUE" made "ok <value>", and the values.
fn split_values(out: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut values = Vec::new();
    for l in out.lines() {
        match l.split_once(": ok ") {
            Some((name, v)) => {
                lines.push(format!("{name}: ok <value>"));
                values.push(v.to_string());
            }
            None => lines.push(l.to_string()),
        }
    }
    (lines, values)
}

/// `escapes CASE` without k3shim (on the real /proc/sys/vm) and under k3shim
/// in shadow mode with a fake vm/panic_on_oom: (kernel, shim) stdout.
fn native_pair(case: &str) -> (String, String) {
    let st = scratch(&format!("escapes-{case}"));
    let s = st.join("s").display().to_string();
    let (kd, sd) = (st.join("kernel"), st.join("shim"));
    std::fs::create_dir_all(&kd).unwrap();
    std::fs::create_dir_all(&sd).unwrap();
    let fake = fake_value();
    let set = native(&format!(
        "{k} fakefs init --state {s} --mode shadow >/dev/null && {k} fakefs set --state {s} vm/panic_on_oom {fake} >/dev/null",
        k = k()
    ));
    assert_ok(&set, "fakefs set");
    let kernel = native(&format!(
        "{} {case} /proc/sys/vm panic_on_oom {}",
        prog(),
        kd.display()
    ));
    assert_ok(&kernel, &format!("escapes {case} without k3shim"));
    let shim = native(&format!(
        "{} run --mode shadow --state {s} -- {} {case} /proc/sys/vm panic_on_oom {}",
        k(),
        prog(),
        sd.display()
    ));
    assert_ok(&shim, &format!("escapes {case} under k3shim"));
    // The deep case leaves trees deeper than PATH_MAX, which some tools
    // cannot delete (git worktree remove): gone once both runs passed.
    let _ = std::fs::remove_dir_all(&st);
    (stdout(&kernel), stdout(&shim))
}

/// The same inside gVisor: the kernel's answer on /tmp/ref/vm (gVisor has no
/// vm/panic_on_oom), k3shim's on /proc/sys/vm with the fake value 2.
fn gvisor_pair(case: &str) -> Option<(String, String)> {
    if !have_gvisor() {
        return None;
    }
    let o = gvisor(&format!(
        "set -e; S=/tmp/k3shim-escapes; mkdir -p /tmp/ref/vm /tmp/a /tmp/b; echo 0 > /tmp/ref/vm/panic_on_oom; \
         {k} fakefs init --state $S >/dev/null; {k} fakefs set --state $S vm/panic_on_oom 2 >/dev/null; \
         {p} {case} /tmp/ref/vm panic_on_oom /tmp/a; echo ---; \
         {k} run --state $S -- {p} {case} /proc/sys/vm panic_on_oom /tmp/b",
        k = k(),
        p = prog()
    ));
    assert_ok(&o, &format!("escapes {case} in gVisor"));
    let out = stdout(&o);
    let (kernel, shim) = out.split_once("---\n").expect("both runs printed");
    Some((kernel.to_string(), shim.to_string()))
}

#[track_caller]
fn assert_same_lines_and_fake_values(kernel: &str, shim: &str, fake: &str) {
    let (kl, _) = split_values(kernel);
    let (sl, sv) = split_values(shim);
    assert_eq!(
        sl, kl,
        "under k3shim (left) vs the kernel (right)\n--- k3shim\n{shim}\n--- kernel\n{kernel}"
    );
    let other: Vec<_> = sv.iter().filter(|v| *v != fake && *v != "plain").collect();
    assert!(
        other.is_empty(),
        "these reads got something else than the fake value {fake:?}: {other:?}\n{shim}"
    );
}

// ------------------------------------------------------------ io_uring

/// io_uring's operations open and read files with no syscall the filter
/// sees: io_uring_setup (and enter, register) fail with ENOSYS, as on a
/// kernel without io_uring, so IORING_OP_OPENAT never reaches the real entry.
#[test]
fn io_uring_is_refused_with_enosys_so_its_opens_never_reach_the_real_entry_natively() {
    let before = host_sysctls();
    let (kernel, shim) = native_pair("uring");
    assert!(
        kernel.starts_with("io_uring openat+read: ok ") || kernel.starts_with("io_uring_setup: "),
        "{kernel}"
    );
    let refused = "io_uring_setup: ENOSYS\nio_uring_enter: ENOSYS\n";
    assert_eq!(shim, refused);
    let st = scratch("escapes-uring-none");
    let o = native(&format!(
        "{} run --filter none --mode shadow --state {} -- {} uring /proc/sys/vm panic_on_oom",
        k(),
        st.join("s").display(),
        prog()
    ));
    assert_eq!(stdout(&o), refused, "--filter none: {}", stderr(&o));
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn io_uring_is_refused_with_enosys_in_gvisor() {
    if let Some((_, shim)) = gvisor_pair("uring") {
        assert_eq!(shim, "io_uring_setup: ENOSYS\nio_uring_enter: ENOSYS\n");
    }
}

// ------------------------------------------------------------ openat2's open_how

/// Unknown RESOLVE_* bits, RESOLVE_BENEATH with RESOLVE_IN_ROOT, flags
/// above bit 31, a mode without O_CREAT, O_PATH or O_TMPFILE misuse: EINVAL
/// before the path is looked at, as fs/open.c's build_open_flags answers;
/// sizes as copy_struct_from_user.
#[test]
fn openat2_refuses_an_invalid_open_how_as_the_kernel_does_natively() {
    let before = host_sysctls();
    let (kernel, shim) = native_pair("how");
    assert!(kernel.contains("resolve 0x40: EINVAL\n"), "{kernel}");
    assert_same_lines_and_fake_values(&kernel, &shim, fake_value());
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

/// This gVisor has no openat2: ENOSYS for every open_how, with and without k3shim.
#[test]
fn openat2_with_an_invalid_open_how_in_gvisor_gets_gvisors_answer() {
    if let Some((kernel, shim)) = gvisor_pair("how") {
        assert_same_lines_and_fake_values(&kernel, &shim, "2");
    }
}

// ------------------------------------------------------------ link/ is never followed

/// unlink, unlinkat (with and without AT_REMOVEDIR), rmdir, rename and
/// renameat2 of `link/` act on the link itself, never on what it points to
/// (ENOTDIR), also when the link leads into /proc/sys; nothing is removed.
#[test]
fn removals_and_renames_never_follow_the_last_name_even_with_a_trailing_slash_natively() {
    let before = host_sysctls();
    let (kernel, shim) = native_pair("nofollow");
    assert!(
        kernel.contains("unlink(\"ldir/\"): ENOTDIR\n") && kernel.ends_with("kept: ok\n"),
        "{kernel}"
    );
    assert_eq!(shim, kernel, "under k3shim (left) vs the kernel (right)");
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn removals_and_renames_never_follow_the_last_name_even_with_a_trailing_slash_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_pair("nofollow") {
        assert_eq!(shim, kernel, "under k3shim (left) vs gVisor (right)");
    }
}

// ------------------------------------------------------------ a write-open raced against a swap

/// One thread swaps a symlink between a plain file and the entry while
/// another opens it for writing: whatever k3shim decided at the open's
/// entry, no fd on the real entry is ever handed to the program (checked at
/// the open's exit: closed, EACCES, one warning).
#[test]
fn an_open_for_writing_raced_against_a_symlink_swap_never_gets_the_real_entry_natively() {
    let before = host_sysctls();
    let st = scratch("escapes-race");
    let o = native(&format!(
        "{} run --mode shadow --state {} -- {} race /proc/sys/vm panic_on_oom {} 3",
        k(),
        st.join("s").display(),
        prog(),
        st.display()
    ));
    assert_ok(&o, "escapes race under k3shim");
    assert_eq!(stdout(&o), "race: escapes 0\n", "{}", stderr(&o));
    assert!(
        raced_both_ways(&stderr(&o)),
        "the swap never raced: {}",
        stderr(&o)
    );
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

/// "race: N opens, P of the plain file, ...": the plain file was opened, and not always.
fn raced_both_ways(stderr: &str) -> bool {
    let line = stderr
        .lines()
        .find(|l| l.contains(" opens, "))
        .unwrap_or("");
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    matches!(n.as_slice(), [opens, plains, ..] if *plains > 0 && plains < opens)
}

/// In gVisor on vm/overcommit_memory, a real entry whose writes k3shim takes
/// (overlay mode): the same.
#[test]
fn an_open_for_writing_raced_against_a_symlink_swap_never_gets_the_real_entry_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&format!(
        "mkdir -p /tmp/r && {} run --state /tmp/s -- {} race /proc/sys/vm overcommit_memory /tmp/r 3",
        k(),
        prog()
    ));
    assert_ok(&o, "escapes race in gVisor");
    assert_eq!(stdout(&o), "race: escapes 0\n", "{}", stderr(&o));
    assert!(raced_both_ways(&stderr(&o)), "{}", stderr(&o));
}

// ------------------------------------------------------------ a cwd deeper than PATH_MAX

/// chdir step by step below PATH_MAX's depth (getcwd: ERANGE), then `..` up
/// to the entry, a symlink to its directory, a plain file, from the cwd and
/// from a dirfd: each reaches what the kernel reaches, and the entry is the
/// fake one.
#[test]
fn paths_from_a_cwd_deeper_than_path_max_reach_the_fake_entry_natively() {
    let before = host_sysctls();
    let (kernel, shim) = native_pair("deep");
    assert!(
        kernel.contains("deep cwd, .. up to the entry: ok "),
        "{kernel}"
    );
    assert_same_lines_and_fake_values(&kernel, &shim, fake_value());
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

/// gVisor names a cwd deeper than a page, but no path syscall takes that name.
#[test]
fn paths_from_a_cwd_deeper_than_path_max_reach_the_fake_entry_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_pair("deep") {
        assert_same_lines_and_fake_values(&kernel, &shim, "2");
    }
}

// ------------------------------------------------------------ trace --all

/// `k3shim trace --all` decodes the common calls that take no path as
/// strace does (fds, sizes, PROT_*/MAP_* flags) and names i386 syscalls
/// (`int $0x80`) from i386's own table: i386 getpid (20) and close (6) are
/// never shown as x86_64's writev and lstat.
#[test]
fn trace_all_decodes_common_arguments_and_names_i386_syscalls_from_their_own_table() {
    let st = scratch("escapes-trace");
    let out = st.join("trace.txt");
    let o = native(&format!(
        "{} trace --all -o {} --mode shadow --state {} -- {} int80 x y",
        k(),
        out.display(),
        st.join("s").display(),
        prog()
    ));
    assert_ok(&o, "trace --all");
    assert_eq!(
        stdout(&o),
        "i386 getpid: ok\ni386 close(-1): -9\n",
        "{}",
        stderr(&o)
    );
    let t = std::fs::read_to_string(&out).unwrap();
    let has = |p: &str| t.lines().any(|l| l.contains(p));
    assert!(
        has("] getpid(0x0, ") && has("/* i386 */) = "),
        "i386 getpid:\n{t}"
    );
    assert!(
        has("] close(0xffffffff, 0x0, 0x0, ... /* i386 */) = -1 EBADF"),
        "{t}"
    );
    assert!(!has("] writev(") && !has("] lstat("), "x86_64 names: {t}");
    assert!(
        has("] mmap(NULL, ") && has("PROT_READ") && has("MAP_PRIVATE"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("] mmap(") && l.contains(") = 0x")),
        "addresses in hex: {t}"
    );
    assert!(has("] close(3) = 0"), "{t}");
}

// ------------------------------------------------------------ roots inside /proc, cwds outside the root

/// After chroot("/proc") the program's "/sys/vm/panic_on_oom" is the host's
/// /proc/sys/vm/panic_on_oom (and after chroot("/proc/sys/vm"), its
/// "/panic_on_oom"): served from the fake tree. A cwd or dirfd left outside
/// the new root (chdir("/proc"), then chroot elsewhere) walks the host's
/// tree, where no redirect can be named: a path from there into /proc/sys
/// fails with EACCES (and a warning), never reaching the real entry.
#[test]
fn a_root_inside_proc_serves_the_fake_entry_and_a_cwd_outside_the_root_is_refused_natively() {
    let before = host_sysctls();
    let (kernel, shim) = native_pair("chroot");
    assert_eq!(
        split_values(&kernel).0,
        [
            "chroot parent, /leaf/entry: ok <value>",
            "chroot target, /entry: ok <value>",
            "cwd outside the root, leaf/entry: ok <value>",
            "dirfd outside the root, leaf/entry: ok <value>",
        ],
        "{kernel}"
    );
    let fake = fake_value();
    assert_eq!(
        shim,
        format!(
            "chroot parent, /leaf/entry: ok {fake}\nchroot target, /entry: ok {fake}\n\
             cwd outside the root, leaf/entry: EACCES\ndirfd outside the root, leaf/entry: EBADF\n"
        )
    );
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn a_root_inside_proc_serves_the_fake_entry_and_a_cwd_outside_the_root_is_refused_in_gvisor() {
    if let Some((kernel, shim)) = gvisor_pair("chroot") {
        assert_eq!(split_values(&kernel).1, ["0", "0", "0", "0"], "{kernel}");
        assert_eq!(
            shim,
            "chroot parent, /leaf/entry: ok 2\nchroot target, /entry: ok 2\n\
             cwd outside the root, leaf/entry: EACCES\ndirfd outside the root, leaf/entry: EBADF\n"
        );
    }
}
