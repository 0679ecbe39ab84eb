//! `k3shim doctor`: what is missing here, and why.
//!
//! Everything here only looks: the real /proc/sys is opened for reading and
//! stat'ed, never written (natively we are root on the host). Whether a
//! write would fail is reasoned from mode bits and from what was measured in
//! this gVisor build (../shared/sysctl-notes.md): inside gVisor the modes
//! say 0444 for entries that accept writes (ip_forward) and for entries
//! whose writes fail with EIO (overcommit_memory, somaxconn) alike.
//!
//! The one active probe is [`shim::probe`] (a forked child that makes one
//! traced syscall under a seccomp filter), plus a forked child that tries
//! SECCOMP_FILTER_FLAG_NEW_LISTENER, and, only inside gVisor (where nothing
//! leaks to the host), an overlay test mount in a temporary directory.
//!
//! gVisor detection: the sandbox's fixed /proc/cmdline
//! ("BOOT_IMAGE=/vmlinuz-4.4.0-gvisor quiet"), an uname release naming
//! gvisor (newer builds: "4.19.0-gvisor"), or its fixed /proc/version build
//! date ("#1 SMP Sun Jan 10 15:06:54 PST 2016"). The platform is not
//! exposed inside the sandbox; it is inferred from the cost of getppid(2)
//! (ptrace platform: tens of microseconds; kvm/systrap: about one).

use crate::cli::DoctorArgs;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Warn,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// sandbox | tracing | privileges | kernel
    pub group: String,
    pub name: String,
    pub status: Status,
    pub reason: String,
    /// k3shim cannot work here when a needed check is missing.
    pub needed: bool,
}

/// The sandbox k3shim runs in.
#[derive(Debug, Clone, Serialize)]
pub struct Sandbox {
    pub gvisor: bool,
    /// "gvisor" or "native".
    pub kind: String,
    /// gVisor platform: "ptrace", "kvm-or-systrap", or null natively.
    pub platform: Option<String>,
    /// How the platform was inferred.
    pub platform_basis: Option<String>,
    /// getppid(2) cost in microseconds (median of batches).
    pub getppid_us: f64,
    pub kernel_release: String,
    /// The signals that identified gVisor (empty natively).
    pub markers: Vec<String>,
}

/// One /proc/sys path of the k3s profile, as found here.
#[derive(Debug, Clone, Serialize)]
pub struct SysctlPath {
    /// Relative to /proc/sys, e.g. vm/panic_on_oom.
    pub path: String,
    /// present-rw | present-ro | missing | unreadable
    pub state: String,
    /// Octal mode bits when present, e.g. "0644".
    pub mode: Option<String>,
    /// The value read (trimmed), when readable.
    pub value: Option<String>,
    /// The profile marks the entry read-only (0444 on Linux too).
    pub expected_ro: bool,
    /// Why the state was decided so.
    pub basis: String,
}

/// A named compatibility fix of the shim.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    pub name: String,
    pub on: bool,
    pub reason: String,
}

/// A k3s (or kubelet / kube-proxy) flag the situation calls for.
#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub flag: String,
    /// k3s | kubelet | kube-proxy
    pub component: String,
    pub reason: String,
}

/// A rule for k3shim's own options.
#[derive(Debug, Clone, Serialize)]
pub struct ShimRule {
    pub rule: String,
    /// "safe" or "never".
    pub advice: String,
    pub reason: String,
}

/// What `k3shim run --backend auto` would pick here, and why.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// "mount" or "ptrace".
    pub auto: String,
    pub reason: String,
    pub probe: crate::mount_backend::probe::Probe,
    /// What a killed run had left and this doctor removed.
    pub swept: Vec<String>,
}

/// The whole report (`k3shim doctor --json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub k3shim_version: String,
    /// k3shim can work here (no needed check is missing).
    pub ok: bool,
    pub summary: String,
    pub sandbox: Sandbox,
    /// shim::probe() facts; null when the probe failed.
    pub probe: Option<shim::Facts>,
    pub probe_error: Option<String>,
    pub checks: Vec<Check>,
    /// Where the /proc/sys that was examined is (K3SHIM_PROC_SYS_ROOT for tests).
    pub proc_sys_root: PathBuf,
    /// Every /proc/sys path of the k3s profile.
    pub sysctl: Vec<SysctlPath>,
    /// Paths of `sysctl` that are missing here.
    pub missing: Vec<String>,
    /// Paths that exist but refuse writes although components write them.
    pub readonly: Vec<String>,
    pub fixes: Vec<Fix>,
    pub flags: Vec<Flag>,
    pub rules: Vec<ShimRule>,
    pub backend: BackendReport,
}

/// Runs the checks and prints the report; 0 when k3shim can work here, 1 when something it needs is missing.
pub fn run(args: &DoctorArgs) -> Result<i32> {
    let r = report();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let text = if args.json {
        serde_json::to_string_pretty(&r)? + "\n"
    } else {
        render(&r)
    };
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // `k3shim doctor | head`: the reader went away; not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        _ => {}
    }
    Ok(if r.ok { 0 } else { 1 })
}

// ----- probes -----

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn uname_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// gVisor's fixed /proc/version build stamp (runsc 2018..2023 at least).
const GVISOR_VERSION_STAMP: &str = "#1 SMP Sun Jan 10 15:06:54 PST 2016";

fn detect_gvisor(release: &str) -> Vec<String> {
    let mut m = Vec::new();
    if let Some(c) = read_trim("/proc/cmdline") {
        if c.contains("gvisor") {
            m.push(format!("/proc/cmdline is {c:?}"));
        }
    }
    if release.contains("gvisor") {
        m.push(format!("uname release is {release:?}"));
    }
    if let Some(v) = read_trim("/proc/version") {
        if v.contains(GVISOR_VERSION_STAMP) {
            m.push(format!(
                "/proc/version has gVisor's fixed build stamp ({GVISOR_VERSION_STAMP})"
            ));
        }
    }
    m
}

/// Median cost of getppid(2) over a few batches, in microseconds.
fn getppid_cost_us() -> f64 {
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..100 {
                // SAFETY: getppid has no arguments and no side effects.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            t.elapsed().as_secs_f64() * 1e6 / 100.0
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (samples[2] * 100.0).round() / 100.0
}

/// Tries SECCOMP_FILTER_FLAG_NEW_LISTENER in a forked child (the filter is
/// the child's alone). Ok(()) or the errno.
fn seccomp_user_notif() -> std::result::Result<(), i32> {
    let filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: the child makes raw syscalls on data prepared before fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EAGAIN));
    }
    if pid == 0 {
        // SAFETY: child side: raw syscalls only.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            let code = if r >= 0 {
                0
            } else {
                *libc::__errno_location() & 0xff
            };
            libc::_exit(code);
        }
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    while unsafe { libc::waitpid(pid, &mut st, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(libc::ECHILD);
        }
    }
    match (libc::WIFEXITED(st), libc::WEXITSTATUS(st)) {
        (true, 0) => Ok(()),
        (true, e) => Err(e),
        _ => Err(libc::EINTR),
    }
}

fn errno_str(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        _ => return std::io::Error::from_raw_os_error(e).to_string(),
    };
    name.to_string()
}

/// cgroup mounts from /proc/self/mountinfo: (v1 controllers, cgroup2 present).
fn cgroup_mounts() -> (Vec<String>, bool) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = Vec::new();
    let mut v2 = false;
    for line in text.lines() {
        let Some((_, post)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = post.split_whitespace().collect();
        match f.first() {
            Some(&"cgroup2") => v2 = true,
            Some(&"cgroup") => {
                for o in f.get(2).copied().unwrap_or("").split(',') {
                    if [
                        "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer",
                        "blkio", "hugetlb",
                    ]
                    .contains(&o)
                        || o.starts_with("name=")
                    {
                        v1.push(o.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    v1.sort();
    v1.dedup();
    (v1, v2)
}

fn filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Inside gVisor only: mounts an overlay in a temporary directory and
/// removes a lower-layer file through it (a whiteout), as containerd's
/// overlayfs snapshotter needs. Err(reason) when it does not work.
fn overlay_trial() -> std::result::Result<(), String> {
    let base = std::env::temp_dir().join(format!("k3shim-doctor-overlay-{}", std::process::id()));
    let (l, u, w, m) = (
        base.join("l"),
        base.join("u"),
        base.join("w"),
        base.join("m"),
    );
    let res = (|| -> std::result::Result<(), String> {
        for d in [&l, &u, &w, &m] {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        std::fs::write(l.join("f"), b"x\n")
            .map_err(|e| format!("cannot write the lower layer: {e}"))?;
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            u.display(),
            w.display()
        );
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| "bad temp path".to_string())
        };
        let (cm, copts) = (
            c(&m)?,
            std::ffi::CString::new(opts).map_err(|_| "bad temp path".to_string())?,
        );
        // SAFETY: NUL-terminated strings that outlive the call.
        if unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                cm.as_ptr(),
                c"overlay".as_ptr(),
                0,
                copts.as_ptr().cast(),
            )
        } != 0
        {
            return Err(format!(
                "mount -t overlay fails with {}",
                std::io::Error::last_os_error()
            ));
        }
        let r = std::fs::remove_file(m.join("f")).map_err(|e| {
            format!("overlay mounts, but removing a lower-layer file fails ({e}): no whiteouts, so image layers that delete files break")
        });
        // SAFETY: as above.
        unsafe { libc::umount2(cm.as_ptr(), libc::MNT_DETACH) };
        r
    })();
    let _ = std::fs::remove_dir_all(&base);
    res
}

/// The kubelet tunables (setupKernelTunables) and the value kubelet wants.
const KUBELET_TUNABLES: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Measured in runsc 0.0~20221219 (sysctl-notes.md): (path, writable, note).
const GVISOR_WRITES: &[(&str, bool, &str)] = &[
    (
        "net/ipv4/ip_forward",
        true,
        "gVisor accepts writes of 0 or 1 (measured) although its mode says 0444",
    ),
    (
        "vm/overcommit_memory",
        false,
        "gVisor fails every write with EIO (measured), even of the same value",
    ),
    (
        "net/core/somaxconn",
        false,
        "gVisor fails every write with EIO (measured), even of the same value",
    ),
];

fn examine_sysctl(root: &Path, rel: &str, expected_ro: bool, gvisor: bool) -> SysctlPath {
    let p = root.join(rel);
    let mut s = SysctlPath {
        path: rel.into(),
        state: String::new(),
        mode: None,
        value: None,
        expected_ro,
        basis: String::new(),
    };
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            s.state = "missing".into();
            s.basis = "stat: no such file".into();
            return s;
        }
        Err(e) => {
            s.state = "unreadable".into();
            s.basis = format!("stat fails: {e}");
            return s;
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    s.mode = Some(format!("{mode:04o}"));
    match std::fs::read_to_string(&p) {
        Ok(v) => s.value = Some(v.trim().to_string()),
        Err(e) => {
            s.state = "unreadable".into();
            s.basis = format!("exists (mode {mode:04o}) but reading fails: {e}");
            return s;
        }
    }
    if gvisor {
        if let Some((_, w, note)) = GVISOR_WRITES.iter().find(|(p, _, _)| *p == rel) {
            s.state = if *w { "present-rw" } else { "present-ro" }.into();
            s.basis = (*note).into();
            return s;
        }
        s.state = if mode & 0o200 != 0 {
            "present-rw"
        } else {
            "present-ro"
        }
        .into();
        s.basis = format!("mode {mode:04o} (not measured in gVisor, whose modes are unreliable)");
        return s;
    }
    // Natively we run as root: the owner's write bit decides (never tried).
    s.state = if mode & 0o200 != 0 {
        "present-rw"
    } else {
        "present-ro"
    }
    .into();
    s.basis = format!("mode {mode:04o} (write not tried: this is the host)");
    s
}

fn cap_held(c: caps::Capability) -> bool {
    caps::has_cap(None, caps::CapSet::Effective, c).unwrap_or(false)
}

/// Builds the report. Looks only; see the module documentation.
pub fn report() -> Report {
    let mut checks: Vec<Check> = Vec::new();
    let mut add = |group: &str, name: &str, status: Status, reason: String, needed: bool| {
        checks.push(Check {
            group: group.into(),
            name: name.into(),
            status,
            reason,
            needed,
        });
    };

    // --- sandbox ---
    let release = uname_release();
    let markers = detect_gvisor(&release);
    let gvisor = !markers.is_empty();
    let getppid_us = getppid_cost_us();
    let (platform, platform_basis) = if gvisor {
        if getppid_us >= 8.0 {
            (
                Some("ptrace".to_string()),
                Some(format!("inferred: getppid costs {getppid_us} us (ptrace platform: tens of us; kvm/systrap: about 1 us); gVisor does not expose its platform")),
            )
        } else {
            (
                Some("kvm-or-systrap".to_string()),
                Some(format!("inferred: getppid costs {getppid_us} us (the ptrace platform costs tens of us); gVisor does not expose its platform")),
            )
        }
    } else {
        (None, None)
    };
    if gvisor {
        add(
            "sandbox",
            "gvisor",
            Status::Ok,
            format!("gVisor (uname {release}): {}", markers.join("; ")),
            false,
        );
        add(
            "sandbox",
            "platform",
            Status::Ok,
            format!(
                "{} ({})",
                platform.as_deref().unwrap_or("?"),
                platform_basis.as_deref().unwrap_or("")
            ),
            false,
        );
    } else {
        add(
            "sandbox",
            "gvisor",
            Status::Ok,
            format!("not gVisor: native Linux {release} (no gvisor in /proc/cmdline, uname or /proc/version)"),
            false,
        );
    }
    let sandbox = Sandbox {
        gvisor,
        kind: if gvisor { "gvisor" } else { "native" }.into(),
        platform,
        platform_basis,
        getppid_us,
        kernel_release: release.clone(),
        markers,
    };

    // --- tracing ---
    let (probe, probe_error) = match shim::probe() {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e.to_string())),
    };
    match (&probe, &probe_error) {
        (Some(f), _) => {
            add(
                "tracing",
                "ptrace",
                Status::Ok,
                "PTRACE_SEIZE of a forked child works".into(),
                true,
            );
            add(
                "tracing",
                "seccomp-filter",
                Status::Ok,
                "a SECCOMP_RET_TRACE filter stops the probe's getppid".into(),
                true,
            );
            add(
                "tracing",
                "stop-order",
                Status::Ok,
                if f.enter_stop_after_seccomp {
                    "a syscall-enter stop follows the seccomp stop (gVisor / Linux < 4.8 order); the engine handles both".into()
                } else {
                    "the seccomp stop is the only enter stop (Linux >= 4.8 order)".into()
                },
                false,
            );
            add(
                "tracing",
                "memory-read",
                Status::Ok,
                match f.read_mode {
                    shim::mem::ReadMode::ProcessVmReadv => "process_vm_readv works".into(),
                    shim::mem::ReadMode::ProcMem => {
                        "process_vm_readv fails; the engine reads /proc/PID/mem with pread".into()
                    }
                },
                false,
            );
            add(
                "tracing",
                "statx-no-automount",
                if f.statx_no_automount_broken {
                    Status::Warn
                } else {
                    Status::Ok
                },
                if f.statx_no_automount_broken {
                    "statx(AT_NO_AUTOMOUNT) fails with EINVAL on every path (ls, stat break): fix statx-no-automount is on".into()
                } else {
                    "statx(AT_NO_AUTOMOUNT) works".into()
                },
                false,
            );
        }
        (None, Some(e)) => {
            let ptrace_failed = e.contains("PTRACE_SEIZE") || e.contains("ptrace");
            if ptrace_failed && !e.contains("seccomp") {
                add(
                    "tracing",
                    "ptrace",
                    Status::Missing,
                    format!("probe: {e}"),
                    true,
                );
                add(
                    "tracing",
                    "seccomp-filter",
                    Status::Warn,
                    "not tested: ptrace failed first".into(),
                    true,
                );
            } else {
                add(
                    "tracing",
                    "ptrace",
                    Status::Ok,
                    "PTRACE_SEIZE of a forked child works".into(),
                    true,
                );
                add(
                    "tracing",
                    "seccomp-filter",
                    Status::Missing,
                    format!("probe: {e}"),
                    true,
                );
            }
        }
        (None, None) => {}
    }
    match seccomp_user_notif() {
        Ok(()) => add(
            "tracing",
            "seccomp-user-notif",
            Status::Ok,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER works (not needed by k3shim)".into(),
            false,
        ),
        Err(e) => add(
            "tracing",
            "seccomp-user-notif",
            Status::Warn,
            format!(
                "SECCOMP_FILTER_FLAG_NEW_LISTENER fails with {} (not needed: k3shim uses ptrace)",
                errno_str(e)
            ),
            false,
        ),
    }

    // --- privileges ---
    use caps::Capability as C;
    let cap_list: &[(C, &str)] = &[
        (
            C::CAP_SYS_PTRACE,
            "not needed to trace k3shim's own children; needed with yama ptrace_scope 2",
        ),
        (
            C::CAP_SYS_ADMIN,
            "k3s and containerd mount (cgroups, overlay, namespaces)",
        ),
        (
            C::CAP_NET_ADMIN,
            "k3s, flannel and kube-proxy configure links, routes and iptables",
        ),
        (
            C::CAP_NET_RAW,
            "iptables, kube-proxy and ping need raw sockets (runsc drops it unless --net-raw)",
        ),
        (C::CAP_SYS_RESOURCE, "kubelet and containerd raise rlimits"),
        (
            C::CAP_DAC_OVERRIDE,
            "k3s runs as root over files owned by others",
        ),
    ];
    for (c, why) in cap_list {
        let held = cap_held(*c);
        add(
            "privileges",
            &c.to_string(),
            if held { Status::Ok } else { Status::Warn },
            format!("{}: {why}", if held { "held" } else { "not held" }),
            false,
        );
    }
    let has_ptrace_cap = cap_held(C::CAP_SYS_PTRACE);
    match read_trim("/proc/sys/kernel/yama/ptrace_scope").as_deref() {
        None => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Ok,
            "no Yama LSM (/proc/sys/kernel/yama/ptrace_scope absent)".into(),
            true,
        ),
        Some("0") => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Ok,
            "0: classic ptrace permissions".into(),
            true,
        ),
        Some("1") => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Ok,
            "1: only descendants; k3shim traces its own children".into(),
            true,
        ),
        Some("2") if has_ptrace_cap => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Ok,
            "2: admin-only attach; CAP_SYS_PTRACE is held".into(),
            true,
        ),
        Some("2") => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Missing,
            "2: admin-only attach and CAP_SYS_PTRACE is not held: run as root".into(),
            true,
        ),
        Some("3") => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Missing,
            "3: ptrace is disabled on this system".into(),
            true,
        ),
        Some(v) => add(
            "privileges",
            "yama-ptrace-scope",
            Status::Warn,
            format!("unexpected value {v:?}"),
            false,
        ),
    }

    // --- kernel surface ---
    let profile = fakefs::Profile::load(&["k3s".to_string()]).unwrap_or_default();
    let proc_root = std::env::var_os("K3SHIM_PROC_SYS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys"));
    let sysctl: Vec<SysctlPath> = profile
        .entries
        .iter()
        .map(|(rel, e)| examine_sysctl(&proc_root, rel, e.readonly, gvisor))
        .collect();
    let missing: Vec<String> = sysctl
        .iter()
        .filter(|s| s.state == "missing")
        .map(|s| s.path.clone())
        .collect();
    let readonly: Vec<String> = sysctl
        .iter()
        .filter(|s| s.state == "present-ro" && !s.expected_ro)
        .map(|s| s.path.clone())
        .collect();
    let unreadable = sysctl.iter().filter(|s| s.state == "unreadable").count();
    add(
        "kernel",
        "proc-sys",
        if missing.is_empty() && readonly.is_empty() && unreadable == 0 { Status::Ok } else { Status::Warn },
        format!(
            "{} k3s profile paths under {}: {} missing, {} read-only, {} unreadable; fakefs serves them",
            sysctl.len(),
            proc_root.display(),
            missing.len(),
            readonly.len(),
            unreadable
        ),
        false,
    );
    let kmsg_stand_in = profile.files.contains_key("/dev/kmsg");
    if std::fs::symlink_metadata("/dev/kmsg").is_ok() {
        add(
            "kernel",
            "dev-kmsg",
            Status::Ok,
            "/dev/kmsg exists (kubelet's OOM watcher reads it)".into(),
            false,
        );
    } else {
        add(
            "kernel",
            "dev-kmsg",
            Status::Missing,
            format!(
                "/dev/kmsg is absent: kubelet's OOM watcher dies without it{}",
                if kmsg_stand_in {
                    "; the k3s profile serves a stand-in file"
                } else {
                    ""
                }
            ),
            false,
        );
    }
    let (v1, v2) = cgroup_mounts();
    let kubelet_v1 = ["cpu", "cpuacct", "cpuset", "memory", "pids"];
    let v1_missing: Vec<&str> = kubelet_v1
        .iter()
        .copied()
        .filter(|c| !v1.iter().any(|m| m == c))
        .collect();
    let cgroups_ok = v2 || v1_missing.is_empty();
    add(
        "kernel",
        "cgroups",
        if cgroups_ok { Status::Ok } else { Status::Warn },
        if v2 {
            format!(
                "cgroup2 mounted{}",
                if v1.is_empty() {
                    String::new()
                } else {
                    format!(", v1: {}", v1.join(","))
                }
            )
        } else if cgroups_ok {
            format!("cgroup v1 mounted: {}", v1.join(","))
        } else {
            format!(
                "kubelet needs cgroup2 or v1 cpu,cpuacct,cpuset,memory,pids; not mounted: {}{}",
                v1_missing.join(","),
                if gvisor {
                    " (gVisor has no cgroup2; mount the v1 controllers under /sys/fs/cgroup)"
                } else {
                    ""
                }
            )
        },
        false,
    );
    let fss = filesystems();
    let overlay = if !fss.iter().any(|f| f == "overlay") {
        Err("overlay is not in /proc/filesystems".to_string())
    } else if gvisor {
        overlay_trial()
    } else {
        Ok(())
    };
    add(
        "kernel",
        "overlayfs",
        if overlay.is_ok() {
            Status::Ok
        } else {
            Status::Warn
        },
        match &overlay {
            Ok(()) if gvisor => "a test overlay mount with a whiteout works".into(),
            Ok(()) => "overlay is in /proc/filesystems".into(),
            Err(e) => e.clone(),
        },
        false,
    );
    let vxlan = if gvisor {
        Err(
            "gVisor's netstack creates no vxlan links (netlink RTM_NEWLINK of kind vxlan)"
                .to_string(),
        )
    } else if Path::new("/sys/module/vxlan").exists()
        || Path::new("/lib/modules").join(&release).exists()
    {
        Ok(())
    } else {
        Err(format!(
            "no vxlan module loaded and no /lib/modules/{release} to load it from"
        ))
    };
    add(
        "kernel",
        "vxlan",
        if vxlan.is_ok() {
            Status::Ok
        } else {
            Status::Warn
        },
        match &vxlan {
            Ok(()) => "vxlan module loaded or loadable".into(),
            Err(e) => e.clone(),
        },
        false,
    );
    let netfilter = !gvisor || Path::new("/proc/net/ip_tables_names").exists();
    if gvisor {
        add(
            "kernel",
            "netfilter",
            if netfilter { Status::Ok } else { Status::Warn },
            if netfilter {
                "/proc/net/ip_tables_names exists".into()
            } else {
                "no /proc/net/ip_tables_names: kube-proxy and the network policy controller cannot program iptables".into()
            },
            false,
        );
    }

    // --- fixes ---
    let statx_fix = probe.as_ref().is_some_and(|f| f.statx_no_automount_broken);
    let fixes = vec![Fix {
        name: "statx-no-automount".into(),
        on: statx_fix,
        reason: if statx_fix {
            "statx with AT_NO_AUTOMOUNT fails with EINVAL here; the shim drops the flag (turn off with --no-fix statx-no-automount)".into()
        } else {
            "statx with AT_NO_AUTOMOUNT works here: not needed".into()
        },
    }];

    // --- flags ---
    let by_path: BTreeMap<&str, &SysctlPath> =
        sysctl.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut mismatches = Vec::new();
    for (p, want) in KUBELET_TUNABLES {
        match by_path.get(p) {
            Some(s) if s.state == "missing" => mismatches.push(format!("{p} missing")),
            Some(s) if s.state == "present-ro" => mismatches.push(format!("{p} read-only")),
            Some(s) if s.value.as_deref() != Some(*want) => mismatches.push(format!(
                "{p} is {} not {want}",
                s.value.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
    }
    let mut flags = Vec::new();
    if !mismatches.is_empty() {
        flags.push(Flag {
            flag: "--protect-kernel-defaults=false".into(),
            component: "kubelet".into(),
            reason: format!(
                "kubelet compares 6 sysctls with the values it wants and, when protecting kernel defaults, dies on a mismatch instead of writing ({}); keep it false so kubelet writes them into the fake tree",
                mismatches.join(", ")
            ),
        });
    }
    if let Err(e) = &vxlan {
        flags.push(Flag {
            flag: "--flannel-backend=none".into(),
            component: "k3s".into(),
            reason: format!("flannel's default vxlan backend needs a kernel vxlan link: {e}"),
        });
    }
    if let Err(e) = &overlay {
        flags.push(Flag {
            flag: "--snapshotter=native".into(),
            component: "k3s".into(),
            reason: format!("containerd's default overlayfs snapshotter: {e}"),
        });
    }
    if !netfilter {
        flags.push(Flag {
            flag: "--disable-kube-proxy".into(),
            component: "kube-proxy".into(),
            reason: "kube-proxy exits when it cannot program iptables (no netfilter here), and k3s treats that as fatal".into(),
        });
        flags.push(Flag {
            flag: "--disable-network-policy".into(),
            component: "k3s".into(),
            reason: "the embedded network policy controller needs iptables and ipset (no netfilter here)".into(),
        });
    }
    if !cgroups_ok {
        flags.push(Flag {
            flag: "--disable-agent".into(),
            component: "k3s".into(),
            reason: format!(
                "control-plane only: kubelet cannot start without cgroups (missing {}); or mount them and drop this flag",
                v1_missing.join(",")
            ),
        });
    }

    let rules = vec![
        ShimRule {
            rule: "--hold connect:127.0.0.1:6443".into(),
            advice: "safe".into(),
            reason: "clients of k3s's supervisor port (kubectl, hooks, agents) wait until the apiserver is ready".into(),
        },
        ShimRule {
            rule: "--hold connect:127.0.0.1:6444".into(),
            advice: "never".into(),
            reason: "6444 is the apiserver's own loopback: its post-start hooks and the gate's probe would wait for themselves".into(),
        },
    ];

    let needed_missing: Vec<&Check> = checks
        .iter()
        .filter(|c| c.needed && c.status == Status::Missing)
        .collect();
    let ok = needed_missing.is_empty();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    let where_ = if gvisor {
        format!(
            "gVisor{}",
            sandbox
                .platform
                .as_deref()
                .map(|p| format!(", {p} platform"))
                .unwrap_or_default()
        )
    } else {
        format!("native Linux {release}")
    };
    let summary = if ok {
        format!(
            "k3shim can work here ({where_}): {} missing and {} read-only /proc/sys paths are served by fakefs; {warns} warnings; {} flags suggested",
            missing.len(),
            readonly.len(),
            flags.len()
        )
    } else {
        format!(
            "k3shim cannot work here ({where_}): missing {}",
            needed_missing
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };

    Report {
        k3shim_version: env!("CARGO_PKG_VERSION").into(),
        ok,
        summary,
        sandbox,
        probe,
        probe_error,
        checks,
        proc_sys_root: proc_root,
        sysctl,
        missing,
        readonly,
        fixes,
        flags,
        rules,
        backend: backend_report(),
    }
}

fn backend_report() -> BackendReport {
    let swept = crate::mount_backend::rundir::sweep();
    let probe = crate::mount_backend::probe::probe();
    let (mount, _) = probe.auto_choice();
    BackendReport {
        auto: if mount { "mount" } else { "ptrace" }.into(),
        reason: probe.detail.clone(),
        probe,
        swept,
    }
}

// ----- text output -----

/// The report as text for a person: grouped, aligned, a summary line last.
pub fn render(r: &Report) -> String {
    let mut s = format!("k3shim doctor {}\n", r.k3shim_version);
    let w = r
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(10)
        .max(18);
    for (group, title) in [
        ("sandbox", "Sandbox"),
        ("tracing", "Tracing"),
        ("privileges", "Privileges"),
        ("kernel", "Kernel surface"),
    ] {
        s.push_str(&format!("\n{title}\n"));
        for c in r.checks.iter().filter(|c| c.group == group) {
            s.push_str(&format!(
                "  {:<w$}  {:<7}  {}\n",
                c.name,
                c.status.to_string(),
                c.reason
            ));
        }
    }

    s.push_str(&format!(
        "\nBackend\n  --backend auto picks {} here: {}\n",
        r.backend.auto, r.backend.reason
    ));
    for l in &r.backend.swept {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str(&format!(
        "\n/proc/sys paths of the k3s profile ({} under {})\n",
        r.sysctl.len(),
        r.proc_sys_root.display()
    ));
    if r.missing.is_empty() && r.readonly.is_empty() {
        s.push_str("  all present and writable\n");
    }
    if !r.missing.is_empty() {
        s.push_str(&format!(
            "  missing ({}), served from the fake tree:\n",
            r.missing.len()
        ));
        let mut by_dir: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in &r.missing {
            let (d, n) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
            by_dir.entry(d).or_default().push(n);
        }
        let dw = by_dir.keys().map(|d| d.len() + 1).max().unwrap_or(0);
        for (d, names) in by_dir {
            s.push_str(&format!(
                "    {:<dw$}  {}\n",
                format!("{d}/"),
                names.join(" ")
            ));
        }
    }
    if !r.readonly.is_empty() {
        s.push_str(&format!(
            "  read-only ({}), served from the fake tree once written:\n",
            r.readonly.len()
        ));
        let pw = r.readonly.iter().map(|p| p.len()).max().unwrap_or(0);
        for p in &r.readonly {
            let basis = r
                .sysctl
                .iter()
                .find(|x| &x.path == p)
                .map(|x| x.basis.as_str())
                .unwrap_or("");
            s.push_str(&format!("    {p:<pw$}  {basis}\n"));
        }
    }

    s.push_str("\nCompatibility fixes\n");
    let fw = r.fixes.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &r.fixes {
        s.push_str(&format!(
            "  {:<fw$}  {:<3}  {}\n",
            f.name,
            if f.on { "on" } else { "off" },
            f.reason
        ));
    }

    s.push_str("\nFlags this situation calls for\n");
    if r.flags.is_empty() {
        s.push_str("  none\n");
    }
    let gw = r.flags.iter().map(|f| f.flag.len()).max().unwrap_or(0);
    for f in &r.flags {
        s.push_str(&format!(
            "  {:<gw$}  {:<10}  {}\n",
            f.flag, f.component, f.reason
        ));
    }

    s.push_str("\nk3shim rules\n");
    let rw = r.rules.iter().map(|x| x.rule.len()).max().unwrap_or(0);
    for x in &r.rules {
        s.push_str(&format!(
            "  {:<5}  {:<rw$}  {}\n",
            x.advice, x.rule, x.reason
        ));
    }

    s.push_str(&format!("\n{}\n", r.summary));
    s
}
