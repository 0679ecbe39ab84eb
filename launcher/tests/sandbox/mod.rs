//! Running k3shim for real: natively, and inside gVisor
//! (`runsc --platform=ptrace --network=none do`). Shared by the integration
//! tests. In CI (CI=true) a missing runsc or Go toolchain fails the test;
//! elsewhere the gVisor half is skipped with a notice.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The k3shim binary under test.
pub fn k3shim() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_k3shim"))
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The Go fixtures (standin, sysstress, threadtorture), built once per test
/// run into target/fixtures with tests/fixtures/go/build.sh.
pub fn fixtures() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = workspace().join("target/fixtures");
        std::fs::create_dir_all(&out).expect("create target/fixtures");
        // build.sh is idempotent; a lock keeps parallel test binaries from racing.
        let st = Command::new("flock")
            .arg(out.join(".lock"))
            .arg("bash")
            .arg(workspace().join("tests/fixtures/go/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run flock bash tests/fixtures/go/build.sh (is util-linux installed?)");
        assert!(
            st.success(),
            "building the Go fixtures failed: is Go on PATH?"
        );
        out
    })
    .clone()
}

/// Is runsc here? Panics in CI when it is not. K3SHIM_TEST_NATIVE_ONLY=1
/// (scripts/test's second pass, under K3SHIM_BACKEND=mount) skips the
/// gVisor halves.
pub fn have_gvisor() -> bool {
    if std::env::var_os("K3SHIM_TEST_NATIVE_ONLY").is_some_and(|v| v == "1") {
        return false;
    }
    let ok = Command::new("runsc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "runsc is missing: CI must install it (apt-get install -y runsc)"
        );
        eprintln!("NOTICE: runsc not found; skipping the gVisor half of this test");
    }
    ok
}

/// How long one sandboxed or native script may run before the test fails
/// (K3SHIM_TEST_TIMEOUT seconds, default 300): a hang must fail one test with
/// its output, not stall CI until its own limit.
pub fn script_timeout() -> u64 {
    std::env::var("K3SHIM_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Runs `program args` under coreutils `timeout` (TERM, then KILL 10 s later)
/// and panics with everything it printed when the limit is hit.
fn run_bounded(program: &str, args: &[&str], what: &str) -> Output {
    let limit = script_timeout();
    let start = std::time::Instant::now();
    let o = Command::new("timeout")
        .args(["-k", "10", &limit.to_string(), program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run timeout {program}: {e} (coreutils is needed by the tests)")
        });
    let code = o.status.code();
    if (code == Some(124) || code == Some(137) || code.is_none())
        && start.elapsed().as_secs() >= limit
    {
        panic!(
            "{what} did not finish within {limit} s (K3SHIM_TEST_TIMEOUT) and was killed\n--- script ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.last().unwrap_or(&""),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    o
}

/// Runs `sh -c script` inside gVisor. Output is captured through pipes (runsc
/// garbles output when stdout and stderr are the same regular file).
pub fn gvisor(script: &str) -> Output {
    run_bounded(
        "runsc",
        &[
            "--platform=ptrace",
            "--network=none",
            "do",
            "/bin/sh",
            "-c",
            script,
        ],
        "a gVisor script",
    )
}

/// Runs `sh -c script` natively.
pub fn native(script: &str) -> Output {
    run_bounded("/bin/sh", &["-c", script], "a native script")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test, under target/ (visible inside gVisor too,
/// but writes made inside gVisor stay inside its overlay).
pub fn scratch(name: &str) -> PathBuf {
    let d = workspace()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Asserts with both streams shown.
#[track_caller]
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Host sysctl values that must not change during native tests.
pub fn host_sysctls() -> Vec<(String, String)> {
    [
        "kernel/panic",
        "kernel/panic_on_oops",
        "vm/panic_on_oom",
        "vm/overcommit_memory",
        "kernel/keys/root_maxkeys",
        "net/ipv4/ip_forward",
    ]
    .iter()
    .map(|p| {
        (
            p.to_string(),
            std::fs::read_to_string(format!("/proc/sys/{p}")).unwrap_or_default(),
        )
    })
    .collect()
}

/// The real python3 binary (not a pyenv shim script, which starts slowly in gVisor).
pub fn python() -> String {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| {
        let o = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the tests");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    })
    .clone()
}

/// Builds tests/fixtures/c/NAME.c once per test process into target/fixtures/c
/// and returns the binary. The build goes to a temporary file renamed into
/// place (under a lock shared with parallel test binaries), so a program
/// started from the path never sees a half-written file.
pub fn c_fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let out = workspace().join("target/fixtures/c");
    let bin = out.join(name);
    let built = BUILT.get_or_init(Default::default);
    let mut done = built.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains(name) {
        return bin;
    }
    std::fs::create_dir_all(&out).expect("create target/fixtures/c");
    let src = workspace().join(format!("tests/fixtures/c/{name}.c"));
    let tmp = out.join(format!(".{name}.{}", std::process::id()));
    let o = Command::new("flock")
        .arg(out.join(".lock"))
        .arg("sh")
        .arg("-c")
        .arg(r#"cc -O2 -Wall -fno-stack-protector -o "$1" "$2" && mv -f "$1" "$3""#)
        .arg("sh")
        .arg(&tmp)
        .arg(&src)
        .arg(&bin)
        .output()
        .expect("run flock cc (are util-linux and a C compiler installed?)");
    assert_ok(&o, &format!("cc {}", src.display()));
    done.insert(name.to_string());
    bin
}
