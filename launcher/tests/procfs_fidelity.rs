//! What a program sees of /proc/sys under k3shim is what Linux shows it:
//! errnos of changes inside the tree, permission checks by the caller's
//! credentials, how writes are parsed, stat metadata. Each case runs the
//! same program (tests/fixtures/c/procfs_ops.c) on the real kernel and under
//! k3shim, as root and as nobody, and compares the answers line by line.
//!
//! The kernel's answers come from net.* entries in a private network
//! namespace (`unshare -n`): writes there never reach the host's sysctls.
//! Under k3shim the same script runs in shadow mode natively, and in overlay
//! and shadow mode inside gVisor, where Linux's answers are still the
//! reference (README: where this gVisor differs, k3shim follows Linux).

mod sandbox;

use sandbox::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the answer under k3shim may differ from Linux's, and why (each one
/// is a divergence README lists).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Compared everywhere.
    No,
    /// Differs everywhere k3shim serves the entry.
    Always(&'static str),
    /// Differs inside gVisor only (the kernel answers it there).
    InGvisor(&'static str),
}

const DIR_META: Known = Known::Always("directories stat with the state directory's nlink and size");
const FD_META: Known = Known::Always("an fd of a fake entry is its value file (fstat, F_GETFL)");
const READ_POS: Known = Known::Always("reads at a non-zero position return the rest of the value");
const UTIME_TIMES: Known =
    Known::Always("utime with explicit times by a non-owner: EACCES, not EPERM");
const TRAILING_SLASH: Known =
    Known::Always("the engine follows a symlink before a trailing slash in unlink/rmdir");
const BOTH_IN_PROC: Known =
    Known::InGvisor("a rename or link between two /proc/sys names is gVisor's own answer");

/// One operation a line (procfs_ops's syntax); Z is the scratch directory
/// with `file` and the symlink `l -> /proc/sys/net/core`.
const OPS: &[(&str, Known)] = &[
    // Seed known values first: inside gVisor the real ones differ.
    ("write /proc/sys/net/core/somaxconn 4096", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_port_range 32768\\s60999",
        Known::No,
    ),
    ("stat /proc/sys/net/core/somaxconn", Known::No),
    ("stat /proc/sys/net/core", DIR_META),
    ("stat /proc/sys", DIR_META),
    ("fstat /proc/sys/net/core/somaxconn r", FD_META),
    ("getfl /proc/sys/net/core/somaxconn r", FD_META),
    ("getfl /proc/sys/net/core/somaxconn w", FD_META),
    ("open /proc/sys/net/core/somaxconn r,direct", Known::No),
    ("open /proc/sys/net/core/somaxconn w,direct", Known::No),
    ("open /proc/sys/net/core r,direct,dir", Known::No),
    ("open /proc/sys/net/core/somaxconn r,path,direct", Known::No),
    ("open /proc/sys/net/core/nonexistent creat,w", Known::No),
    ("open /proc/sys/net/core/somaxconn creat,w", Known::No),
    ("open /proc/sys/net/core/somaxconn creat,excl,w", Known::No),
    ("open /proc/sys/net/core/somaxconn w,trunc", Known::No),
    ("open /proc/sys/net/core/somaxconn w,append", Known::No),
    ("open /proc/sys/net/core w", Known::No),
    ("mkdir /proc/sys/net/core/newdir", Known::No),
    ("mkdir /proc/sys/net/core", Known::No),
    ("mknod /proc/sys/net/core/newnod", Known::No),
    ("symlink /x /proc/sys/net/core/newlink", Known::No),
    ("symlink /x /proc/sys/net/core/somaxconn", Known::No),
    ("rename /proc/sys/net/core/somaxconn Z/moved", Known::No),
    ("rename Z/file /proc/sys/net/core/somaxconn", Known::No),
    ("rename Z/file /proc/sys/net/core/newname", Known::No),
    ("rename /proc/sys/net/core/nonexistent Z/moved", Known::No),
    ("rename /proc/sys/net/nonexistentdir/x Z/moved", Known::No),
    (
        "rename Z/nonexistent /proc/sys/net/core/somaxconn",
        Known::No,
    ),
    ("rename /proc/sys/net/core Z/moved", Known::No),
    (
        "rename /proc/sys/net/core/somaxconn /proc/sys/net/core/newname",
        BOTH_IN_PROC,
    ),
    ("link /proc/sys/net/core/somaxconn Z/hard", Known::No),
    ("link /proc/sys/net/core/somaxconn Z/file", Known::No),
    ("link /proc/sys/net/core/nonexistent Z/hard", Known::No),
    ("link Z/file /proc/sys/net/core/newname", Known::No),
    ("link Z/file /proc/sys/net/core/somaxconn", Known::No),
    (
        "link /proc/sys/net/core/somaxconn /proc/sys/net/core/newname",
        BOTH_IN_PROC,
    ),
    ("unlink /proc/sys/net/core/somaxconn", Known::No),
    ("unlink /proc/sys/net/core/nonexistent", Known::No),
    ("unlink /proc/sys/net/core", Known::No),
    ("unlink /proc/sys/net/core/", Known::No),
    ("unlink /proc/sys/net/core/somaxconn/", Known::No),
    ("rmdir /proc/sys/net/core", Known::No),
    ("rmdir /proc/sys/net/core/somaxconn", Known::No),
    ("rmdir /proc/sys/net/core/nonexistent", Known::No),
    ("rmdir /proc/sys", Known::No),
    ("rmdir Z/l/", TRAILING_SLASH),
    ("unlink Z/l/", TRAILING_SLASH),
    ("chmod /proc/sys/net/core/somaxconn 600", Known::No),
    ("chmod /proc/sys/net/core 700", Known::No),
    ("chown /proc/sys/net/core/somaxconn 0", Known::No),
    ("truncate /proc/sys/net/core/somaxconn 0", Known::No),
    ("truncate /proc/sys/net/core 0", Known::No),
    ("utime /proc/sys/net/core/somaxconn", Known::No),
    ("utimeset /proc/sys/net/core/somaxconn", UTIME_TIMES),
    ("utime /proc/sys/net/core", Known::No),
    ("setxattr /proc/sys/net/core/somaxconn", Known::No),
    ("getxattr /proc/sys/net/core/somaxconn", Known::No),
    ("listxattr /proc/sys/net/core/somaxconn", Known::No),
    ("removexattr /proc/sys/net/core/somaxconn", Known::No),
    ("setxattr /proc/sys/net/core", Known::No),
    ("getxattr /proc/sys/net/core", Known::No),
    ("access /proc/sys/net/core/somaxconn w", Known::No),
    ("access /proc/sys/net/core/somaxconn x", Known::No),
    ("access /proc/sys/net/core w", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("pread /proc/sys/net/core/somaxconn 1 10", READ_POS),
    ("readby /proc/sys/net/core/somaxconn 1", READ_POS),
    // How writes are parsed (do_proc_dointvec_minmax): each then read back.
    ("write /proc/sys/net/core/somaxconn 1\\s2", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn 3\\n4 5", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn 7 9", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    (
        "write /proc/sys/net/core/somaxconn \\s7\\s \\t8 9\\n\\n",
        Known::No,
    ),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn +1 0x20", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn 010", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn 08 -1 -0", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    (
        "write /proc/sys/net/core/somaxconn 5x \\e \\n 99999999999",
        Known::No,
    ),
    (
        "write /proc/sys/net/core/somaxconn 2147483648 1.5 5\\r 5\\0",
        Known::No,
    ),
    ("write /proc/sys/net/core/somaxconn 2147483647", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    ("write /proc/sys/net/core/somaxconn \\r5\\s\\r", Known::No),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    (
        "write /proc/sys/net/core/somaxconn 000000000000000000001",
        Known::No,
    ),
    (
        "write /proc/sys/net/core/somaxconn 00000000000000000001",
        Known::No,
    ),
    ("read /proc/sys/net/core/somaxconn", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_port_range 2000",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/ip_local_port_range", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_port_range 3000\\s2000",
        Known::No,
    ),
    (
        "write /proc/sys/net/ipv4/ip_local_port_range 1024\\s65000\\s7",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/ip_local_port_range", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_reserved_ports 3000,1000-1005",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/ip_local_reserved_ports", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_reserved_ports 1,2,3 7",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/ip_local_reserved_ports", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_local_reserved_ports 70000",
        Known::No,
    ),
    (
        "write /proc/sys/net/ipv4/ip_local_reserved_ports \\s8080",
        Known::No,
    ),
    (
        "write /proc/sys/net/ipv4/ip_local_reserved_ports \\n",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/ip_local_reserved_ports", Known::No),
    (
        "write /proc/sys/net/ipv4/ip_nonlocal_bind 255 256",
        Known::No,
    ),
    ("write /proc/sys/net/ipv4/ip_nonlocal_bind -0", Known::No),
    ("read /proc/sys/net/ipv4/ip_nonlocal_bind", Known::No),
    ("write /proc/sys/net/ipv4/conf/all/rp_filter -1", Known::No),
    ("read /proc/sys/net/ipv4/conf/all/rp_filter", Known::No),
    (
        "write /proc/sys/net/ipv4/tcp_keepalive_time 8589934",
        Known::No,
    ),
    (
        "write /proc/sys/net/ipv4/tcp_keepalive_time 8589935",
        Known::No,
    ),
    ("read /proc/sys/net/ipv4/tcp_keepalive_time", Known::No),
    ("write /proc/sys/net/core/somaxconn 4096", Known::No),
];

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// tests/fixtures/c/procfs_ops.c, built once.
fn procfs_ops() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = ws().join("target/fixtures/c");
        std::fs::create_dir_all(&out).unwrap();
        let bin = out.join("procfs_ops_fidelity");
        let o = Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(ws().join("tests/fixtures/c/procfs_ops.c"))
            .output()
            .expect("run cc");
        assert_ok(&o, "cc procfs_ops.c");
        bin
    })
    .clone()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The values the kernel's fresh network namespace starts with, for the
/// entries the operations read (k3shim's state starts from them too: a
/// shadow copy of this machine's or this gVisor's values would differ).
const NETNS_DEFAULTS: &[(&str, &str)] = &[
    ("net/core/somaxconn", "4096"),
    ("net/ipv4/ip_local_port_range", "32768 60999"),
    ("net/ipv4/ip_local_reserved_ports", ""),
    ("net/ipv4/ip_nonlocal_bind", "0"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/tcp_keepalive_time", "7200"),
];

/// How the operations run: on the kernel, or under k3shim with a state
/// directory per half (`{S}` in `runner`).
enum Runner {
    Kernel,
    K3shim { runner: String, state: String },
}

/// A shell script that makes the scratch directory Z and runs the operations,
/// once as root and once as nobody (each on a fresh network namespace or
/// state directory), separated by a "--- nobody" line.
fn script(z: &Path, how: &Runner) -> String {
    let ops: String = OPS
        .iter()
        .map(|(l, _)| format!("{}\n", l.replace('Z', &z.display().to_string())))
        .collect();
    let bin = procfs_ops().display().to_string();
    let half = |who: &str, as_user: &str| match how {
        Runner::Kernel => format!("unshare -n {as_user} {bin} < {}.ops", z.display()),
        Runner::K3shim { runner, state } => {
            let st = format!("{state}-{who}");
            let k = k3shim().display().to_string();
            let set: String = NETNS_DEFAULTS
                .iter()
                .map(|(e, v)| {
                    format!("{k} fakefs set --state {st} {e} '{v}' >/dev/null || exit 9\n")
                })
                .collect();
            format!(
                "rm -rf {st}; {k} fakefs init --state {st} >/dev/null || exit 9\n{set}{} {as_user} {bin} < {}.ops",
                runner.replace("{S}", &st),
                z.display()
            )
        }
    };
    let z = z.display();
    format!(
        r#"set -u
zoo() {{ rm -rf {z}; mkdir -p {z}; echo hi > {z}/file; ln -s /proc/sys/net/core {z}/l; chmod 777 {z}; }}
cat > {z}.ops <<'OPS'
{ops}OPS
zoo; {root}
echo "--- nobody"
zoo; {nobody}
"#,
        root = half("root", ""),
        nobody = half(
            "nobody",
            "setpriv --reuid=65534 --regid=65534 --clear-groups"
        ),
    )
}

/// The answers of one run, per operation line (root's, then nobody's).
fn answers(out: &str) -> (Vec<String>, Vec<String>) {
    let (root, nobody) = out
        .split_once("--- nobody\n")
        .unwrap_or_else(|| panic!("no nobody half in:\n{out}"));
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    (lines(root), lines(nobody))
}

/// Compares k3shim's answers with the kernel's, line by line, except where a
/// known divergence applies. Returns the mismatches.
fn compare(kernel: &[String], shim: &[String], gvisor: bool, who: &str) -> Vec<String> {
    assert_eq!(
        kernel.len(),
        OPS.len(),
        "{who}: the kernel answered every operation:\n{}",
        kernel.join("\n")
    );
    assert_eq!(
        shim.len(),
        OPS.len(),
        "{who}: k3shim's run answered every operation:\n{}",
        shim.join("\n")
    );
    let mut bad = Vec::new();
    for ((k, s), (_, known)) in kernel.iter().zip(shim).zip(OPS) {
        let skip = match known {
            Known::No => false,
            Known::Always(_) => true,
            Known::InGvisor(_) => gvisor,
        };
        if !skip && k != s {
            bad.push(format!("{who}: k3shim: {s}\n{who}: Linux:  {k}"));
        }
    }
    bad
}

/// The kernel's answers (net.* of a private network namespace).
fn kernel_answers(z: &Path) -> (Vec<String>, Vec<String>) {
    let o = native(&script(z, &Runner::Kernel));
    assert_ok(&o, "procfs_ops on the kernel");
    answers(&stdout(&o))
}

fn check(kernel: &(Vec<String>, Vec<String>), shim: &str, gvisor: bool, what: &str) {
    let (root, nobody) = answers(shim);
    let mut bad = compare(&kernel.0, &root, gvisor, &format!("{what} root"));
    bad.extend(compare(
        &kernel.1,
        &nobody,
        gvisor,
        &format!("{what} nobody"),
    ));
    assert!(
        bad.is_empty(),
        "{} answers differ from Linux's:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn proc_sys_answers_as_linux_does_natively_in_shadow_mode() {
    if !is_root() {
        eprintln!("NOTICE: not root: unshare -n is needed for the kernel's answers; skipped");
        return;
    }
    let host = host_sysctls();
    let st = scratch("procfs-fidelity");
    let z = st.join("z");
    let kernel = kernel_answers(&z);
    // k3shim itself in a private network namespace too: had anything reached
    // the kernel, it would have been that namespace's net.* entries.
    let how = Runner::K3shim {
        runner: format!(
            "unshare -n {} run --mode shadow --state {{S}} --",
            k3shim().display()
        ),
        state: st.join("s").display().to_string(),
    };
    let o = native(&script(&z, &how));
    assert_ok(&o, "procfs_ops under k3shim");
    check(&kernel, &stdout(&o), false, "native shadow");
    assert_eq!(host_sysctls(), host, "a host sysctl changed");
}

#[test]
fn proc_sys_answers_as_linux_does_in_gvisor() {
    if !is_root() || !have_gvisor() {
        return;
    }
    let st = scratch("procfs-fidelity-gv");
    let z = st.join("z");
    let kernel = kernel_answers(&z);
    for mode in ["overlay", "shadow"] {
        let how = Runner::K3shim {
            runner: format!("{} run --mode {mode} --state {{S}} --", k3shim().display()),
            state: format!("/tmp/kfid-{mode}"),
        };
        let o = gvisor(&script(&z, &how));
        assert_ok(&o, &format!("procfs_ops under k3shim in gVisor ({mode})"));
        check(&kernel, &stdout(&o), true, &format!("gVisor {mode}"));
    }
}

/// The reviewer's case: a non-root program cannot retune a root-owned 0644
/// entry (EACCES at open), and a 0600 entry copied from the kernel in shadow
/// mode keeps its mode and is unreadable to it, as on Linux.
#[test]
fn a_non_root_program_gets_eacces_writing_a_root_owned_entry() {
    let st = scratch("procfs-nonroot");
    let o = native(&format!(
        r#"{k} run --mode shadow --state {s} -- setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '
  echo 1 > /proc/sys/vm/panic_on_oom; echo "write rc=$?"
  cat /proc/sys/vm/panic_on_oom
  stat -c "%a %s %n" /proc/sys/vm/panic_on_oom /proc/sys/kernel/cad_pid
  cat /proc/sys/kernel/cad_pid >/dev/null; echo "read cad_pid rc=$?"' 2>&1
{k} fakefs get --mode shadow --state {s} vm/panic_on_oom"#,
        k = k3shim().display(),
        s = st.join("s").display()
    ));
    let out = stdout(&o);
    assert!(
        out.contains("Permission denied") && out.contains("write rc=2"),
        "{out}"
    );
    assert!(out.contains("644 0 /proc/sys/vm/panic_on_oom"), "{out}");
    assert!(out.contains("600 0 /proc/sys/kernel/cad_pid"), "{out}");
    assert!(out.contains("read cad_pid rc=1"), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("0"),
        "the value is unchanged: {out}"
    );
}
