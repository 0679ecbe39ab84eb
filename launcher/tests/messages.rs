//! What k3shim says on stderr, and what it refuses: every event a user wants
//! to know about is one `k3shim: ...` line; --log-level / K3SHIM_LOG give
//! diagnostics; nonsense values and output paths under /proc/sys are refused
//! with one line before anything is launched; a k3shim that is itself traced
//! says so. (Issue 13: "Silent failures", "Smaller things", the last bullet
//! of "State directory integrity", "Found with real programs".)

mod sandbox;

use sandbox::*;
use std::process::{Command, Output};

fn k3shim_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("k3shim: "))
        .map(str::to_string)
        .collect()
}

fn run(args: &[&str]) -> Output {
    Command::new(k3shim())
        .args(args)
        .output()
        .expect("run k3shim")
}

#[test]
fn a_gate_that_never_opens_says_once_what_it_waits_for_then_times_out_and_releases() {
    let d = scratch("msggate");
    let st = d.join("s");
    let o = run(&[
        "run",
        "--mode",
        "shadow",
        "--state",
        st.to_str().unwrap(),
        "--gate-url",
        "http://127.0.0.1:9/readyz",
        "--gate-timeout",
        "6.5",
        "--gate-timeout-action",
        "skip-hooks",
        "--hook",
        "echo SHOULD-NOT-RUN",
        "--hold",
        "exec:/usr/bin/true",
        "--",
        "sh",
        "-c",
        "/usr/bin/true; echo after",
    ]);
    assert_ok(&o, "a run whose gate times out");
    assert_eq!(stdout(&o), "after\n");
    let lines = k3shim_lines(&o);
    let waiting: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("still waiting"))
        .collect();
    assert_eq!(waiting.len(), 1, "once after 5 s, then rarely: {lines:#?}");
    let w = waiting[0];
    for part in [
        "k3shim: gate: still waiting for http://127.0.0.1:9/readyz after 5 s (last probe: ",
        "refused",
        "1 held syscall (exec:/usr/bin/true)",
        "gives up after 6.5 s (--gate-timeout)",
    ] {
        assert!(w.contains(part), "{part:?} in {w}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with(
            "k3shim: warning: gate: timed out after 6.5 s waiting for http://127.0.0.1:9/readyz (last probe: "
        ) && l.ends_with("hooks are skipped (--gate-timeout-action skip-hooks)")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"k3shim: holds: releasing 1 held syscall (exec:/usr/bin/true): the gate timed out"
                .to_string()
        ),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "nothing else: {lines:#?}");
    assert!(!stderr(&o).contains("SHOULD-NOT-RUN"));
}

#[test]
fn an_open_gate_says_so_in_one_line() {
    let d = scratch("msgopen");
    let srv = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = srv.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in srv.incoming().flatten() {
            let mut c = c;
            let mut b = [0u8; 1024];
            let _ = c.read(&mut b);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let url = format!("http://127.0.0.1:{port}/readyz");
    let o = run(&[
        "run",
        "--mode",
        "shadow",
        "--state",
        d.join("s").to_str().unwrap(),
        "--gate-url",
        &url,
        "--",
        "sleep",
        "1",
    ]);
    assert_ok(&o, "run with an open gate");
    let lines = k3shim_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("k3shim: gate: open after ")
            && lines[0].ends_with(&format!("({url} answered 200 at attempt 1)")),
        "{lines:#?}"
    );
}

#[test]
fn failing_hooks_and_hook_failure_stop_say_so_with_their_status() {
    let d = scratch("msghooks");
    let st = d.join("s");
    let o = run(&[
        "run",
        "--mode",
        "shadow",
        "--state",
        st.to_str().unwrap(),
        "--hook",
        "false",
        "--hook",
        "exit 3",
        "--hook",
        "kill -9 $$",
        "--",
        "sleep",
        "2",
    ]);
    assert_ok(&o, "failing hooks with --hook-failure continue");
    let lines = k3shim_lines(&o);
    assert_eq!(
        lines,
        [
            "k3shim: warning: hooks: hook 1 (`false`) failed: exit status 1",
            "k3shim: warning: hooks: hook 2 (`exit 3`) failed: exit status 3",
            "k3shim: warning: hooks: hook 3 (`kill -9 $$`) failed: killed by SIGKILL",
        ]
    );
    let o = run(&[
        "run",
        "--mode",
        "shadow",
        "--state",
        st.to_str().unwrap(),
        "--hook",
        "false",
        "--hook-failure",
        "stop",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert_eq!(
        k3shim_lines(&o),
        [
            "k3shim: warning: hooks: hook 1 (`false`) failed: exit status 1",
            "k3shim: warning: hooks: hook 1 failed and --hook-failure stop: ending the run (SIGTERM to the command)",
        ]
    );
}

#[test]
fn log_levels_give_diagnostics_with_spans_for_the_tracer_the_gate_and_hooks() {
    let d = scratch("msglog");
    let st = d.join("s");
    let args = |level: &str| -> Vec<String> {
        [
            "--log-level",
            level,
            "run",
            "--mode",
            "shadow",
            "--state",
            st.to_str().unwrap(),
            "--gate-url",
            "http://127.0.0.1:9/",
            "--gate-timeout",
            "0.6",
            "--hook",
            "true",
            "--",
            "sh",
            "-c",
            "sleep 1",
        ]
        .map(String::from)
        .to_vec()
    };
    let o = Command::new(k3shim()).args(args("debug")).output().unwrap();
    assert_ok(&o, "--log-level debug");
    let e = stderr(&o);
    for span in [
        "tracer{root=",
        "gate{url=http://127.0.0.1:9/}: probe",
        "hooks{count=1}: hook started",
    ] {
        assert!(e.contains(span), "{span:?} in\n{e}");
    }
    assert!(!e.contains("wait tid="), "per-stop lines are trace level");
    let o = Command::new(k3shim())
        .args(&args("trace")[2..])
        .env("K3SHIM_LOG", "trace")
        .output()
        .unwrap();
    assert_ok(&o, "K3SHIM_LOG=trace");
    assert!(stderr(&o).contains("wait tid="), "{}", stderr(&o));
    // The default: notices and warnings only.
    let o = Command::new(k3shim())
        .args(&args("x")[2..])
        .output()
        .unwrap();
    assert!(!stderr(&o).contains(" debug "), "{}", stderr(&o));
}

/// Each is refused with exit 2 and one line naming the option, before
/// anything is launched (CMD would create the marker).
#[test]
fn nonsense_values_are_refused_with_one_line_before_anything_runs() {
    let d = scratch("msgrefuse");
    let marker = d.join("launched");
    let st = d.join("s");
    let link = d.join("sysvm");
    std::os::unix::fs::symlink("/proc/sys/vm", &link).unwrap();
    let via_link = link.join("panic_on_oom");
    let before = host_sysctls();
    let gate = ["--gate-url", "http://127.0.0.1:9/"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--log-level", "loud"], "--log-level \"loud\": unknown level"),
        ([&gate[..], &["--gate-successes", "0"]].concat(), "--gate-successes 0"),
        ([&gate[..], &["--gate-interval-ms", "0"]].concat(), "--gate-interval-ms 0"),
        ([&gate[..], &["--gate-attempt-timeout-ms", "0"]].concat(), "--gate-attempt-timeout-ms 0"),
        ([&gate[..], &["--gate-timeout=-1"]].concat(), "--gate-timeout -1"),
        ([&gate[..], &["--gate-timeout", "NaN"]].concat(), "--gate-timeout NaN"),
        (vec!["--mode", "sideways"], "invalid value 'sideways' for '--mode <MODE>'"),
        ([&gate[..], &["--hold", "connect:127.0.0.1:0"]].concat(), "port 0"),
        ([&gate[..], &["--hold", "connect:unix:run/k3s.sock"]].concat(), "must be absolute"),
        (vec!["--gate-url", "http://127.0.0.1:0/readyz"], "port 0"),
        (vec!["--write-through", "--mode", "shadow"], "--write-through needs --mode overlay"),
        (vec!["--timeline", "/proc/sys/vm/panic_on_oom"], "--timeline /proc/sys/vm/panic_on_oom: k3shim does not write its own output under /proc/sys"),
        (vec!["--log", "/proc/sys/kernel/panic"], "--log /proc/sys/kernel/panic: "),
        (vec!["--timeline", via_link.to_str().unwrap()], "(it is /proc/sys/vm/panic_on_oom)"),
        (vec!["--log", "/proc/self/root/proc/sys/kernel/panic"], "(it is /proc/sys/kernel/panic)"),
        (vec!["--timeline", "/proc/sys/vm/../kernel/new-file"], "(it is /proc/sys/kernel/new-file)"),
    ];
    for (args, says) in cases {
        let mut c = Command::new(k3shim());
        if args[0] == "--log-level" {
            c.args(&args).args(["run", "--state"]).arg(&st);
        } else {
            c.args(["run", "--state"]).arg(&st).args(&args);
        }
        let o = c.arg("--").arg("touch").arg(&marker).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: one line: {e}");
        assert!(
            e.starts_with("k3shim: ") && e.contains(says),
            "{args:?}: {says:?} in {e}"
        );
        assert!(!marker.exists(), "{args:?}: nothing was launched");
    }
    // trace's -o too, and a relative path from a cwd in /proc/sys.
    let o = Command::new(k3shim())
        .args(["trace", "-o", "panic", "--state"])
        .arg(&st)
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .current_dir("/proc/sys/kernel")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("-o panic (it is /proc/sys/kernel/panic)"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(k3shim())
        .env("K3SHIM_LOG", "shim=loud")
        .args(["run", "--state"])
        .arg(&st)
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("k3shim: K3SHIM_LOG \"shim=loud\": "),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists());
    assert_eq!(host_sysctls(), before, "the host's entries are untouched");
}

#[test]
fn k3shim_under_another_tracer_says_it_is_already_traced() {
    let d = scratch("msgtraced");
    let st = d.join("s");
    let o = Command::new("strace")
        .args(["-f", "-o", "/dev/null"])
        .arg(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(&st)
        .args(["--", "true"])
        .output()
        .expect("strace is needed by this test");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("k3shim itself is already being traced, by pid ") && e.contains("(strace)"),
        "{e}"
    );
    assert!(
        !e.contains("CAP_SYS_PTRACE"),
        "not a capability problem: {e}"
    );
    // k3shim under k3shim: the inner one is traced by the outer.
    let o = run(&[
        "run",
        "--mode",
        "shadow",
        "--state",
        st.to_str().unwrap(),
        "--",
        k3shim().to_str().unwrap(),
        "run",
        "--mode",
        "shadow",
        "--state",
        d.join("s2").to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already being traced, by pid ") && stderr(&o).contains("(k3shim)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn in_gvisor_an_applied_compatibility_fix_and_a_traced_k3shim_are_said() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&format!(
        "{k} run --state /tmp/s -- stat -c %n / ; echo rc=$?; {k} run --state /tmp/s -- {k} run --state /tmp/s2 -- true; echo rc=$?",
        k = k3shim().display()
    ));
    let out = stdout(&o);
    assert!(out.starts_with("/\nrc=0\n"), "{out}\n{}", stderr(&o));
    assert!(out.contains("rc=3"), "{out}");
    let lines = k3shim_lines(&o);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("k3shim: fix: statx-no-automount: ")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("already being traced, by pid ")),
        "{lines:#?}"
    );
}

#[test]
fn help_says_the_default_gate_timeout_and_when_holds_are_released() {
    let o = run(&["run", "--help"]);
    let h = stdout(&o);
    assert!(h.contains("0 waits for ever [default: 300]"), "{h}");
    assert!(h.contains("--release <WHEN>"), "{h}");
    assert!(h.contains("[default: after-hooks]"), "{h}");
    assert!(h.contains("to --log FILE"), "where hooks' output goes: {h}");
}

/// `timeline FILE --html OUT` writes OUT itself, untraced, as --timeline and
/// --log are written: OUT under /proc/sys (by name, through a symlink) is
/// refused with one line before anything is read or written, so the host's
/// entry is never opened (a text entry such as kernel/domainname would
/// take the page's first bytes).
#[test]
fn timeline_html_refuses_an_output_path_under_proc_sys() {
    let d = scratch("msghtml");
    let tl = d.join("t.jsonl");
    std::fs::write(
        &tl,
        "{\"t_ms\":0,\"kind\":\"launch\",\"argv\":[\"true\"]}\n",
    )
    .unwrap();
    let link = d.join("sysvm");
    std::os::unix::fs::symlink("/proc/sys/vm", &link).unwrap();
    let before = host_sysctls();
    for (out, says) in [
        (
            "/proc/sys/vm/panic_on_oom".to_string(),
            "--html /proc/sys/vm/panic_on_oom: ",
        ),
        (
            link.join("panic_on_oom").display().to_string(),
            "(it is /proc/sys/vm/panic_on_oom)",
        ),
    ] {
        let o = run(&["timeline", tl.to_str().unwrap(), "--html", &out]);
        assert_eq!(o.status.code(), Some(2), "{out}: {}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{out}: one line: {e}");
        assert!(
            e.starts_with("k3shim: ")
                && e.contains(says)
                && e.contains("k3shim does not write its own output under /proc/sys"),
            "{out}: {says:?} in {e}"
        );
        assert!(stdout(&o).is_empty(), "{out}: refused before the report");
    }
    assert_eq!(host_sysctls(), before, "the host's entries are untouched");
}
