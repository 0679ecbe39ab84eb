//! The mount backend (issue 14): CMD's /proc/sys is a read-only view of the
//! fake tree bound in a private mount namespace, so the kernel resolves
//! every path into it itself; writes still go through fakefs. Natively
//! (namespaces isolate) `auto` picks it; in gVisor (they do not) `auto`
//! keeps ptrace, and `--backend mount` binds sandbox-wide with a warning and
//! removes every mount, also after k3shim is SIGKILLed.
//! Natively k3shim runs in shadow mode and the host's sysctls are checked
//! unchanged.

mod sandbox;

use sandbox::*;
use std::path::Path;

fn k() -> String {
    k3shim().display().to_string()
}

fn timeline(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn backend_of(t: &[serde_json::Value]) -> (String, String) {
    let e = t
        .iter()
        .rev()
        .find(|e| e["kind"] == "backend")
        .expect("a backend event in the timeline");
    (
        e["backend"].as_str().unwrap_or("").into(),
        e["reason"].as_str().unwrap_or("").into(),
    )
}

#[test]
fn kernel_resolves_symlinks_dotdot_dirfds_and_openat2_into_the_view_exactly_as_natively() {
    let before = host_sysctls();
    let dir = scratch("mount-paths");
    let prog = c_fixture("mountpaths");
    for entry in ["overcommit_memory", "panic_on_oom", "swappiness"] {
        let script = format!(
            "{prog} {d} {entry} > {d}/native.txt && {k} run --backend mount --mode shadow --state {d}/state --timeline {d}/t.jsonl -- {prog} {d} {entry} > {d}/mount.txt",
            prog = prog.display(),
            d = dir.display(),
            k = k()
        );
        let o = native(&script);
        assert_ok(&o, "mountpaths natively and under --backend mount");
        let want = std::fs::read_to_string(dir.join("native.txt")).unwrap();
        let got = std::fs::read_to_string(dir.join("mount.txt")).unwrap();
        assert!(
            want.contains("symlink: ok ") && want.contains("beneath-escape: err EXDEV"),
            "{want}"
        );
        assert_eq!(
            got, want,
            "{entry}: the kernel's answers through the view differ from the real /proc/sys"
        );
        let t = timeline(&dir.join("t.jsonl"));
        assert_eq!(backend_of(&t).0, "mount");
        // The invalid write was refused by fakefs and journaled, the value kept.
        assert!(t.iter().any(|e| e["kind"] == "write"
            && e["path"] == format!("/proc/sys/vm/{entry}")
            && e["result"] == "EINVAL"));
    }
    assert_eq!(host_sysctls(), before, "host sysctls changed");
}

const WRITES: &str = r#"
cat /proc/sys/vm/panic_on_oom
echo 1 > /proc/sys/vm/panic_on_oom; echo "rc=$?"
cat /proc/sys/vm/panic_on_oom
echo bogus > /proc/sys/vm/panic_on_oom; echo "rc=$?"
cat /proc/sys/vm/panic_on_oom
printf '2 3' > /proc/sys/vm/overcommit_memory; echo "rc=$?"
cat /proc/sys/vm/overcommit_memory
touch /proc/sys/vm/new_entry 2>/dev/null; echo "create=$?"
rm -f /proc/sys/vm/swappiness 2>/dev/null; echo "unlink=$?"
chmod 600 /proc/sys/vm/swappiness 2>/dev/null; echo "chmod=$?"
mkdir /proc/sys/vm/d 2>/dev/null; echo "mkdir=$?"
"#;

/// The journal's lines without what differs from run to run.
fn journal(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            format!(
                "{} {} -> {} {} {}",
                v["path"], v["old"], v["new"], v["accepted"], v["errno"]
            )
        })
        .collect()
}

#[test]
fn writes_through_the_mount_backend_are_validated_and_journaled_exactly_as_with_ptrace() {
    let before = host_sysctls();
    let dir = scratch("mount-writes");
    std::fs::write(dir.join("w.sh"), WRITES).unwrap();
    let mut outs = Vec::new();
    for b in ["ptrace", "mount"] {
        let o = native(&format!(
            "{k} run --backend {b} --mode shadow --state {d}/{b} --timeline {d}/{b}.jsonl -- sh {d}/w.sh",
            k = k(),
            d = dir.display()
        ));
        assert_ok(&o, b);
        let t = timeline(&dir.join(format!("{b}.jsonl")));
        assert_eq!(backend_of(&t).0, b);
        outs.push((stdout(&o), journal(&dir.join(b))));
    }
    assert_eq!(outs[0], outs[1], "ptrace (left) and mount (right) differ");
    let (out, j) = &outs[1];
    assert!(
        out.contains("0\nrc=0\n1\n"),
        "the view shows the accepted write at once:\n{out}"
    );
    assert!(j.iter().any(|l| l.contains("EINVAL")), "{j:?}");
    assert_eq!(host_sysctls(), before, "host sysctls changed");
}

#[test]
fn natively_auto_picks_mount_says_why_and_records_first_reads() {
    let dir = scratch("mount-auto");
    let o = native(&format!(
        "K3SHIM_BACKEND= {k} run --mode shadow --state {d}/s --timeline {d}/t.jsonl -- sh -c 'cat /proc/sys/vm/swappiness /proc/sys/vm/swappiness /proc/sys/kernel/ostype >/dev/null'; {k} doctor --json > {d}/doctor.json",
        k = k(),
        d = dir.display()
    ));
    assert_ok(&o, "auto run and doctor");
    let t = timeline(&dir.join("t.jsonl"));
    let (b, why) = backend_of(&t);
    assert_eq!(b, "mount", "{why}");
    assert!(why.contains("private mount namespace works"), "{why}");
    let reads: Vec<&str> = t
        .iter()
        .filter(|e| e["kind"] == "redirect" && e["via"] == "inotify")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(
        reads,
        ["/proc/sys/vm/swappiness", "/proc/sys/kernel/ostype"],
        "one event per path, in order"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("doctor.json")).unwrap()).unwrap();
    assert_eq!(d["backend"]["auto"], "mount", "{}", d["backend"]);
}

#[test]
fn trace_and_explicit_ptrace_use_ptrace_whatever_k3shim_backend_says() {
    let dir = scratch("mount-trace");
    let o = native(&format!(
        "K3SHIM_BACKEND=mount {k} trace --mode shadow --state {d}/s --timeline {d}/t.jsonl -o {d}/trace.txt -- cat /proc/sys/vm/swappiness >/dev/null && K3SHIM_BACKEND=mount {k} run --backend ptrace --mode shadow --state {d}/s --timeline {d}/p.jsonl -- true",
        k = k(),
        d = dir.display()
    ));
    assert_ok(&o, "trace under K3SHIM_BACKEND=mount");
    let (b, why) = backend_of(&timeline(&dir.join("t.jsonl")));
    assert_eq!(b, "ptrace");
    assert!(why.contains("trace"), "{why}");
    assert!(std::fs::read_to_string(dir.join("trace.txt"))
        .unwrap()
        .contains("/proc/sys/vm/swappiness"));
    assert_eq!(backend_of(&timeline(&dir.join("p.jsonl"))).0, "ptrace");
    // --backend mount with what only ptrace serves: exit 2 with the reason.
    let o = native(&format!(
        "{k} run --backend mount --filter none --mode shadow --state {d}/s -- true",
        k = k(),
        d = dir.display()
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--filter none"), "{}", stderr(&o));
}

#[test]
fn a_sigkilled_run_leaves_no_run_directory_after_the_next_run_natively() {
    let dir = scratch("mount-kill");
    // k3shim is killed while CMD sleeps; its run directory stays (its lock is
    // free), no mount is visible outside the dead namespace; the next run
    // removes the directory.
    let o = native(&format!(
        r#"{k} run --backend mount --mode shadow --state {d}/s -- sleep 30 & pid=$!
for i in $(seq 100); do ls /dev/shm/k3shim 2>/dev/null | grep -q "^$pid-" && break; sleep 0.1; done
run=$(ls /dev/shm/k3shim | grep "^$pid-"); echo "run=$run"
kill -9 $pid; wait $pid 2>/dev/null
test -d /dev/shm/k3shim/$run && echo left
grep -c k3shim /proc/self/mountinfo
{k} run --backend mount --mode shadow --state {d}/s -- true 2>{d}/err
test -d /dev/shm/k3shim/$run || echo gone
cat {d}/err"#,
        k = k(),
        d = dir.display()
    ));
    let out = stdout(&o);
    assert!(
        out.contains("run=") && out.contains("left\n0\ngone"),
        "{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains("removed the stale run directory"), "{out}");
}

const GV_KILL: &str = r#"
K=__K__; D=__D__
# auto: namespaces do not isolate here, so ptrace, and why.
K3SHIM_BACKEND= $K run --state $D/s --timeline $D/auto.jsonl -- cat /proc/sys/vm/panic_on_oom
# --backend mount: works, warns once, serves writes, removes its mounts.
$K run --backend mount --state $D/s --timeline $D/mount.jsonl -- sh -c 'echo 1 > /proc/sys/vm/panic_on_oom; cat /proc/sys/vm/panic_on_oom; test -e /dev/kmsg && echo kmsg-served >&2' 2>$D/err
echo "warnings=$(grep -c 'do not isolate' $D/err)"
echo "after=$(grep -c -e k3shim -e ' /proc/sys' /proc/self/mountinfo)"
# gVisor has no /dev/kmsg: the profile's stand-in is served during the run only.
echo "kmsg=$(grep -c kmsg-served $D/err) $(test -e /dev/kmsg && echo left || echo gone)"
# SIGKILL while CMD runs: the mounts stay (sandbox-wide) until doctor.
$K run --backend mount --state $D/s -- sleep 30 2>/dev/null & pid=$!
for i in $(seq 200); do grep -q ' /proc/sys ' /proc/self/mountinfo && break; sleep 0.1; done
kill -9 $pid; wait $pid 2>/dev/null; sleep 0.5
echo "killed=$(grep -c -e k3shim -e ' /proc/sys' /proc/self/mountinfo)"
$K doctor > $D/doctor.txt
echo "doctor=$(grep -c -e k3shim -e ' /proc/sys' /proc/self/mountinfo)"
grep -c 'detached' $D/doctor.txt
set -- /dev/shm/k3shim/*; [ -e "$1" ] && echo "runs=$#" || echo "runs=0"
# Files written in gVisor stay in its overlay: their lines go to stdout.
grep -h '"backend"' $D/auto.jsonl $D/mount.jsonl
"#;

#[test]
fn in_gvisor_auto_keeps_ptrace_and_backend_mount_warns_and_leaves_no_mount_even_after_sigkill() {
    if !have_gvisor() {
        return;
    }
    let dir = scratch("mount-gvisor");
    let script = GV_KILL
        .replace("__K__", &k())
        .replace("__D__", &dir.display().to_string());
    let o = gvisor(&script);
    let out = stdout(&o);
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect();
    let (b, why) = backend_of(&events[..1]);
    assert_eq!(b, "ptrace");
    assert!(why.contains("do not isolate"), "{why}");
    assert_eq!(backend_of(&events[1..]).0, "mount");
    assert!(out.starts_with("0\n1\n"), "{out}\n{}", stderr(&o));
    for want in ["warnings=1", "after=0", "kmsg=1 gone", "doctor=0", "runs=0"] {
        assert!(out.contains(want), "{want}:\n{out}\n{}", stderr(&o));
    }
    assert!(
        !out.contains("killed=0"),
        "the killed run's mounts were expected to stay until doctor:\n{out}"
    );
    assert!(
        out.contains("\n1\nruns=0"),
        "doctor says what it detached:\n{out}"
    );
}
