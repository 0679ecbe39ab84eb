//! `k3shim trace`: decoded lines, filters, the -c summary, JSON, and honesty
//! against strace. (Issue 6.)

mod sandbox;

use sandbox::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn k() -> String {
    k3shim().display().to_string()
}

/// Runs a k3shim trace command inside gVisor, trace output to a file that is
/// printed after a marker line, so it can be told apart from CMD's output.
fn gvisor_trace(args: &str, cmd: &str) -> (String, String) {
    let o = gvisor(&format!("{} trace --state /tmp/k3shim-trace {args} -o /tmp/trace.out -- {cmd} >/tmp/cmd.out 2>&1; echo ==TRACE==; cat /tmp/trace.out; echo ==CMD==; cat /tmp/cmd.out", k()));
    let out = stdout(&o);
    let (_, rest) = out.split_once("==TRACE==\n").unwrap_or(("", &out));
    let (trace, cmd_out) = rest.split_once("==CMD==\n").unwrap_or((rest, ""));
    (trace.to_string(), cmd_out.to_string())
}

#[test]
fn lines_show_the_decoded_call_what_the_shim_did_and_the_result() {
    if !have_gvisor() {
        return;
    }
    let (t, out) = gvisor_trace("", "sysctl -n vm.panic_on_oom vm.overcommit_memory");
    assert_eq!(out, "0\n0\n");
    assert!(t.contains("[pid "), "{t}");
    assert!(
        t.contains(
            r#"openat(AT_FDCWD, "/proc/sys/vm/panic_on_oom", O_RDONLY) = 3 /* redirected -> "#
        ),
        "{t}"
    );
    assert!(
        t.contains(
            r#"openat(AT_FDCWD, "/proc/sys/vm/overcommit_memory", O_RDONLY) = 3 /* passed */ <"#
        ),
        "{t}"
    );
    assert!(
        t.contains(
            r#"readlink("/proc/sys/vm", ...) = -1 EINVAL (Invalid argument) /* emulated */ <"#
        ),
        "{t}"
    );
    // Every line is whole and ends as strace -T's do: <seconds.microseconds>.
    let end = regex::Regex::new(r" <\d+\.\d{6}>$").unwrap();
    for l in t.lines() {
        assert!(
            l.starts_with("[pid ") && end.is_match(l) && l.matches('<').count() == 1,
            "every line is whole, its time last: {l:?}"
        );
    }
}

#[test]
fn filters_select_syscalls_paths_redirects_and_failures() {
    if !have_gvisor() {
        return;
    }
    let cmd = "sysctl -n vm.panic_on_oom vm.overcommit_memory";
    let (t, _) = gvisor_trace("-e trace=openat", cmd);
    assert!(
        !t.is_empty() && t.lines().all(|l| l.contains("] openat(")),
        "{t}"
    );
    let (t, _) = gvisor_trace("--redirected-only", cmd);
    assert!(
        !t.is_empty() && t.lines().all(|l| l.contains("/* redirected -> ")),
        "{t}"
    );
    let (t, _) = gvisor_trace("--failed-only", cmd);
    assert!(
        !t.is_empty() && t.lines().all(|l| l.contains(" = -1 ")),
        "{t}"
    );
    let (t, _) = gvisor_trace("--path /proc/sys/vm/panic", cmd);
    assert!(
        !t.is_empty()
            && t.lines()
                .all(|l| l.contains("\"/proc/sys/vm/panic_on_oom\"")),
        "{t}"
    );
    let (t, _) = gvisor_trace("--pid 999999", cmd);
    assert!(t.is_empty(), "no such pid, no lines: {t}");
}

#[test]
fn summary_counts_calls_errors_and_redirects_per_syscall_and_path() {
    if !have_gvisor() {
        return;
    }
    let (t, _) = gvisor_trace("-c", "sysctl -w kernel.panic=3");
    assert!(t.starts_with("syscall "), "{t}");
    assert!(t.contains("\ntotal "), "{t}");
    let openat = t
        .lines()
        .find(|l| l.starts_with("openat "))
        .expect("an openat row");
    let cols: Vec<&str> = openat.split_whitespace().collect();
    assert!(
        cols[3].parse::<u64>().unwrap() >= 1,
        "openat was redirected: {openat}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("written") && l.ends_with("/proc/sys/kernel/panic")),
        "the written entry shows as such: {t}"
    );
}

#[test]
fn json_lines_parse_and_threads_of_a_go_program_never_interleave() {
    if !have_gvisor() {
        return;
    }
    let ss = fixtures().join("sysstress");
    let (t, out) = gvisor_trace(
        "--json --path /proc/sys",
        &format!(
            "{} -goroutines 16 -iterations 5 -exec-every 0 vm/panic_on_oom=0",
            ss.display()
        ),
    );
    assert!(out.contains("sysstress: ok"), "{out}");
    let mut tids = BTreeSet::new();
    for l in t.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v["path"].as_str().unwrap().starts_with("/proc/sys"));
        tids.insert(v["tid"].as_i64().unwrap());
    }
    assert!(t.lines().count() >= 80, "16 goroutines x 5 reads");
    assert!(tids.len() > 1, "several threads traced: {tids:?}");
}

/// (syscall, path, ok) triples for /proc/sys paths from strace -f output.
fn from_strace(text: &str) -> BTreeSet<(String, String, bool)> {
    let re = regex::Regex::new(
        r#"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\([^"]*"(/proc/sys[^"]*)".*\)\s+=\s+(-?\d+)"#,
    )
    .unwrap();
    text.lines()
        .filter_map(|l| re.captures(l))
        .map(|c| (c[1].to_string(), c[2].to_string(), !c[3].starts_with('-')))
        .collect()
}

fn from_k3shim(text: &str) -> BTreeSet<(String, String, bool, String)> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| {
            v["path"]
                .as_str()
                .map(|p| p.starts_with("/proc/sys"))
                .unwrap_or(false)
        })
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
                v["ret"].as_i64().unwrap() >= 0,
                v["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn trace_agrees_with_strace_on_the_proc_sys_traffic_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let w = "sysctl -n vm.overcommit_memory vm.panic_on_oom kernel.panic net.ipv4.ip_forward";
    let o = gvisor(&format!(
        "strace -f -e trace=%file -o /tmp/st.txt {w} >/dev/null 2>&1; \
         {k} trace --json --state /tmp/k3shim-honest -o /tmp/k3.txt -- {w} >/dev/null 2>&1; \
         echo ==S==; cat /tmp/st.txt; echo ==K==; cat /tmp/k3.txt",
        k = k()
    ));
    let out = stdout(&o);
    let (s, kk) = out
        .split_once("==S==\n")
        .unwrap()
        .1
        .split_once("==K==\n")
        .unwrap();
    let st = from_strace(s);
    let k3 = from_k3shim(kk);
    assert!(!st.is_empty(), "strace saw /proc/sys traffic: {s}");
    let st_paths: BTreeSet<_> = st.iter().map(|(n, p, _)| (n.clone(), p.clone())).collect();
    let k3_paths: BTreeSet<_> = k3
        .iter()
        .map(|(n, p, _, _)| (n.clone(), p.clone()))
        .collect();
    // Every call strace saw, k3shim saw too...
    let missing: Vec<_> = st_paths.difference(&k3_paths).collect();
    assert!(
        missing.is_empty(),
        "k3shim missed calls strace saw: {missing:?}"
    );
    // ...and the extra ones only follow from a redirect succeeding where the real
    // entry is missing (sysctl then goes on to readlink and open it).
    let redirected: BTreeSet<&String> = k3
        .iter()
        .filter(|t| t.3 == "redirected")
        .map(|t| &t.1)
        .collect();
    for (n, p) in k3_paths.difference(&st_paths) {
        assert!(
            redirected.iter().any(|r| r.starts_with(p.as_str())),
            "{n} {p}: extra call not explained by a redirect"
        );
    }
    for (n, p, ok, action) in &k3 {
        if action == "passed" {
            assert!(
                st.contains(&(n.clone(), p.clone(), *ok)),
                "{n} {p}: passed through, so the result is strace's"
            );
        }
    }
    // And the differences are exactly the redirects of missing entries.
    assert!(st.contains(&(
        "openat".into(),
        "/proc/sys/vm/overcommit_memory".into(),
        true
    )));
    assert!(k3.iter().any(|(n, p, ok, a)| n == "newfstatat"
        && p == "/proc/sys/vm/panic_on_oom"
        && *ok
        && a == "redirected"));
}

#[test]
fn trace_agrees_with_strace_natively_where_every_entry_is_real() {
    let st_dir = scratch("honest-native");
    let st_file = st_dir.join("st.txt");
    let k3_file = st_dir.join("k3.txt");
    let w = [
        "sysctl",
        "-n",
        "vm.overcommit_memory",
        "vm.panic_on_oom",
        "kernel.panic",
    ];
    let s = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=%file", "-o"])
        .arg(&st_file)
        .args(w)
        .output()
        .unwrap();
    assert_ok(&s, "strace");
    let o = std::process::Command::new(k3shim())
        .args(["trace", "--json", "--state"])
        .arg(st_dir.join("state"))
        .arg("-o")
        .arg(&k3_file)
        .arg("--")
        .args(w)
        .output()
        .unwrap();
    assert_ok(&o, "k3shim trace");
    assert_eq!(stdout(&o), stdout(&s), "same output as without the shim");
    let st = from_strace(&std::fs::read_to_string(&st_file).unwrap());
    let k3: BTreeSet<_> = from_k3shim(&std::fs::read_to_string(&k3_file).unwrap())
        .into_iter()
        .map(|(n, p, ok, _)| (n, p, ok))
        .collect();
    assert_eq!(
        k3, st,
        "overlay passes real entries through: identical traffic"
    );
}

#[test]
fn an_execve_by_a_non_leader_thread_gets_its_line_with_that_threads_tid() {
    if !have_gvisor() {
        return;
    }
    let tt = fixtures().join("threadtorture");
    let (t, out) = gvisor_trace(
        "-e trace=execve",
        &format!(
            "{} -threads 20 -signals 0 -exec-from-thread vm/panic_on_oom=0",
            tt.display()
        ),
    );
    assert!(out.contains("exec from non-leader thread ok"), "{out}");
    let execs: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("execve(") && l.contains(") = 0 "))
        .collect();
    assert_eq!(
        execs.len(),
        2,
        "the launch and the re-exec from a thread:\n{t}"
    );
    let from_thread = execs[1];
    let ids = from_thread
        .trim_start_matches("[pid ")
        .split(' ')
        .next()
        .unwrap_or("");
    let (pid, tid) = ids
        .split_once('/')
        .unwrap_or_else(|| panic!("a thread's line names pid/tid: {from_thread}"));
    assert_ne!(pid, tid, "{from_thread}");
}

/// strace's options as a user of strace types them: -f, -e trace=%class.
#[test]
fn strace_style_f_and_classes_work_and_a_class_the_path_filter_misses_is_traced_anyway() {
    let d = scratch("trace-classes");
    let out = d.join("t.txt");
    // %file with -f: the /proc/sys traffic, errno names with their text.
    let o = std::process::Command::new(k3shim())
        .args(["trace", "--mode", "shadow", "--state"])
        .arg(d.join("state"))
        .args(["-f", "-e", "trace=%file", "-o"])
        .arg(&out)
        .args(["--", "sysctl", "-n", "vm.panic_on_oom"])
        .output()
        .unwrap();
    assert_ok(&o, "k3shim trace -f -e trace=%file");
    let t = std::fs::read_to_string(&out).unwrap();
    assert!(
        t.contains(
            r#"readlink("/proc/sys/vm", ...) = -1 EINVAL (Invalid argument) /* emulated */ <"#
        ),
        "{t}"
    );
    assert!(
        t.contains(
            r#"openat(AT_FDCWD, "/proc/sys/vm/panic_on_oom", O_RDONLY) = 3 /* redirected -> "#
        ),
        "{t}"
    );
    // %network: the path filter stops none of it, so every syscall is stopped.
    let py = python();
    let o = std::process::Command::new(k3shim())
        .args(["trace", "--mode", "shadow", "--state"])
        .arg(d.join("state"))
        .args(["-e", "trace=%network", "-o"])
        .arg(&out)
        .args(["--", &py, "-c", "import socket\ntry: socket.socket().connect(('127.0.0.1', 9))\nexcept OSError as e: print(e.errno)"])
        .output()
        .unwrap();
    assert_ok(&o, "k3shim trace -e trace=%network");
    assert!(
        stderr(&o).contains("-e trace=%network: the path filter stops none of these syscalls, so every syscall is stopped"),
        "{}",
        stderr(&o)
    );
    let t = std::fs::read_to_string(&out).unwrap();
    assert!(
        t.lines().any(|l| l.contains("] connect(")
            && l.contains(" = -1 ECONNREFUSED (Connection refused) /* passed */ <")),
        "{t}"
    );
    assert!(
        t.lines().all(|l| [
            "socket(",
            "connect(",
            "getsockopt(",
            "setsockopt(",
            "getsockname(",
            "getpeername(",
            "recvfrom(",
            "sendto(",
            "socketpair(",
            "shutdown("
        ]
        .iter()
        .any(|n| l.contains(n))),
        "only %network calls: {t}"
    );
    // A class strace does not have is one clear line.
    let o = std::process::Command::new(k3shim())
        .args(["trace", "--mode", "shadow", "--state"])
        .arg(d.join("state"))
        .args(["-e", "trace=%files", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(
            "k3shim: -e trace=%files: \"%files\" is not one of strace's classes (%file, "
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
}

/// getcwd, chroot, pivot_root and setns take no path but the path filter
/// stops them too: `-e trace=getcwd,chroot` is traced without stopping
/// every syscall, and `%file`'s line about what is not shown does not name
/// them (it named chroot and getcwd).
#[test]
fn syscalls_the_path_filter_stops_without_a_path_are_never_said_to_be_missed() {
    let d = scratch("trace-also-stopped");
    let trace = |set: &str| {
        std::process::Command::new(k3shim())
            .args(["trace", "--mode", "shadow", "--state"])
            .arg(d.join("state"))
            .args(["-e", set, "--", "sh", "-c", "cd /proc/sys && pwd -P"])
            .output()
            .unwrap()
    };
    let o = trace("trace=getcwd,chroot");
    assert_ok(&o, "k3shim trace -e trace=getcwd,chroot");
    let e = stderr(&o);
    assert!(!e.contains("every syscall is stopped"), "{e}");
    assert!(
        e.contains("] getcwd(") && e.contains("/* emulated */"),
        "{e}"
    );
    assert_eq!(stdout(&o), "/proc/sys\n");
    let o = trace("trace=%file");
    assert_ok(&o, "k3shim trace -e trace=%file");
    let e = stderr(&o);
    let said = e
        .lines()
        .find(|l| l.contains("do not stop under the path filter"))
        .unwrap_or_else(|| panic!("%file is stopped only partly: {e}"));
    for n in ["getcwd", "chroot", "pivot_root", "setns"] {
        assert!(
            !said.contains(&format!(" {n},")) && !said.contains(&format!("({n},")),
            "{n} in {said}"
        );
    }
}
