//! Hardening (issue 8): k3shim never corrupts, loses, leaks, or lets a tracee
//! escape. Each test states one guarantee and checks it natively (shadow mode:
//! the host's /proc/sys is never written) and inside gVisor where possible.
//!
//! The C programs in tests/fixtures/c/ are built here with `cc`; the Go
//! fixtures come from tests/fixtures/go/build.sh. The soak length is
//! K3SHIM_SOAK_SECS (default 20 s).

mod sandbox;

use sandbox::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The C programs, built once into target/fixtures/c.
fn c_prog(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = ws().join("target/fixtures/c");
        std::fs::create_dir_all(&out).unwrap();
        for src in std::fs::read_dir(ws().join("tests/fixtures/c"))
            .unwrap()
            .flatten()
        {
            let p = src.path();
            if p.extension().and_then(|e| e.to_str()) != Some("c") {
                continue;
            }
            let bin = out.join(p.file_stem().unwrap());
            let o = Command::new("cc")
                .args(["-O2", "-Wall", "-fno-stack-protector", "-o"])
                .arg(&bin)
                .arg(&p)
                .output()
                .expect("run cc");
            assert_ok(&o, &format!("cc {}", p.display()));
        }
        out
    });
    dir.join(name)
}

fn k() -> String {
    k3shim().display().to_string()
}

/// Drops the value after "ok " (fake and real values differ by design).
fn comparable(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| match l.split_once(": ok ") {
            Some((name, v)) if v != "reg" && v != "dir" && v != "other" => {
                format!("{name}: ok <value>")
            }
            _ => l.to_string(),
        })
        .collect()
}

/// Values read by `edge` ("name: ok VALUE" lines that are not stat types).
fn values(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once(": ok ").map(|(_, v)| v.to_string()))
        .filter(|v| v != "reg" && v != "dir" && v != "other")
        .collect()
}

fn edge_dir(st: &Path) -> PathBuf {
    let d = st.join("edge-dir");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("panic"), "0\n").unwrap();
    d
}

// ------------------------------------------------------------ hostile pointers and paths

#[test]
fn efault_path_max_non_utf8_and_empty_paths_behave_as_without_the_shim_natively() {
    let st = scratch("edge-native");
    let d = edge_dir(&st);
    let edge = c_prog("edge");
    let plain = native(&format!("{} {} create", edge.display(), d.display()));
    assert_ok(&plain, "edge natively");
    let shim = native(&format!(
        "{} run --mode shadow --state {} -- {} {} create",
        k(),
        st.join("s").display(),
        edge.display(),
        d.display()
    ));
    assert_ok(&shim, "edge under k3shim");
    assert_eq!(
        stdout(&shim),
        stdout(&plain),
        "a scratch dir (no rule applies): identical results"
    );
    assert!(
        stdout(&plain).contains("open(PATH_MAX bytes): ENAMETOOLONG")
            && stdout(&plain).contains("open(NULL): EFAULT")
    );
}

#[test]
fn the_same_edge_cases_on_proc_sys_natively_in_shadow_mode() {
    let before = host_sysctls();
    let st = scratch("edge-procsys");
    let edge = c_prog("edge");
    let plain = native(&format!("{} /proc/sys/kernel", edge.display()));
    let shim = native(&format!(
        "{} run --mode shadow --state {} -- {} /proc/sys/kernel",
        k(),
        st.join("s").display(),
        edge.display()
    ));
    assert_ok(&shim, "edge on /proc/sys under k3shim");
    assert_eq!(
        comparable(&stdout(&shim)),
        comparable(&stdout(&plain)),
        "redirected paths fail and succeed as the kernel's do"
    );
    let v = values(&stdout(&shim));
    assert!(v.len() >= 4 && v.iter().all(|x| x == &v[0]), "every spelling (short, PATH_MAX-1 bytes, up to unmapped memory, dirfd) reads the same fake value: {v:?}");
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn efault_path_max_non_utf8_and_empty_paths_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let st = scratch("edge-gvisor");
    let d = edge_dir(&st);
    let edge = c_prog("edge");
    let plain = gvisor(&format!("{} {} create", edge.display(), d.display()));
    assert_ok(&plain, "edge in gVisor");
    let shim = gvisor(&format!(
        "{} run --state /tmp/k3shim-edge -- {} {} create",
        k(),
        edge.display(),
        d.display()
    ));
    assert_ok(&shim, "edge under k3shim in gVisor");
    assert_eq!(
        stdout(&shim),
        stdout(&plain),
        "gVisor with and without the shim"
    );
    // On /proc/sys, gVisor alone has no such entries; the shim serves them with
    // the results a real directory holding the file gives (same gVisor).
    let plain_dir = gvisor(&format!("{} {}", edge.display(), d.display()));
    let shim_sys = gvisor(&format!(
        "{} run --state /tmp/k3shim-edge -- {} /proc/sys/kernel",
        k(),
        edge.display()
    ));
    assert_ok(&shim_sys, "edge on /proc/sys in gVisor");
    assert_eq!(
        comparable(&stdout(&shim_sys)),
        comparable(&stdout(&plain_dir))
    );
}

// ------------------------------------------------------------ interrupted syscalls

/// eintr natively and under the shim, with the FIFO reached directly and
/// through a bind (so the interrupted open carries a rewritten pointer).
#[test]
fn interrupted_opens_restart_or_return_eintr_exactly_as_without_the_shim_natively() {
    let st = scratch("eintr");
    let d = st.join("fifo-dir");
    std::fs::create_dir_all(&d).unwrap();
    let e = c_prog("eintr");
    let plain = native(&format!("{} {}", e.display(), d.display()));
    assert_ok(&plain, "eintr natively");
    assert!(
        stdout(&plain).contains("no-restart: EINTR handler=ran"),
        "{}",
        stdout(&plain)
    );
    let shim = native(&format!(
        "{} run --mode shadow --state {} -- {} {}",
        k(),
        st.join("s").display(),
        e.display(),
        d.display()
    ));
    assert_eq!(stdout(&shim), stdout(&plain), "{}", stderr(&shim));
    let bound = native(&format!(
        "{} run --mode shadow --state {} -b {}:/k3shim-bound -- {} {} /k3shim-bound/fifo",
        k(),
        st.join("s").display(),
        d.display(),
        e.display(),
        d.display()
    ));
    assert_eq!(
        stdout(&bound),
        stdout(&plain),
        "redirected FIFO: {}",
        stderr(&bound)
    );
}

#[test]
fn interrupted_opens_behave_as_without_the_shim_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let st = scratch("eintr-g");
    let d = st.join("fifo-dir");
    std::fs::create_dir_all(&d).unwrap();
    let e = c_prog("eintr");
    // gVisor's own answers differ from Linux (EINTR despite SA_RESTART, and
    // after SIGSTOP/SIGCONT): the reference is gVisor without the shim.
    let plain = gvisor(&format!("{} {}", e.display(), d.display()));
    assert_ok(&plain, "eintr in gVisor");
    let shim = gvisor(&format!(
        "{} run --state /tmp/s -b {}:/k3shim-bound -- {} {} /k3shim-bound/fifo",
        k(),
        d.display(),
        e.display(),
        d.display()
    ));
    assert_eq!(stdout(&shim), stdout(&plain), "{}", stderr(&shim));
}

// ------------------------------------------------------------ thread torture

/// The value a traced program reads at /proc/sys/kernel/panic with this state.
fn fake_panic(state: &Path, shadow: bool) -> String {
    let mode = if shadow { "--mode shadow" } else { "" };
    let o = native(&format!(
        "{} run {mode} --state {} -- cat /proc/sys/kernel/panic",
        k(),
        state.display()
    ));
    assert_ok(&o, "cat under the shim");
    stdout(&o).trim().to_string()
}

#[test]
fn raw_clone_threads_churn_with_signal_storms_stop_cont_and_sigchld_natively() {
    let before = host_sysctls();
    let st = scratch("rawthreads");
    let s = st.join("s");
    let v = fake_panic(&s, true);
    let o = native(&format!(
        "{} run --mode shadow --state {} -- {} /proc/sys/kernel/panic {v} 2000 32",
        k(),
        s.display(),
        c_prog("threads").display()
    ));
    assert_ok(&o, "raw clone threads natively");
    eprintln!("{}", stdout(&o).trim());
    assert!(
        stdout(&o).contains("threads: ok threads=2000 reads=8000"),
        "{}",
        stdout(&o)
    );
    assert_eq!(host_sysctls(), before);
}

#[test]
fn raw_clone_threads_churn_with_signal_storms_stop_cont_and_sigchld_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&format!(
        "{} run --state /tmp/s -- {} /proc/sys/kernel/panic 0 2000 32",
        k(),
        c_prog("threads").display()
    ));
    assert_ok(&o, "raw clone threads in gVisor");
    eprintln!("{}", stdout(&o).trim());
    assert!(
        stdout(&o).contains("threads: ok threads=2000 reads=8000"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn go_threadtorture_2000_threads_signals_and_exec_from_a_thread_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let tt = fixtures().join("threadtorture");
    let t0 = Instant::now();
    let o = gvisor(&format!("{} run --state /tmp/s -- {} -threads 2000 -signals 40 -exec-from-thread vm/panic_on_oom=0 kernel/panic=0", k(), tt.display()));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert_ok(&o, "threadtorture in gVisor");
    eprintln!(
        "{} ({:?})",
        all.lines()
            .filter(|l| l.contains(": ok"))
            .collect::<Vec<_>>()
            .join(" | "),
        t0.elapsed()
    );
    assert!(
        all.contains("torture ok; threads=2000 distinct_tids=2000"),
        "{all}"
    );
    assert!(all.contains("exec from non-leader thread ok"), "{all}");
}

/// Natively, 2000 threads with 8 readers take about 75 s on 2 CPUs (every
/// thread start and every signal is a ptrace stop): CI runs 1000 with 2
/// readers; K3SHIM_SOAK_SECS > 0 runs the full 2000.
#[test]
fn go_threadtorture_threads_natively_in_shadow_mode() {
    let before = host_sysctls();
    let st = scratch("tt-native");
    let s = st.join("s");
    let v = fake_panic(&s, true);
    let tt = fixtures().join("threadtorture");
    let soak = std::env::var("K3SHIM_SOAK_SECS")
        .map(|v| v != "0")
        .unwrap_or(false);
    let (n, readers) = if soak { (2000, 8) } else { (1000, 2) };
    let o = native(&format!("{} run --mode shadow --state {} -- {} -threads {n} -readers {readers} -signals 40 -exec-from-thread kernel/panic={v}", k(), s.display(), tt.display()));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert_ok(&o, "threadtorture natively");
    eprintln!(
        "{}",
        all.lines()
            .filter(|l| l.contains("ok"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(
        all.contains(&format!("torture ok; threads={n} distinct_tids={n}"))
            && all.contains("exec from non-leader thread ok"),
        "{all}"
    );
    assert_eq!(host_sysctls(), before);
}

// ------------------------------------------------------------ SIGKILL

fn traced_by(tracer: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            if s.lines().any(|l| l == format!("TracerPid:\t{tracer}")) {
                out.push(pid);
                break;
            }
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for this purpose: it runs nothing and holds no filter.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .map(|(_, r)| r.starts_with('Z') || r.starts_with('X'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

#[test]
fn sigkill_to_the_tracer_mid_run_kills_the_traced_tree_and_leaves_the_state_valid() {
    let before = host_sysctls();
    let st = scratch("sigkill-tracer");
    let s = st.join("s");
    let ss = fixtures().join("sysstress");
    let mut rng = (std::process::id() as u64).wrapping_mul(6364136223846793005);
    for round in 0..5 {
        // A tree: sh -> sysstress (writing, with exec children) and a second writer loop.
        let mut c = Command::new(k3shim())
            .args(["run", "--mode", "shadow", "--state"])
            .arg(&s)
            .args(["--", "sh", "-c"])
            .arg(format!(
                "while :; do echo 10 > /proc/sys/kernel/panic; echo 7 > /proc/sys/kernel/panic; done & {} -write -goroutines 16 -iterations 100000 -exec-every 5 kernel/panic_on_oops=1,0 vm/panic_on_oom=0,1 & wait",
                ss.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(600 + (rng >> 33) % 1200));
        let tree = traced_by(c.id());
        assert!(
            tree.len() >= 3,
            "round {round}: the traced tree is running: {tree:?}"
        );
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        let t0 = Instant::now();
        while tree.iter().any(|p| alive(*p)) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survivors: Vec<_> = tree.iter().filter(|p| alive(**p)).collect();
        assert!(
            survivors.is_empty(),
            "round {round}: traced processes outlived their tracer: {survivors:?}"
        );
        // The state directory reopens and every value is one that was written or the seed.
        for (path, ok) in [
            ("kernel/panic", &["10", "7"][..]),
            ("kernel/panic_on_oops", &["1", "0"][..]),
            ("vm/panic_on_oom", &["0", "1"][..]),
        ] {
            let o = Command::new(k3shim())
                .args(["fakefs", "get", "--state"])
                .arg(&s)
                .arg(path)
                .output()
                .unwrap();
            assert_ok(
                &o,
                &format!("round {round}: fakefs get {path} after SIGKILL"),
            );
            let v = stdout(&o).trim().to_string();
            let seed = before
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default();
            assert!(
                ok.contains(&v.as_str()) || v == seed,
                "round {round}: {path} = {v:?}"
            );
        }
        let o = Command::new(k3shim())
            .args(["fakefs", "show", "--state"])
            .arg(&s)
            .output()
            .unwrap();
        assert_ok(&o, "fakefs show after SIGKILL");
    }
    assert_eq!(host_sysctls(), before);
}

#[test]
fn a_writer_killed_mid_write_leaves_the_old_or_the_new_value() {
    let st = scratch("kill-writer");
    let s = st.join("s");
    let ss = fixtures().join("sysstress");
    let pidfile = st.join("pid");
    let mut rng = (std::process::id() as u64) | 1;
    for round in 0..10 {
        let _ = std::fs::remove_file(&pidfile);
        let mut c = Command::new(k3shim())
            .args(["run", "--mode", "shadow", "--state"])
            .arg(&s)
            .args(["--", "sh", "-c"])
            .arg(format!("echo $$ > {}; exec {} -write -goroutines 8 -iterations 100000 -exec-every 0 kernel/panic=12345,7 net/ipv4/ip_local_port_range=1024\\ 65000,32768\\ 60999", pidfile.display(), ss.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut pid = 0;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                pid = p;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(pid > 0);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(200 + rng % 800));
        // SAFETY: SIGKILL to the traced writer we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = c.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(128 + 9),
            "round {round}: k3shim reports the writer's SIGKILL"
        );
        for (path, ok) in [
            ("kernel/panic", &["12345", "7"][..]),
            (
                "net/ipv4/ip_local_port_range",
                &["1024 65000", "32768 60999"][..],
            ),
        ] {
            let o = Command::new(k3shim())
                .args(["fakefs", "get", "--state"])
                .arg(&s)
                .arg(path)
                .output()
                .unwrap();
            assert_ok(&o, "fakefs get");
            let v = stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                ok.contains(&v.as_str()) || round == 0,
                "round {round}: {path} = {v:?} (a torn or foreign value)"
            );
        }
    }
}

#[test]
fn sigkill_to_the_tracer_and_writers_in_gvisor_leaves_valid_values() {
    if !have_gvisor() {
        return;
    }
    let ss = fixtures().join("sysstress");
    // Inside one sandbox: start, wait until the writer's pid file (one per
    // round) has its pid, kill -9 the tracer or the writer at varying times,
    // then read back with a fresh k3shim (state persists in the overlay).
    // Killing before the pid is known would hit a stale pid and leave a writer
    // of 800,000 values running for many minutes. (No `mv` into place: in
    // runsc's overlay, renameat2(RENAME_NOREPLACE) onto a name that existed
    // and was unlinked fails with EEXIST, with or without k3shim.)
    let script = format!(
        "S=/tmp/kstate; for i in 1 2 3 4 5 6; do \
           W=/tmp/wpid.$i; \
           {k} run --state $S -- sh -c \"echo \\$\\$ > $W; exec {ss} -write -goroutines 8 -iterations 100000 -exec-every 0 kernel/panic=12345,7\" >/dev/null 2>&1 & K=$!; \
           n=0; while [ ! -s $W ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; \
           [ -s $W ] || echo NOSTART; \
           sleep 0.$((1 + i)); \
           if [ $((i % 2)) = 0 ]; then kill -9 $K; else kill -9 $(cat $W); fi; wait $K; echo \"rc=$?\" >&2; \
           sleep 0.3; \
           P=$(cat $W); if [ -n \"$P\" ] && [ -d /proc/$P ] && ! grep -q '^State:.Z' /proc/$P/status; then echo SURVIVOR; fi; \
           {k} fakefs get --state $S kernel/panic; \
         done",
        k = k(),
        ss = ss.display()
    );
    let o = gvisor(&script);
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(
        !out.contains("SURVIVOR") && !out.contains("NOSTART"),
        "{out}\n{err}"
    );
    // Every run ended by the SIGKILL (k3shim reports a killed command as 137), not by finishing.
    assert_eq!(err.matches("rc=137").count(), 6, "{out}\n{err}");
    let vals: Vec<&str> = out.lines().collect();
    assert_eq!(vals.len(), 6, "{out}\n{err}");
    assert!(
        vals.iter().all(|v| ["12345", "7", "0"].contains(&v.trim())),
        "{out}"
    );
}

// ------------------------------------------------------------ confinement

/// The tracee (root, traced) swaps state files for symlinks to a victim
/// outside the state directory, before and during writes: the victim never
/// changes and no value is read from it.
fn symlink_script(k: &str, state: &str, tmp: &str) -> String {
    format!(
        r#"set -u
S={state}; T={tmp}
mkdir -p $T/victimdir; echo victim > $T/victim; echo victim > $T/victimdir/panic
{k} run --mode shadow --state $S -- sh -c 'echo 1 > /proc/sys/kernel/panic' || exit 9
{k} run --mode shadow --state $S -- sh -c '
  S={state}; T={tmp}
  rm -f $S/values/kernel/panic; ln -s $T/victim $S/values/kernel/panic
  echo 5 > /proc/sys/kernel/panic; echo "write-through-file-link rc=$?"
  echo "read-file-link=$(cat /proc/sys/kernel/panic 2>&1 | head -c 40)"
  mv $S/values/kernel $S/values/kernel.real; ln -s $T/victimdir $S/values/kernel
  echo 6 > /proc/sys/kernel/panic; echo "write-through-dir-link rc=$?"
  rm $S/values/kernel; mv $S/values/kernel.real $S/values/kernel
  ( i=0; while [ $i -lt 300 ]; do rm -f $S/values/kernel/panic; ln -s $T/victim $S/values/kernel/panic; rm -f $S/values/kernel/panic; echo 3 > $S/values/kernel/panic; i=$((i+1)); done ) &
  i=0; while [ $i -lt 300 ]; do echo 7 > /proc/sys/kernel/panic; i=$((i+1)); done 2>/dev/null
  wait
  rm -f $S/values/kernel/panic; echo 4 > $S/values/kernel/panic
  echo 8 > /proc/sys/kernel/panic; echo "final write rc=$?"
'
echo "victim=$(cat $T/victim) victimdir=$(cat $T/victimdir/panic)"
[ -L $T/victim ] && echo "VICTIM BECAME A LINK"
{k} fakefs get --state $S kernel/panic
"#
    )
}

fn check_symlink_output(out: &str, err: &str) {
    assert!(
        out.contains("victim=victim victimdir=victim"),
        "a file outside the state dir changed:\n{out}\n{err}"
    );
    assert!(
        !out.contains("read-file-link=victim"),
        "the tracee read the victim through the fake entry:\n{out}"
    );
    assert!(
        out.contains("final write rc=0"),
        "the state dir recovers:\n{out}\n{err}"
    );
    assert_eq!(
        out.lines().last().map(str::trim),
        Some("8"),
        "fakefs reads the last value:\n{out}\n{err}"
    );
}

#[test]
fn a_tracee_swapping_state_files_for_symlinks_cannot_make_k3shim_write_outside_natively() {
    let before = host_sysctls();
    let st = scratch("symlink");
    let o = native(&symlink_script(
        &k(),
        &st.join("s").display().to_string(),
        &st.display().to_string(),
    ));
    eprintln!("{}", stdout(&o));
    check_symlink_output(&stdout(&o), &stderr(&o));
    assert_eq!(host_sysctls(), before);
}

/// This gVisor opens a symlink to a directory even with O_NOFOLLOW|O_DIRECTORY,
/// and has no openat2: fakefs's step-by-step walk therefore checks each opened
/// fd against an lstat of its name (fsutil::open_at_checked), so replacing
/// values/kernel with a symlink gets ELOOP instead of a write to its target.
#[test]
fn a_tracee_swapping_state_files_for_symlinks_cannot_make_k3shim_write_outside_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&symlink_script(&k(), "/tmp/ksym-state", "/tmp/ksym"));
    check_symlink_output(&stdout(&o), &stderr(&o));
}

/// A state directory damaged between runs (a user's mistake): a directory
/// symlink, a file symlink and a garbage value. The run warns once, serves
/// none of them (EIO), never reads or writes through the symlinks; `fakefs
/// init` moves them aside and the next run reads the entries again.
fn damaged_state_script(k: &str, state: &str, tmp: &str, mode: &str) -> String {
    format!(
        r#"set -u
S={state}; T={tmp}; M={mode}
rm -rf $S $T; mkdir -p $T/outside; echo 2 > $T/outside/panic_on_oom; echo 2 > $T/outside/secret
{k} run --mode $M --state $S -- sh -c 'echo 1 > /proc/sys/vm/panic_on_oom; echo 1 > /proc/sys/kernel/panic_on_oops' || exit 9
mv $S/values/vm $T/vm.orig; ln -s $T/outside $S/values/vm
rm $S/values/kernel/panic_on_oops; ln -s $T/outside/secret $S/values/kernel/panic_on_oops
printf 'garbage\0\377\n' > $S/values/kernel/panic
{k} run --mode $M --state $S -- sh -c '
  for p in vm/panic_on_oom kernel/panic_on_oops kernel/panic; do echo "read $p: $(cat /proc/sys/$p 2>&1)"; done
  echo 1 > /proc/sys/vm/panic_on_oom; echo "write rc=$?"
  echo 1 > /proc/sys/kernel/panic_on_oops; echo "write rc=$?"' 2>$T/err
echo "run rc=$?"
echo "warnings=$(grep -c '^k3shim: warning: state directory' $T/err)"
cat $T/err >&2
echo "outside=$(cat $T/outside/panic_on_oom $T/outside/secret | tr '\n' ' ')"
{k} fakefs init --state $S | grep -c '^repaired: ' | sed 's/^/repairs=/'
{k} run --mode $M --state $S -- sh -c 'for p in vm/panic_on_oom kernel/panic_on_oops kernel/panic; do echo "after $p: $(cat /proc/sys/$p 2>&1)"; done' 2>$T/err2
echo "warnings after init=$(grep -c 'k3shim: warning' $T/err2)"
"#
    )
}

fn check_damaged_state_output(out: &str, err: &str) {
    let all = format!("{out}\n--- stderr\n{err}");
    assert!(out.contains("run rc=0"), "{all}");
    for p in ["vm/panic_on_oom", "kernel/panic_on_oops", "kernel/panic"] {
        assert!(
            out.contains(&format!("read {p}: cat: /proc/sys/{p}: Input/output error")),
            "{p} is not served: {all}"
        );
        let after = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("after {p}: ")))
            .unwrap_or_else(|| panic!("no read of {p} after init: {all}"));
        assert!(
            after.parse::<i64>().is_ok(),
            "{p} reads a value after init: {all}"
        );
    }
    assert_eq!(
        out.matches("write rc=").count(),
        2,
        "both writes were tried: {all}"
    );
    assert!(
        !out.contains("write rc=0"),
        "a write to a damaged entry failed: {all}"
    );
    assert!(out.contains("warnings=1\n"), "one warning line: {all}");
    assert!(
        err.contains("values/vm is a symlink to") && err.contains("fakefs init"),
        "{all}"
    );
    assert!(
        out.contains("outside=2 2 "),
        "nothing outside the state directory changed: {all}"
    );
    assert!(out.contains("repairs=3"), "{all}");
    assert!(out.contains("warnings after init=0"), "{all}");
}

#[test]
fn a_state_directory_damaged_between_runs_is_never_served_natively_in_shadow_mode() {
    let before = host_sysctls();
    let st = scratch("damaged");
    let o = native(&damaged_state_script(
        &k(),
        &st.join("s").display().to_string(),
        &st.join("t").display().to_string(),
        "shadow",
    ));
    check_damaged_state_output(&stdout(&o), &stderr(&o));
    assert_eq!(host_sysctls(), before);
}

#[test]
fn a_state_directory_damaged_between_runs_is_never_served_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    for mode in ["overlay", "shadow"] {
        let o = gvisor(&damaged_state_script(
            &k(),
            "/tmp/kdmg-state",
            "/tmp/kdmg",
            mode,
        ));
        check_damaged_state_output(&stdout(&o), &stderr(&o));
    }
}

// ------------------------------------------------------------ the shim changes only what its rules say

/// A workload that never touches /proc/sys prints everything it can observe
/// about its own syscalls: results, errnos, file contents and metadata, its
/// fds and the names of its mappings, children's exit codes. Natively and
/// under k3shim the output must be identical, apart from what being traced
/// shows by definition (TracerPid, Seccomp in /proc/self/status), which the
/// workload prints separately and the test checks on its own.
const OBSERVER: &str = r#"
import os, sys, stat, errno, subprocess, signal
d = sys.argv[1]
out = []
def rec(name, f):
    try:
        r = f()
        out.append(f"{name}: ok {r}")
    except OSError as e:
        out.append(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
os.chdir(d)
rec("mkdir", lambda: os.mkdir("a"))
rec("mkdir again", lambda: os.mkdir("a"))
rec("write", lambda: open("a/f", "w").write("x" * 1000))
rec("read", lambda: len(open("a/f").read()))
rec("stat", lambda: (stat.S_IFMT(os.stat("a/f").st_mode), os.stat("a/f").st_size, oct(os.stat("a/f").st_mode & 0o777)))
rec("symlink", lambda: os.symlink("f", "a/l"))
rec("readlink", lambda: os.readlink("a/l"))
rec("lstat", lambda: stat.S_ISLNK(os.lstat("a/l").st_mode))
rec("rename", lambda: os.rename("a/f", "a/g"))
rec("open missing", lambda: open("a/f"))
rec("dangling", lambda: open("a/l"))
rec("link", lambda: os.link("a/g", "a/h"))
rec("nlink", lambda: os.stat("a/g").st_nlink)
rec("chmod", lambda: os.chmod("a/g", 0o600))
rec("access", lambda: os.access("a/g", os.X_OK))
rec("truncate", lambda: os.truncate("a/g", 10))
rec("size", lambda: os.path.getsize("a/g"))
rec("utime", lambda: os.utime("a/g", (1, 2)))
rec("mtime", lambda: os.stat("a/g").st_mtime)
rec("listdir", lambda: sorted(os.listdir("a")))
rec("unlink", lambda: [os.unlink("a/" + n) for n in ("g", "h", "l")])
rec("rmdir", lambda: os.rmdir("a"))
rec("rmdir missing", lambda: os.rmdir("a"))
rec("getcwd", lambda: os.getcwd() == os.path.realpath(d))
rec("fds", lambda: sorted(int(x) for x in os.listdir("/proc/self/fd")))
rec("maps", lambda: sorted(set(l.split()[5] for l in open("/proc/self/maps") if len(l.split()) > 5 and not l.split()[5].startswith("/usr") and not l.split()[5].startswith("/lib"))))
rec("sh", lambda: subprocess.run(["sh", "-c", "echo hi; ls -la /usr/bin >/dev/null; exit 3"], capture_output=True).returncode)
rec("ls", lambda: subprocess.run(["ls", "-la", "/usr/bin"], capture_output=True, text=True).stdout.count("\n"))
rec("stat tool", lambda: subprocess.run(["stat", "-c", "%F %s", "/etc/hostname"], capture_output=True, text=True).stdout)
rec("signal self", lambda: subprocess.run(["sh", "-c", "kill -USR1 $$"]).returncode)
rec("umask", lambda: os.umask(0o22))
print("\n".join(out))
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print("TRACED", st.get("TracerPid", "?").strip() != "0", "SECCOMP", st.get("Seccomp", "?").strip(), file=sys.stderr)
"#;

#[test]
fn a_workload_that_never_touches_proc_sys_sees_the_same_results_with_and_without_the_shim() {
    let st = scratch("observer");
    let py = st.join("observer.py");
    std::fs::write(&py, OBSERVER).unwrap();
    let (d1, d2) = (st.join("w1"), st.join("w2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let plain = Command::new("python3").arg(&py).arg(&d1).output().unwrap();
    assert_ok(&plain, "observer natively");
    let shim = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args(["--", "python3"])
        .arg(&py)
        .arg(&d2)
        .output()
        .unwrap();
    assert_ok(&shim, "observer under k3shim");
    assert_eq!(
        stdout(&shim),
        stdout(&plain),
        "the shim changed what the program sees"
    );
    // What being traced shows by definition, and nothing else:
    assert!(
        stderr(&plain).contains("TRACED False"),
        "{}",
        stderr(&plain)
    );
    assert!(
        stderr(&shim).contains("TRACED True SECCOMP 2"),
        "{}",
        stderr(&shim)
    );
}

/// At the syscall level: the path syscalls the shim stops (the only ones it
/// can change: every other syscall is ALLOWed by the seccomp filter and never
/// stops) are compared with `strace -f` of the same workload natively: the
/// same (syscall, path, result) multiset. strace cannot trace a process that
/// k3shim already traces, so k3shim's own trace (which reports the result the
/// program received) is the record under the shim.
#[test]
fn the_path_syscalls_of_a_workload_outside_proc_sys_have_the_results_strace_sees_natively() {
    if Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(std::env::var("CI").is_err(), "strace is missing");
        return;
    }
    let st = scratch("strace-cmp");
    let d = st.join("w");
    std::fs::create_dir_all(&d).unwrap();
    let work = format!("cd {}; mkdir -p x; echo data > x/f; cat x/f; ls -la x; stat x/f >/dev/null; cat x/missing; rm -r x; true", d.display());
    // execve is left out: a successful execve has no exit stop to report (k3shim
    // logs it as an exec event instead), so the trace has no line to compare.
    let names =
        "openat,newfstatat,mkdir,unlinkat,unlink,rmdir,access,faccessat2,readlink,chdir,statx";
    let sf = st.join("strace.txt");
    let o = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            &format!("trace={names}"),
            "-e",
            "signal=none",
            "-o",
        ])
        .arg(&sf)
        .args(["sh", "-c", &work])
        .output()
        .unwrap();
    assert_ok(&o, "strace natively");
    let tf = st.join("trace.txt");
    let o2 = Command::new(k3shim())
        .args(["trace", "--state"])
        .arg(st.join("s"))
        .arg("-o")
        .arg(&tf)
        .args(["--", "sh", "-c", &work])
        .output()
        .unwrap();
    assert_ok(&o2, "k3shim trace");
    assert_eq!(stdout(&o2), stdout(&o), "program output");
    let key = |l: &str| -> Option<(String, String, String)> {
        // strace: `PID name("path", ...) = RET ...`; k3shim: `[pid N comm] name(...) = RET <action> (dur)`.
        // strace pads the pid column ("7770  access(...)"), hence the trim.
        let l = if l.starts_with('[') {
            l.split_once("] ")?.1
        } else {
            l.split_once(' ')?.1.trim_start()
        };
        let (name, rest) = l.split_once('(')?;
        let path = rest.split('"').nth(1)?.to_string();
        let ret = rest
            .rsplit_once(" = ")?
            .1
            .split_whitespace()
            .next()?
            .to_string();
        let ret = if ret.starts_with('-') {
            rest.rsplit_once(" = ")?
                .1
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string()
        } else if ret.parse::<i64>().is_ok() {
            "ok".into()
        } else {
            ret
        };
        // fstat-by-fd (an empty path with AT_EMPTY_PATH) never stops, by design.
        if path.is_empty() || path.contains("/proc/") || path.starts_with("/etc/ld.so") {
            return None;
        }
        Some((name.to_string(), path, ret))
    };
    let read = |p: &Path| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter_map(key)
            .filter(|(n, _, _)| names.split(',').any(|x| x == n))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (read(&sf), read(&tf));
    assert!(a.len() > 20, "strace saw the workload: {a:?}");
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
        let only_b: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
        panic!("path syscalls differ\nonly natively (strace): {only_a:#?}\nonly under k3shim: {only_b:#?}\n--- k3shim trace head\n{}", std::fs::read_to_string(&tf).unwrap().lines().take(20).collect::<Vec<_>>().join("\n"));
    }
}

// ------------------------------------------------------------ soak

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stand-in under k3shim with constant /proc/sys traffic (sysstress in a
/// loop, writing) and HTTPS requests to its apiserver port: the tracer's RSS
/// and open fds stay flat. K3SHIM_SOAK_SECS sets the length (default 20).
#[test]
fn soak_the_tracers_rss_and_fds_stay_flat_under_constant_traffic_natively() {
    let before = host_sysctls();
    let secs: u64 = std::env::var("K3SHIM_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let st = scratch("soak");
    let fx = fixtures();
    let (https, sup) = (free_port(), free_port());
    let script = format!(
        "trap 'kill $SP; wait $SP; exit 0' TERM; \
         {standin} server --data-dir {data} --https-listen-port {https} --supervisor-port {sup} --sync-ops 300 & SP=$!; \
         while :; do {ss} -write -goroutines 8 -iterations 20 -exec-every 10 kernel/panic=10,7 vm/panic_on_oom=0,1 net/netfilter/nf_conntrack_max=131072,262144 >/dev/null; done",
        standin = fx.join("standin").display(),
        data = st.join("data").display(),
        ss = fx.join("sysstress").display(),
    );
    let mut c = Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(st.join("s"))
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(st.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let pid = c.id();
    // HTTPS traffic: a client that requests /version and /readyz in a loop.
    let client = format!(
        "import ssl, time, urllib.request\nctx = ssl._create_unverified_context()\nn = ok = 0\nend = time.time() + {secs}\nwhile time.time() < end:\n    n += 1\n    try:\n        urllib.request.urlopen('https://127.0.0.1:{https}/' + ('version' if n % 2 else 'readyz'), context=ctx, timeout=2).read(); ok += 1\n    except Exception as e:\n        if hasattr(e, 'code'): ok += 1\n        else: time.sleep(0.05)\nprint(n, ok)\n"
    );
    let http = Command::new("python3")
        .args(["-c", &client])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        if let (Some(r), Some(f)) = (rss_kb(pid), fd_count(pid)) {
            samples.push((t0.elapsed().as_secs(), r, f));
        }
    }
    let out = http.wait_with_output().unwrap();
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // SAFETY: SIGTERM to our own child (forwarded to the command).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = c.wait().unwrap();
    let log = std::fs::read_to_string(st.join("stderr.txt")).unwrap_or_default();
    eprintln!("soak {secs}s: https requests (sent answered) = {counts}; samples (s, VmRSS kB, fds) = {samples:?}");
    assert!(
        log.contains("k3s is up and running") || log.contains("Serving securely"),
        "the stand-in came up:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let answered: u64 = counts
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(answered > secs, "HTTPS traffic flowed: {counts}");
    assert!(samples.len() >= 5, "{samples:?}");
    // Flat: after a warm-up of a fifth of the run, the last sample is within
    // 1.5x + 4 MB of the first, the peak within 2x + 8 MB, and fds within 8.
    let warm = samples.len() / 5;
    let (first, last) = (samples[warm], *samples.last().unwrap());
    let peak = samples[warm..].iter().map(|s| s.1).max().unwrap();
    assert!(last.1 <= first.1 * 3 / 2 + 4096, "RSS grew: {samples:?}");
    assert!(peak <= first.1 * 2 + 8192, "RSS peaked: {samples:?}");
    assert!(
        samples[warm..].iter().all(|s| s.2 <= first.2 + 8),
        "fds grew: {samples:?}"
    );
    assert!(status.code().is_some(), "k3shim ended: {status:?}");
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}
