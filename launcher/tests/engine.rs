//! `k3shim run` redirects /proc/sys for real programs: inside gVisor, where the
//! entries are missing, and natively in shadow mode, where the host's must never
//! change. (Issue 2.)

mod sandbox;

use sandbox::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ws() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `k3shim run --state DIR ARGS -- CMD`, as a shell word list.
fn run_cmd(state: &str, cmd: &str) -> String {
    format!("{} run --state {state} -- {cmd}", k3shim().display())
}

#[test]
fn sysctl_reads_fake_values_and_a_write_persists_across_runs_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let s = "/tmp/k3shim-test-state";
    let script = format!(
        "set -e; {} ; {} ; {}",
        run_cmd(
            s,
            "sysctl -n vm.panic_on_oom kernel.panic kernel.keys.root_maxkeys"
        ),
        run_cmd(s, "sysctl -w kernel.panic=10"),
        run_cmd(s, "sysctl -n kernel.panic"),
    );
    let o = gvisor(&script);
    assert_ok(&o, "sysctl under k3shim in gVisor");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..3],
        &["0", "0", "1000000"],
        "profile defaults: {out}"
    );
    assert!(out.contains("kernel.panic = 10"), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some("10"),
        "the write is read back by the next run: {out}"
    );
}

#[test]
fn without_the_shim_gvisor_lacks_the_entries() {
    // The control: the problem this tool exists for.
    if !have_gvisor() {
        return;
    }
    let o = gvisor("cat /proc/sys/vm/panic_on_oom");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

#[test]
fn procfs_semantics_hold_for_python_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let py = ws().join("tests/scripts/procfs_semantics.py");
    let o = gvisor(&run_cmd(
        "/tmp/k3shim-sem",
        &format!("python3 {}", py.display()),
    ));
    assert_ok(&o, "procfs semantics");
    assert!(stdout(&o).contains("summary: 0 failed"), "{}", stdout(&o));
}

#[test]
fn procfs_semantics_hold_natively_in_shadow_mode_and_the_host_is_untouched() {
    let before = host_sysctls();
    let st = scratch("shadow");
    let py = ws().join("tests/scripts/procfs_semantics.py");
    let o = Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(st.join("state"))
        .arg("--")
        .arg("python3")
        .arg(&py)
        .output()
        .unwrap();
    assert_ok(&o, "procfs semantics natively");
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn shell_forms_cwd_relative_and_redirections_work_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let script = "cd /proc/sys && cat vm/panic_on_oom && cat ./kernel/../vm//panic_on_oom; \
                  echo 5 > kernel/panic; echo rc=$?; cat kernel/panic; \
                  echo abc > kernel/panic; echo rc=$?; cat kernel/panic; \
                  ls /proc/sys/vm; ls -l /proc/sys/kernel/panic";
    let o = gvisor(&run_cmd("/tmp/k3shim-sh", &format!("sh -c '{script}'")));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        &["0", "0", "rc=0", "5"],
        "{out}\n{}",
        stderr(&o)
    );
    assert_eq!(
        lines[4], "rc=1",
        "an invalid value fails in write(2), as on procfs: {out}"
    );
    assert_eq!(lines[5], "5", "and keeps the old value: {out}");
    assert!(
        out.contains("panic_on_oom") && out.contains("overcommit_memory"),
        "ls merges fake and real: {out}"
    );
    assert!(
        out.contains("-rw-r--r--"),
        "ls -l works (statx fix) and shows a 0644 file: {out}\n{}",
        stderr(&o)
    );
}

#[test]
fn sysctl_a_lists_fake_and_real_entries_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&run_cmd("/tmp/k3shim-a", "sysctl -a"));
    let out = stdout(&o);
    assert!(out.contains("vm.panic_on_oom = 0"), "{out}");
    assert!(out.contains("vm.overcommit_memory = 0"), "{out}");
    assert!(
        out.contains("kernel.keys.root_maxbytes = 25000000"),
        "{out}"
    );
}

#[test]
fn go_program_with_64_goroutines_gets_every_value_right_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let fx = fixtures();
    let ss = fx.join("sysstress");
    // Reads of missing entries, then writes and read-backs, with os/exec children and GC.
    let script = format!(
        "set -e; {r} ; {w}",
        r = run_cmd("/tmp/k3shim-go", &format!("{} -gomaxprocs 4 -goroutines 64 -iterations 20 vm/panic_on_oom=0 kernel/keys/root_maxkeys=1000000", ss.display())),
        w = run_cmd("/tmp/k3shim-go", &format!("{} -write -gomaxprocs 4 -goroutines 64 -iterations 10 kernel/panic=10,7 vm/panic_on_oom=0,1", ss.display())),
    );
    let o = gvisor(&script);
    assert_ok(&o, "sysstress in gVisor");
    assert_eq!(
        stdout(&o).matches("sysstress: ok").count() + stderr(&o).matches("sysstress: ok").count(),
        2,
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn go_program_natively_in_shadow_mode() {
    let before = host_sysctls();
    let fx = fixtures();
    let st = scratch("go-native");
    let o = Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(st.join("s"))
        .arg("--")
        .arg(fx.join("sysstress"))
        .args([
            "-write",
            "-iterations",
            "20",
            "kernel/panic=10,7",
            "vm/panic_on_oom=0,1",
        ])
        .output()
        .unwrap();
    assert_ok(&o, "sysstress natively");
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
}

#[test]
fn threads_fork_exec_from_a_non_leader_thread_and_signal_storms_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let fx = fixtures();
    let tt = fx.join("threadtorture");
    let o = gvisor(&run_cmd(
        "/tmp/k3shim-tt",
        &format!(
            "{} -threads 500 -exec-from-thread vm/panic_on_oom=0",
            tt.display()
        ),
    ));
    assert_ok(&o, "threadtorture in gVisor");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("exec from non-leader thread ok"), "{all}");
}

#[test]
fn exit_status_is_the_commands_own_or_128_plus_signal() {
    for (cmd, want) in [
        ("exit 7", 7),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
    ] {
        let st = scratch("exit");
        let o = Command::new(k3shim())
            .args(["run", "--state"])
            .arg(st.join("s"))
            .args(["--", "sh", "-c", cmd])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(want), "{cmd}: {}", stderr(&o));
    }
}

#[test]
fn missing_and_non_executable_commands_give_127_and_126_with_one_line() {
    let st = scratch("bad-cmd");
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args(["--", "no-such-command-k3shim"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-command-k3shim"));
    let f = st.join("not-exec");
    std::fs::write(&f, "#!/bin/sh\n").unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .arg("--")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("not executable"), "{}", stderr(&o));
}

#[test]
fn a_corrupt_state_dir_or_bad_profile_is_refused_and_nothing_is_lost() {
    let st = scratch("corrupt");
    let state = st.join("s");
    let ok = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(&state)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_ok(&ok, "seeding");
    std::fs::write(state.join("index.json"), "{not json").unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(&state)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("index.json"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(state.join("index.json")).unwrap(),
        "{not json",
        "the corrupt file is left for the user"
    );

    let prof = st.join("bad.toml");
    std::fs::write(&prof, "this is not = = toml").unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s2"))
        .arg("--profile")
        .arg(&prof)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml"), "{}", stderr(&o));

    let foreign = st.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious"), "data").unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(&foreign)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(foreign.join("precious")).unwrap(),
        "data"
    );
}

#[test]
fn foreign_architecture_binaries_are_refused_with_one_line() {
    let st = scratch("arch");
    // A minimal 32-bit ARM ELF header is enough for the check.
    let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0];
    elf.resize(52, 0);
    elf[16] = 2; // ET_EXEC
    elf[18] = 40; // EM_ARM
    elf[20] = 1;
    elf[40] = 52; // e_ehsize
    let p = st.join("arm-prog");
    std::fs::write(&p, &elf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .arg("--")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("arm") || stderr(&o).contains("ELF"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sigterm_to_k3shim_reaches_the_command() {
    let st = scratch("sigterm");
    let mut c = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = c.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("got-term"), "{rest}");
    assert_eq!(st.code(), Some(42));
}

#[test]
fn group_stop_and_continue_work_under_the_shim() {
    // The child stops itself (as Ctrl-Z would); its parent sees it stopped with
    // WUNTRACED, continues it, sees WCONTINUED, and the child finishes.
    let st = scratch("stop");
    let py = r#"
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    open('/proc/sys/kernel/panic').read()
    os._exit(5)
_, s = os.waitpid(pid, os.WUNTRACED)
print('stopped', os.WIFSTOPPED(s), os.WSTOPSIG(s) == signal.SIGSTOP)
os.kill(pid, signal.SIGCONT)
_, s = os.waitpid(pid, os.WCONTINUED)
print('continued', os.WIFCONTINUED(s))
_, s = os.waitpid(pid, 0)
print('exited', os.WEXITSTATUS(s))
"#;
    let o = Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(st.join("s"))
        .args(["--", "python3", "-c", py])
        .output()
        .unwrap();
    assert_ok(&o, "stop/cont");
    assert_eq!(
        stdout(&o),
        "stopped True True\ncontinued True\nexited 5\n",
        "{}",
        stderr(&o)
    );
}

#[test]
fn killing_k3shim_kills_the_traced_tree() {
    let st = scratch("exitkill");
    let pidfile = st.join("pid");
    let mut c = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args([
            "--",
            "sh",
            "-c",
            &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
        ])
        .spawn()
        .unwrap();
    let mut pid = 0;
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = s.trim().parse::<i32>() {
                pid = p;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pid > 0);
    c.kill().unwrap();
    c.wait().unwrap();
    let mut gone = false;
    for _ in 0..100 {
        // SAFETY: probing whether a pid exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "pid {pid} survived its tracer");
}

#[test]
fn vfork_posix_spawn_and_grandchildren_are_traced_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    // python's subprocess uses vfork/posix_spawn; the grandchild reads through the shim.
    let script = "python3 -c \"import subprocess; print(subprocess.run(['sh','-c','cat /proc/sys/kernel/keys/root_maxbytes'],capture_output=True,text=True).stdout.strip())\"";
    let o = gvisor(&run_cmd("/tmp/k3shim-vf", script));
    assert_ok(&o, "vfork chain");
    assert_eq!(stdout(&o).trim(), "25000000");
}

#[test]
fn pthreads_made_with_clone3_are_traced_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    // glibc's pthread_create uses clone3; each thread reads a missing entry.
    let script = "python3 -c \"
import threading
out = []
def r():
    out.append(open('/proc/sys/kernel/keys/root_maxkeys').read().strip())
ts = [threading.Thread(target=r) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(set(out)), len(out))
\"";
    let o = gvisor(&run_cmd("/tmp/k3shim-pt", script));
    assert_ok(&o, "python threads");
    assert_eq!(stdout(&o).trim(), "['1000000'] 16");
}

#[test]
fn relative_opens_inside_a_fake_directory_reach_real_entries_too() {
    // cwd or a dirfd on /proc/sys/vm is a view in the state directory; a real
    // entry opened relative to it must still be the real one, not the view's
    // placeholder. (Read-only: the host is untouched.)
    let st = scratch("view-rel");
    let real = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
    let o = Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args(["--", "sh", "-c", "cd /proc/sys/vm && cat overcommit_memory"])
        .output()
        .unwrap();
    assert_ok(&o, "cd + relative read");
    assert_eq!(stdout(&o), real);
    if have_gvisor() {
        let o = gvisor(&run_cmd(
            "/tmp/k3shim-vr",
            "sh -c 'cd /proc/sys/vm && cat overcommit_memory panic_on_oom'",
        ));
        assert_ok(&o, "cd + relative read in gVisor");
        assert_eq!(stdout(&o), "0\n0\n");
    }
}

#[test]
fn a_bind_rule_redirects_a_path_outside_proc_sys_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    // gVisor has no /proc/diskstats; -b gives cAdvisor one from a file the user provides.
    let st = scratch("bind");
    let f = st.join("diskstats");
    std::fs::write(&f, "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
    let o = gvisor(&format!(
        "{} run --state /tmp/k3shim-bind -b {}:/proc/diskstats -- cat /proc/diskstats",
        k3shim().display(),
        f.display()
    ));
    assert_ok(&o, "bind");
    assert!(stdout(&o).contains(" sda "), "{}", stdout(&o));
}
