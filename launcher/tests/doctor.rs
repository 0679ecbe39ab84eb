//! `k3shim doctor`: natively (with a temporary "real /proc/sys" so the
//! results do not depend on the host) and inside gVisor.
//!
//! The gVisor test fails when runsc is missing and CI=true; elsewhere it
//! prints a skip notice. runsc garbles output when stdout and stderr are the
//! same regular file, so its output is captured through pipes.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn output(cmd: &mut Command) -> Out {
    let o = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A fake "real /proc/sys": vm/panic_on_oom present and writable (0644),
/// vm/overcommit_memory present and read-only (0444); the rest missing.
fn fake_proc_sys(dir: &Path) {
    std::fs::create_dir_all(dir.join("vm")).unwrap();
    std::fs::write(dir.join("vm/panic_on_oom"), "0\n").unwrap();
    std::fs::write(dir.join("vm/overcommit_memory"), "0\n").unwrap();
    std::fs::set_permissions(
        dir.join("vm/overcommit_memory"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
}

fn doctor_native(args: &[&str]) -> (Out, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    fake_proc_sys(tmp.path());
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_k3shim"))
            .arg("doctor")
            .args(args)
            .env("K3SHIM_PROC_SYS_ROOT", tmp.path()),
    );
    (out, tmp)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {r:#}"))
}

/// The shape every `doctor --json` has, wherever it runs.
fn assert_shape(r: &Value) {
    for k in [
        "k3shim_version",
        "ok",
        "summary",
        "sandbox",
        "probe",
        "probe_error",
        "checks",
        "proc_sys_root",
        "sysctl",
        "missing",
        "readonly",
        "fixes",
        "flags",
        "rules",
    ] {
        assert!(r.get(k).is_some(), "missing key {k} in {r:#}");
    }
    for k in [
        "gvisor",
        "kind",
        "platform",
        "platform_basis",
        "getppid_us",
        "kernel_release",
        "markers",
    ] {
        assert!(r["sandbox"].get(k).is_some(), "missing key sandbox.{k}");
    }
    for c in r["checks"].as_array().unwrap() {
        assert!(
            ["ok", "missing", "warn"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(
            !c["reason"].as_str().unwrap().is_empty()
                && !c["reason"].as_str().unwrap().contains('\n'),
            "{c}"
        );
        assert!(
            c["group"].is_string() && c["name"].is_string() && c["needed"].is_boolean(),
            "{c}"
        );
    }
    for name in [
        "gvisor",
        "ptrace",
        "seccomp-filter",
        "stop-order",
        "memory-read",
        "statx-no-automount",
        "seccomp-user-notif",
    ] {
        check(r, name);
    }
    for name in [
        "CAP_SYS_PTRACE",
        "CAP_SYS_ADMIN",
        "yama-ptrace-scope",
        "proc-sys",
        "dev-kmsg",
        "cgroups",
        "overlayfs",
    ] {
        check(r, name);
    }
    for s in r["sysctl"].as_array().unwrap() {
        assert!(
            ["present-rw", "present-ro", "missing", "unreadable"]
                .contains(&s["state"].as_str().unwrap()),
            "{s}"
        );
    }
    let fixes = r["fixes"].as_array().unwrap();
    assert!(
        fixes
            .iter()
            .any(|f| f["name"] == "statx-no-automount" && f["on"].is_boolean()),
        "{fixes:?}"
    );
    for f in r["flags"].as_array().unwrap() {
        assert!(
            f["flag"].as_str().unwrap().starts_with("--")
                && !f["reason"].as_str().unwrap().is_empty(),
            "{f}"
        );
    }
    let rules = r["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|x| x["rule"] == "--hold connect:127.0.0.1:6443" && x["advice"] == "safe"),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|x| x["rule"] == "--hold connect:127.0.0.1:6444" && x["advice"] == "never"),
        "{rules:?}"
    );
}

#[test]
fn doctor_json_is_one_object_with_the_expected_keys_natively() {
    let (out, _tmp) = doctor_native(&["--json"]);
    let r: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    assert_shape(&r);
    assert_eq!(
        out.code,
        if r["ok"] == true { 0 } else { 1 },
        "exit status follows `ok`"
    );

    // Natively (as the tests run): not gVisor, and the engine works.
    assert_eq!(r["sandbox"]["gvisor"], false, "{:#}", r["sandbox"]);
    assert_eq!(r["sandbox"]["kind"], "native");
    assert_eq!(r["ok"], true, "{}", r["summary"]);
    assert_eq!(out.code, 0);
    assert_eq!(check(&r, "ptrace")["status"], "ok");
    assert_eq!(check(&r, "seccomp-filter")["status"], "ok");
    assert_eq!(r["probe"]["read_mode"], "process_vm_readv");
}

#[test]
fn doctor_reports_the_profile_paths_that_are_missing_or_read_only_here() {
    let (out, tmp) = doctor_native(&["--json"]);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["proc_sys_root"], tmp.path().to_str().unwrap());
    let missing = strings(&r["missing"]);
    assert!(missing.contains(&"kernel/panic"), "{missing:?}");
    assert!(
        missing.contains(&"net/netfilter/nf_conntrack_max"),
        "{missing:?}"
    );
    assert!(
        !missing.contains(&"vm/panic_on_oom"),
        "present in the fake root: {missing:?}"
    );
    assert_eq!(strings(&r["readonly"]), ["vm/overcommit_memory"]);
    let s = r["sysctl"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "vm/panic_on_oom")
        .unwrap();
    assert_eq!(s["state"], "present-rw");
    assert_eq!(s["mode"], "0644");
    assert_eq!(s["value"], "0");
    // kubelet compares its sysctls: missing or read-only ones call for this flag.
    let flags = r["flags"].as_array().unwrap();
    let pkd = flags
        .iter()
        .find(|f| f["flag"] == "--protect-kernel-defaults=false")
        .expect("protect-kernel-defaults");
    assert!(
        pkd["reason"]
            .as_str()
            .unwrap()
            .contains("kernel/panic missing"),
        "{pkd}"
    );
    // The doctor only looks: the fake root is unchanged.
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("vm/panic_on_oom")).unwrap(),
        "0\n"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn doctor_text_is_grouped_aligned_and_ends_with_a_summary() {
    let (out, _tmp) = doctor_native(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let text = &out.stdout;
    for section in [
        "Sandbox",
        "Tracing",
        "Privileges",
        "Kernel surface",
        "Compatibility fixes",
        "Flags this situation calls for",
        "k3shim rules",
    ] {
        assert!(
            text.lines().any(|l| l == section),
            "no section {section:?} in:\n{text}"
        );
    }
    // Check lines: name, status, reason in aligned columns.
    let status_cols: Vec<usize> = ["ptrace ", "seccomp-filter ", "CAP_SYS_ADMIN ", "cgroups "]
        .iter()
        .map(|n| {
            let l = text
                .lines()
                .find(|l| l.trim_start().starts_with(n))
                .unwrap();
            l.find(" ok ")
                .or_else(|| l.find(" warn "))
                .or_else(|| l.find(" missing "))
                .unwrap()
        })
        .collect();
    assert!(
        status_cols.windows(2).all(|w| w[0] == w[1]),
        "{status_cols:?}\n{text}"
    );
    assert!(text.contains("statx-no-automount"));
    assert!(text.contains("--hold connect:127.0.0.1:6444"));
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("k3shim can work here"),
        "{text}"
    );
}

fn runsc() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("runsc"))
        .find(|p| p.is_file())
}

#[test]
fn doctor_inside_gvisor_detects_it_and_lists_panic_on_oom_missing() {
    let Some(runsc) = runsc() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("runsc is not installed (apt-get install -y runsc): the gVisor doctor test cannot run under CI=true");
        }
        eprintln!(
            "SKIPPED: runsc not installed (apt-get install -y runsc); this fails under CI=true"
        );
        return;
    };
    let out = output(
        Command::new(runsc)
            .args([
                "--platform=ptrace",
                "--network=none",
                "do",
                env!("CARGO_BIN_EXE_k3shim"),
                "doctor",
                "--json",
            ])
            .env_remove("K3SHIM_PROC_SYS_ROOT"),
    );
    let r: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json in gVisor: {e}\nexit {}\nstdout: {}\nstderr: {}",
            out.code, out.stdout, out.stderr
        )
    });
    assert_shape(&r);
    assert_eq!(r["sandbox"]["gvisor"], true, "{:#}", r["sandbox"]);
    assert_eq!(r["sandbox"]["kind"], "gvisor");
    assert_eq!(r["sandbox"]["platform"], "ptrace", "{:#}", r["sandbox"]);
    assert!(
        strings(&r["sandbox"]["markers"])
            .iter()
            .any(|m| m.contains("/proc/cmdline")),
        "{:#}",
        r["sandbox"]
    );
    assert_eq!(r["proc_sys_root"], "/proc/sys");

    let missing = strings(&r["missing"]);
    assert!(missing.contains(&"vm/panic_on_oom"), "{missing:?}");
    assert!(missing.contains(&"kernel/panic"), "{missing:?}");
    let readonly = strings(&r["readonly"]);
    assert!(
        readonly.contains(&"vm/overcommit_memory") && readonly.contains(&"net/core/somaxconn"),
        "{readonly:?}"
    );
    assert!(
        !readonly.contains(&"net/ipv4/ip_forward"),
        "ip_forward accepts writes in gVisor: {readonly:?}"
    );

    // The engine's probe works here, with gVisor's quirks.
    assert_eq!(r["ok"], true, "{}", r["summary"]);
    assert_eq!(out.code, 0);
    assert_eq!(r["probe"]["read_mode"], "proc_mem");
    assert_eq!(r["probe"]["statx_no_automount_broken"], true);
    let fix = r["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "statx-no-automount")
        .unwrap();
    assert_eq!(fix["on"], true, "{fix}");
    assert_eq!(check(&r, "seccomp-user-notif")["status"], "warn");
    assert_eq!(check(&r, "dev-kmsg")["status"], "missing");

    let flags: Vec<&str> = r["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["flag"].as_str().unwrap())
        .collect();
    for f in ["--protect-kernel-defaults=false", "--flannel-backend=none"] {
        assert!(flags.contains(&f), "{f} not in {flags:?}");
    }
}
