//! `k3shim fakefs init|show|get|set|diff|reset` on a temporary state
//! directory, through the built binary.
//!
//! Every test points K3SHIM_PROC_SYS_ROOT at a temporary "real /proc/sys"
//! so that nothing here can reach the host's /proc/sys.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Env {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    proc_root: PathBuf,
}

/// A fresh temp dir with a fake "real" /proc/sys holding only
/// vm/overcommit_memory = 0 (so that one entry's source is `real`).
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let proc_root = tmp.path().join("proc-sys");
    std::fs::create_dir_all(proc_root.join("vm")).unwrap();
    std::fs::write(proc_root.join("vm/overcommit_memory"), "0\n").unwrap();
    Env {
        state: tmp.path().join("state"),
        proc_root,
        _tmp: tmp,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn k3shim(e: &Env, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_k3shim"))
        .args(args)
        .env("K3SHIM_PROC_SYS_ROOT", &e.proc_root)
        .env_remove("K3SHIM_STATE")
        .output()
        .expect("run k3shim");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn fakefs(e: &Env, sub: &str, rest: &[&str]) -> Out {
    let state = e.state.to_str().unwrap().to_string();
    let mut args = vec!["fakefs", sub, "--state", state.as_str()];
    args.extend_from_slice(rest);
    k3shim(e, &args)
}

fn ok(o: &Out) -> &str {
    assert_eq!(
        o.code, 0,
        "expected success\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    &o.stdout
}

/// A k3shim error: exit 2 and exactly one line on stderr, starting "k3shim: ".
fn one_line_error(o: &Out) -> &str {
    assert_eq!(
        o.code, 2,
        "expected exit 2\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    let err = o.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "error must be one line: {err:?}");
    assert!(err.starts_with("k3shim: "), "{err}");
    err
}

/// Every file under `dir` with its content, for before/after comparisons.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in std::fs::read_dir(&d).unwrap() {
            let p = ent.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push((p.clone(), b"<dir>".to_vec()));
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// The row of `show` for a path, split on runs of two or more spaces.
fn show_row(show: &str, path: &str) -> Vec<String> {
    let line = show
        .lines()
        .find(|l| l.split_whitespace().next() == Some(path))
        .unwrap_or_else(|| panic!("no row for {path} in:\n{show}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn init_creates_and_seeds_a_new_state_directory() {
    let e = env();
    let out = fakefs(&e, "init", &[]);
    assert!(
        ok(&out).contains("initialized state directory"),
        "{}",
        out.stdout
    );
    assert!(e.state.join("k3shim-state.toml").is_file());
    assert_eq!(
        std::fs::read_to_string(e.state.join("values/vm/panic_on_oom")).unwrap(),
        "0\n"
    );

    // A second init opens it and keeps what was written.
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    assert!(ok(&fakefs(&e, "init", &[])).contains("opened existing"));
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "10\n");
}

#[test]
fn show_prints_an_aligned_table_of_path_value_source_rule_and_ro() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    let out = fakefs(&e, "show", &[]);
    let show = ok(&out);
    let header: Vec<&str> = show.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["PATH", "VALUE", "SOURCE", "RULE", "RO"]);
    // Columns line up: every row's VALUE starts where the header's does.
    let col = show.lines().next().unwrap().find("VALUE").unwrap();
    let row = show
        .lines()
        .find(|l| l.starts_with("/proc/sys/vm/panic_on_oom "))
        .unwrap();
    assert_eq!(&row[col..col + 1], "0", "{row}");

    assert_eq!(
        show_row(show, "/proc/sys/vm/panic_on_oom"),
        ["/proc/sys/vm/panic_on_oom", "0", "profile", "range 0 2"]
    );
    // Present in the (fake) real tree: used as it is in overlay mode.
    assert_eq!(show_row(show, "/proc/sys/vm/overcommit_memory")[2], "real");
    // Read-only entries say so.
    assert_eq!(
        show_row(show, "/proc/sys/kernel/cap_last_cap")
            .last()
            .unwrap(),
        "ro"
    );
    // The last line sums up.
    assert!(
        show.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("0 written"),
        "{show}"
    );

    ok(&fakefs(&e, "set", &["vm/panic_on_oom", "1"]));
    let show = fakefs(&e, "show", &[]).stdout;
    assert_eq!(
        show_row(&show, "/proc/sys/vm/panic_on_oom")[1..3],
        ["1", "written"]
    );
}

#[test]
fn show_json_lists_entries_for_scripts() {
    let e = env();
    let out = fakefs(&e, "show", &["--json"]);
    // show never creates a state directory: init first.
    one_line_error(&out);
    ok(&fakefs(&e, "init", &[]));
    let v: Value = serde_json::from_str(ok(&fakefs(&e, "show", &["--json"]))).unwrap();
    assert_eq!(v["mode"], "overlay");
    let entries = v["entries"].as_array().unwrap();
    let p = entries
        .iter()
        .find(|x| x["path"] == "/proc/sys/vm/panic_on_oom")
        .unwrap();
    assert_eq!(p["value"], "0");
    assert_eq!(p["source"], "profile");
    assert_eq!(p["rule"], "range 0 2");
    assert_eq!(p["readonly"], false);
}

#[test]
fn get_prints_the_value_a_traced_program_would_read() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    assert_eq!(ok(&fakefs(&e, "get", &["vm/panic_on_oom"])), "0\n");
    assert_eq!(
        ok(&fakefs(&e, "get", &["/proc/sys/kernel/keys/root_maxkeys"])),
        "1000000\n"
    );
    assert_eq!(
        ok(&fakefs(&e, "get", &["net/ipv4/ping_group_range"])),
        "1\t0\n",
        "multi-integer values are tab-separated, as procfs prints them"
    );

    let err = one_line_error(&fakefs(&e, "get", &["vm/no_such_entry"])).to_string();
    assert!(err.contains("vm/no_such_entry"), "{err}");
}

#[test]
fn set_stores_a_valid_value_and_diff_reports_it() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    let out = fakefs(&e, "set", &["kernel/panic", "10"]);
    assert!(ok(&out).contains("0 -> 10"), "{}", out.stdout);
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "10\n");
    assert_eq!(
        std::fs::read_to_string(e.state.join("values/kernel/panic")).unwrap(),
        "10\n"
    );
    // The write is journaled.
    let journal = std::fs::read_to_string(e.state.join("journal.jsonl")).unwrap();
    assert!(journal.contains("/proc/sys/kernel/panic"), "{journal}");

    let out = fakefs(&e, "diff", &[]);
    let diff = ok(&out);
    assert_eq!(
        diff.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["PATH", "PROFILE", "NOW"]
    );
    let row: Vec<&str> = diff
        .lines()
        .find(|l| l.starts_with("/proc/sys/kernel/panic "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["/proc/sys/kernel/panic", "0", "10"]);

    let v: Value = serde_json::from_str(ok(&fakefs(&e, "diff", &["--json"]))).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v}");
    assert_eq!(changes[0]["path"], "/proc/sys/kernel/panic");
    assert_eq!(changes[0]["baseline"], "0");
    assert_eq!(changes[0]["current"], "10");
}

#[test]
fn diff_of_an_untouched_state_directory_says_so() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    assert!(ok(&fakefs(&e, "diff", &[])).starts_with("no changes relative to the profile"));
    let v: Value = serde_json::from_str(ok(&fakefs(&e, "diff", &["--json"]))).unwrap();
    assert_eq!(v["changes"].as_array().unwrap().len(), 0);
}

#[test]
fn set_of_an_invalid_value_exits_non_zero_and_keeps_the_old_value() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    let before = snapshot(&e.state.join("values"));

    let out = fakefs(&e, "set", &["kernel/panic", "abc"]);
    let err = one_line_error(&out);
    assert!(
        err.contains("kernel/panic") && err.contains("EINVAL"),
        "{err}"
    );
    assert!(
        err.contains(e.state.to_str().unwrap()),
        "the error names the state directory: {err}"
    );
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "10\n");
    assert_eq!(snapshot(&e.state.join("values")), before);

    // Out of range, and read-only entries, are refused the same way.
    one_line_error(&fakefs(
        &e,
        "set",
        &["net/netfilter/nf_conntrack_tcp_be_liberal", "7"],
    ));
    assert_eq!(
        ok(&fakefs(
            &e,
            "get",
            &["net/netfilter/nf_conntrack_tcp_be_liberal"]
        )),
        "0\n"
    );
    let err = one_line_error(&fakefs(&e, "set", &["kernel/cap_last_cap", "12"])).to_string();
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(snapshot(&e.state.join("values")), before);
}

#[test]
fn reset_needs_yes_and_then_restores_the_profile() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    ok(&fakefs(&e, "set", &["vm/panic_on_oom", "1"]));

    // Without --yes: says what it would do, asks for --yes, changes nothing.
    let before = snapshot(&e.state);
    let out = fakefs(&e, "reset", &[]);
    let err = one_line_error(&out);
    assert!(err.contains("--yes"), "{err}");
    assert!(
        out.stdout.contains("/proc/sys/kernel/panic")
            && out.stdout.contains("/proc/sys/vm/panic_on_oom"),
        "{}",
        out.stdout
    );
    assert_eq!(snapshot(&e.state), before);
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "10\n");

    let out = fakefs(&e, "reset", &["--yes"]);
    assert!(
        ok(&out).contains("2 written entries restored"),
        "{}",
        out.stdout
    );
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "0\n");
    assert_eq!(ok(&fakefs(&e, "get", &["vm/panic_on_oom"])), "0\n");
    assert!(ok(&fakefs(&e, "diff", &[])).starts_with("no changes"));
    // The journal is history: kept.
    assert!(std::fs::read_to_string(e.state.join("journal.jsonl"))
        .unwrap()
        .contains("kernel/panic"));
}

#[test]
fn a_non_empty_foreign_directory_is_refused_and_left_intact() {
    let e = env();
    std::fs::create_dir_all(e.state.join("photos")).unwrap();
    std::fs::write(e.state.join("notes.txt"), "precious\n").unwrap();
    std::fs::write(e.state.join("photos/a.jpg"), [0xff, 0xd8, 0xff]).unwrap();
    let before = snapshot(&e.state);
    for sub in ["init", "show", "get", "set", "diff", "reset"] {
        let rest: &[&str] = match sub {
            "get" => &["vm/panic_on_oom"],
            "set" => &["vm/panic_on_oom", "1"],
            "reset" => &["--yes"],
            _ => &[],
        };
        let out = fakefs(&e, sub, rest);
        let err = one_line_error(&out);
        assert!(
            err.contains(e.state.file_name().unwrap().to_str().unwrap()),
            "{sub}: names the directory: {err}"
        );
        assert!(err.contains("not a k3shim state directory"), "{sub}: {err}");
        assert_eq!(
            snapshot(&e.state),
            before,
            "{sub} changed the foreign directory"
        );
    }
}

const CORRUPT_INDEX: &str = "{\"layout\": 1, \"entries\": {\"kernel/panic\": ";

/// A state directory with kernel/panic written (10) and its index cut short.
fn corrupt_index_env() -> Env {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    std::fs::write(e.state.join("index.json"), CORRUPT_INDEX).unwrap();
    e
}

/// The names in the state directory that start with `prefix`.
fn names_with(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_corrupt_index_is_refused_with_one_line_by_the_commands_that_do_not_repair() {
    let e = corrupt_index_env();
    let before = snapshot(&e.state);
    for (sub, rest) in [
        ("show", &[][..]),
        ("get", &["kernel/panic"][..]),
        ("set", &["kernel/panic", "5"][..]),
        ("diff", &[][..]),
        ("reset", &[][..]),
    ] {
        let out = fakefs(&e, sub, rest);
        let err = one_line_error(&out);
        assert!(
            err.contains("index.json") && err.contains("corrupt") || sub == "reset",
            "{sub}: {err}"
        );
        if sub == "reset" {
            assert!(
                out.stdout.contains("index.json") && out.stdout.contains("moves it aside"),
                "reset without --yes says what --yes would do: {}",
                out.stdout
            );
        } else {
            assert!(err.contains("fakefs init"), "says what repairs it: {err}");
        }
        assert_eq!(
            snapshot(&e.state),
            before,
            "{sub} changed a corrupt state directory"
        );
    }
}

#[test]
fn init_moves_a_corrupt_index_aside_and_rebuilds_it_keeping_the_values() {
    let e = corrupt_index_env();
    let out = fakefs(&e, "init", &[]);
    let stdout = ok(&out);
    let aside = names_with(&e.state, "index.json.corrupt-");
    assert_eq!(aside.len(), 1, "{stdout}");
    assert!(
        stdout.contains("repaired: index.json was corrupt") && stdout.contains(&aside[0]),
        "init says what it did: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(e.state.join(&aside[0])).unwrap(),
        CORRUPT_INDEX,
        "the damaged index is kept, as it was"
    );
    // The written value survived, and every command works again.
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "10\n");
    let diff = fakefs(&e, "diff", &[]);
    assert!(
        ok(&diff).contains("/proc/sys/kernel/panic"),
        "{}",
        diff.stdout
    );
    ok(&fakefs(&e, "set", &["kernel/panic", "5"]));
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "5\n");
}

#[test]
fn reset_yes_always_leaves_a_working_state_directory() {
    // A corrupt index.
    let e = corrupt_index_env();
    let out = fakefs(&e, "reset", &["--yes"]);
    assert!(ok(&out).contains("index.json.corrupt-"), "{}", out.stdout);
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "0\n");
    ok(&fakefs(&e, "show", &[]));
    // A corrupt state file, a symlinked values/ directory and a FIFO for an index.
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    std::fs::write(e.state.join("k3shim-state.toml"), "\u{1}garbage = [").unwrap();
    let outside = e.state.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::rename(e.state.join("values"), e.state.join("values.old")).unwrap();
    std::os::unix::fs::symlink(&outside, e.state.join("values")).unwrap();
    std::fs::remove_file(e.state.join("index.json")).unwrap();
    nix_mkfifo(&e.state.join("index.json"));
    // Where repairs put things is a symlink too.
    std::os::unix::fs::symlink(&outside, e.state.join("damaged")).unwrap();
    assert_eq!(fakefs(&e, "show", &[]).code, 2);
    let out = fakefs(&e, "reset", &["--yes"]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("k3shim-state.toml was corrupt")
            && stdout.contains("values was a symlink to")
            && stdout.contains("index.json was a FIFO")
            && stdout.contains("damaged was a symlink to"),
        "{stdout}"
    );
    assert_eq!(ok(&fakefs(&e, "get", &["vm/panic_on_oom"])), "0\n");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing was written through the symlink"
    );
    assert!(
        std::fs::symlink_metadata(e.state.join("values"))
            .unwrap()
            .is_dir(),
        "values/ is a directory again"
    );
}

fn nix_mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn a_refused_set_changes_nothing_in_the_state_directory() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    let before = snapshot(&e.state);
    // vm/overcommit_memory is real and not yet copied; vm/panic_on_oom is a
    // profile entry; kernel/cap_last_cap is read-only.
    for (path, value) in [
        ("vm/overcommit_memory", "abc"),
        ("vm/panic_on_oom", "7"),
        ("kernel/panic", ""),
        ("kernel/cap_last_cap", "1"),
        ("kernel/nosuch", "1"),
    ] {
        let out = fakefs(&e, "set", &[path, value]);
        let err = one_line_error(&out);
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(
            snapshot(&e.state),
            before,
            "set {path} {value:?} was refused but changed the state directory"
        );
    }
}

#[test]
fn commands_other_than_init_refuse_a_state_directory_that_does_not_exist() {
    let e = env();
    for sub in ["show", "diff", "get"] {
        let rest: &[&str] = if sub == "get" {
            &["vm/panic_on_oom"]
        } else {
            &[]
        };
        let err = one_line_error(&fakefs(&e, sub, rest)).to_string();
        assert!(err.contains("fakefs init"), "tells what to do: {err}");
        assert!(!e.state.exists(), "{sub} created the state directory");
    }
}

#[test]
fn a_bad_profile_is_refused_before_anything_is_written() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    let before = snapshot(&e.state);
    let err =
        one_line_error(&fakefs(&e, "show", &["--profile", "/nonexistent/my.toml"])).to_string();
    assert!(err.contains("/nonexistent/my.toml"), "{err}");
    assert_eq!(snapshot(&e.state), before);
}

/// Plants what a user's mistake (or anything between runs) can leave in a
/// state directory: a directory symlink, a file symlink and a garbage value.
/// Returns the directory the symlinks point into.
fn plant_damage(e: &Env) -> PathBuf {
    let outside = e.state.parent().unwrap().join("outside");
    std::fs::create_dir_all(outside.join("bridge")).unwrap();
    std::fs::write(outside.join("secret"), "1\n").unwrap();
    std::fs::write(outside.join("bridge/bridge-nf-call-iptables"), "1\n").unwrap();
    let v = e.state.join("values");
    std::fs::remove_dir_all(v.join("net/bridge")).unwrap();
    std::os::unix::fs::symlink(outside.join("bridge"), v.join("net/bridge")).unwrap();
    std::fs::remove_file(v.join("vm/panic_on_oom")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), v.join("vm/panic_on_oom")).unwrap();
    std::fs::write(v.join("kernel/panic"), b"garbage\0\xff\n").unwrap();
    outside
}

#[test]
fn show_marks_symlinks_and_garbage_values_as_damaged_and_init_repairs_them() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    let outside = plant_damage(&e);
    let outside_before = snapshot(&outside);
    let before = snapshot(&e.state);

    let out = fakefs(&e, "show", &[]);
    let show = ok(&out);
    for path in [
        "/proc/sys/vm/panic_on_oom",
        "/proc/sys/kernel/panic",
        "/proc/sys/net/bridge/bridge-nf-call-iptables",
        "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    ] {
        let row = show_row(show, path);
        assert_eq!(row[1], "-", "no value is shown for {path}: {row:?}");
        assert_eq!(row[2], "damaged", "{path}: {row:?}");
    }
    assert!(
        show.contains("damaged: values/vm/panic_on_oom is a symlink to ")
            && show.contains("damaged: values/net/bridge is a symlink to ")
            && show.contains(
                r#"damaged: values/kernel/panic is holding "garbage\0\xff\n", which is not text"#
            )
            && show.contains("4 damaged")
            && show.contains("fakefs init"),
        "{show}"
    );
    let json: Value = serde_json::from_str(ok(&fakefs(&e, "show", &["--json"]))).unwrap();
    assert_eq!(json["damaged"].as_array().unwrap().len(), 3, "{json}");
    for (sub, rest) in [("get", ["vm.panic_on_oom"]), ("set", ["kernel/panic=1"])] {
        let rest: Vec<&str> = rest[0].split('=').collect();
        let err = one_line_error(&fakefs(&e, sub, &rest)).to_string();
        assert!(err.contains("fakefs init"), "{sub}: {err}");
    }
    assert_eq!(
        snapshot(&e.state),
        before,
        "show, get and a refused set change nothing"
    );

    let out = fakefs(&e, "init", &[]);
    let init = ok(&out);
    assert_eq!(
        init.lines().filter(|l| l.starts_with("repaired: ")).count(),
        3,
        "{init}"
    );
    assert!(
        init.contains("forgot kernel/panic"),
        "the written value is gone: {init}"
    );
    let show = ok(&fakefs(&e, "show", &[])).to_string();
    assert!(!show.contains("damaged"), "{show}");
    assert_eq!(ok(&fakefs(&e, "get", &["vm/panic_on_oom"])), "0\n");
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "0\n");
    assert_eq!(
        ok(&fakefs(&e, "get", &["net/bridge/bridge-nf-call-iptables"])),
        "1\n"
    );
    // Moved aside, not deleted; nothing outside changed or was followed.
    let aside = names_with(&e.state.join("damaged"), "");
    assert_eq!(aside.len(), 1);
    let d = e.state.join("damaged").join(&aside[0]).join("values");
    assert!(std::fs::symlink_metadata(d.join("vm/panic_on_oom"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(d.join("kernel/panic")).unwrap(),
        b"garbage\0\xff\n"
    );
    assert_eq!(snapshot(&outside), outside_before);
}

#[test]
fn get_and_set_accept_sysctl_names_as_procps_spells_them() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel.keys.root_maxkeys", "7"]));
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/keys/root_maxkeys"])), "7\n");
    assert_eq!(ok(&fakefs(&e, "get", &["kernel.keys.root_maxkeys"])), "7\n");
    // A dot inside a name is written as a slash (flannel.1 here), as sysctl(8) does.
    ok(&fakefs(
        &e,
        "set",
        &["net.ipv4.conf.flannel/1.route_localnet", "1"],
    ));
    assert_eq!(
        ok(&fakefs(
            &e,
            "get",
            &["net/ipv4/conf/flannel.1/route_localnet"]
        )),
        "1\n"
    );
    // A name that starts with a slash-separated part is a path already.
    assert_eq!(
        ok(&fakefs(
            &e,
            "get",
            &["net/ipv4/conf/flannel.1/route_localnet"]
        )),
        "1\n"
    );
    let err = one_line_error(&fakefs(&e, "get", &["vm.nosuch"])).to_string();
    assert!(err.contains("vm/nosuch"), "{err}");
}

#[test]
fn show_get_and_diff_write_nothing_even_with_another_profile() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    let mine = e.state.parent().unwrap().join("mine.tsv");
    std::fs::write(&mine, "kernel/panic_on_oops\t1\tinteger\n").unwrap();
    let before = snapshot(&e.state);
    let profile = mine.to_str().unwrap();
    let out = fakefs(&e, "show", &["--profile", "k3s", "--profile", profile]);
    // What a run with that profile would see, without writing it.
    assert_eq!(show_row(ok(&out), "/proc/sys/kernel/panic_on_oops")[1], "1");
    let out = fakefs(
        &e,
        "get",
        &[
            "--profile",
            "k3s",
            "--profile",
            profile,
            "kernel/panic_on_oops",
        ],
    );
    assert_eq!(ok(&out), "1\n");
    ok(&fakefs(
        &e,
        "diff",
        &["--profile", "k3s", "--profile", profile],
    ));
    assert_eq!(snapshot(&e.state), before, "a read-only command wrote");
}

/// `setpriv` (util-linux) runs k3shim as nobody; the binary and the state
/// directory must be reachable by nobody, so the temp dir is opened up.
#[test]
fn read_only_commands_work_for_a_user_who_cannot_write_the_state_directory() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTICE: not root; cannot switch to nobody, skipping");
        return;
    }
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    use std::os::unix::fs::PermissionsExt;
    let top = e.state.parent().unwrap();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&e.state);
    let bin = env!("CARGO_BIN_EXE_k3shim");
    let as_nobody = |args: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", bin])
            .args(args)
            .env("K3SHIM_PROC_SYS_ROOT", &e.proc_root)
            .env_remove("K3SHIM_STATE")
            .output()
            .expect("run setpriv (util-linux)");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    let st = e.state.to_str().unwrap();
    // The user really cannot write it.
    let probe = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "touch",
        ])
        .arg(e.state.join("probe"))
        .status()
        .unwrap();
    assert!(!probe.success(), "nobody can write the state directory");
    let show = as_nobody(&["fakefs", "show", "--state", st]);
    assert!(
        ok(&show).contains("/proc/sys/kernel/panic"),
        "{}",
        show.stdout
    );
    assert_eq!(
        ok(&as_nobody(&[
            "fakefs",
            "get",
            "--state",
            st,
            "kernel.panic"
        ])),
        "10\n"
    );
    assert!(ok(&as_nobody(&["fakefs", "diff", "--state", st])).contains("kernel/panic"));
    let err = one_line_error(&as_nobody(&[
        "fakefs",
        "set",
        "--state",
        st,
        "kernel/panic",
        "1",
    ]))
    .to_string();
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(snapshot(&e.state), before);
}

/// README: `get` refuses a damaged entry. In overlay mode a traced read of
/// an entry whose real one works reaches the kernel, but the fake value is
/// damaged all the same (a write would fail with EIO, `show` says damaged).
#[test]
fn get_refuses_a_damaged_entry_in_either_mode() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    std::fs::write(e.state.join("values/vm/overcommit_memory"), b"garbage\0\n").unwrap();
    let err = one_line_error(&fakefs(&e, "get", &["vm/overcommit_memory"])).to_string();
    assert!(
        err.contains("cannot be served") && err.contains("fakefs init"),
        "{err}"
    );
    let e = env();
    ok(&fakefs(&e, "init", &["--mode", "shadow"]));
    std::fs::write(e.state.join("values/vm/panic_on_oom"), "1\n2\n").unwrap();
    for mode in [&[][..], &["--mode", "overlay"][..]] {
        let mut args = vec!["vm.panic_on_oom"];
        args.extend_from_slice(mode);
        let err = one_line_error(&fakefs(&e, "get", &args)).to_string();
        assert!(err.contains("not one line of text"), "{mode:?}: {err}");
    }
}

/// A state directory whose k3shim-state.toml was lost but which still holds
/// index.json and values/ is told apart from a foreign one: the commands
/// that only look say how to repair it, `init` and `reset --yes` repair it.
#[test]
fn a_state_directory_that_lost_its_marker_is_repaired_not_refused_as_foreign() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    std::fs::remove_file(e.state.join("k3shim-state.toml")).unwrap();
    let before = snapshot(&e.state);
    let err = one_line_error(&fakefs(&e, "show", &[])).to_string();
    assert!(
        err.contains("no k3shim-state.toml")
            && err.contains("index.json and values/")
            && err.contains("fakefs init"),
        "{err}"
    );
    assert_eq!(snapshot(&e.state), before, "show changed nothing");
    let out = fakefs(&e, "init", &[]);
    assert!(
        ok(&out).contains("repaired: k3shim-state.toml was missing"),
        "{}",
        out.stdout
    );
    assert_eq!(
        ok(&fakefs(&e, "get", &["kernel/panic"])),
        "10\n",
        "values kept"
    );
    std::fs::remove_file(e.state.join("k3shim-state.toml")).unwrap();
    let out = fakefs(&e, "reset", &["--yes"]);
    assert!(
        ok(&out).contains("repaired: k3shim-state.toml was missing"),
        "{}",
        out.stdout
    );
    assert_eq!(ok(&fakefs(&e, "get", &["kernel/panic"])), "0\n");
    // Without index.json and values/ it is someone else's directory.
    let e = env();
    std::fs::create_dir_all(e.state.join("values")).unwrap();
    std::fs::write(e.state.join("notes.txt"), "mine\n").unwrap();
    let err = one_line_error(&fakefs(&e, "reset", &["--yes"])).to_string();
    assert!(err.contains("not a k3shim state directory"), "{err}");
}

/// `show` shows what the last run saw: the mode a state directory was last
/// opened with for writing, unless --mode says otherwise.
#[test]
fn show_says_the_mode_the_directory_was_last_used_with() {
    let e = env();
    let summary = |args: &[&str]| -> String {
        let out = fakefs(&e, "show", args);
        ok(&out).lines().last().unwrap_or("").to_string()
    };
    ok(&fakefs(&e, "init", &["--mode", "shadow"]));
    assert!(summary(&[]).contains("(shadow mode)"), "{}", summary(&[]));
    assert!(summary(&["--mode", "overlay"]).contains("(overlay mode)"));
    ok(&fakefs(&e, "set", &["kernel/panic", "3"]));
    assert!(summary(&[]).contains("(shadow mode)"), "set keeps the mode");
    ok(&fakefs(&e, "init", &["--mode", "overlay"]));
    assert!(summary(&[]).contains("(overlay mode)"), "{}", summary(&[]));
}

#[test]
fn a_refused_set_says_nothing_was_changed_once() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    // A damaged top level that no entry lies under: tmp/ is a symlink. The
    // value passes the checks; opening the directory to write refuses it.
    let outside = e.state.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::remove_dir_all(e.state.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&outside, e.state.join("tmp")).unwrap();
    for (path, value) in [("kernel/panic", "1"), ("kernel/panic", "x")] {
        let err = one_line_error(&fakefs(&e, "set", &[path, value])).to_string();
        assert_eq!(err.matches("nothing was changed").count(), 1, "{err}");
    }
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    let err = one_line_error(&fakefs(&e, "set", &["vm/panic_on_oom", "7"])).to_string();
    assert_eq!(err.matches("nothing was changed").count(), 1, "{err}");
}

#[test]
fn counts_of_one_are_singular() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    let out = fakefs(&e, "diff", &[]);
    assert!(
        ok(&out).contains("1 entry changed relative to the profile"),
        "{}",
        out.stdout
    );
    let out = fakefs(&e, "reset", &[]);
    assert!(
        out.stdout
            .contains("reset would restore 1 written entry in"),
        "{}",
        out.stdout
    );
    let out = fakefs(&e, "reset", &["--yes"]);
    assert!(
        ok(&out).contains(": 1 written entry restored to the profile's values"),
        "{}",
        out.stdout
    );
}

/// Linux 6.x's kernel/core_modes prints one item a line ("file\npipe\n
/// socket\n"). Shadow mode copies it into the state directory at a traced
/// read; the next opener must take that copy for what it is, not for damage
/// (it said "not one line of text" and served EIO from the second run on).
#[test]
fn a_multi_line_read_only_entry_copied_by_shadow_mode_is_served_again_not_taken_for_damage() {
    let e = env();
    std::fs::create_dir_all(e.proc_root.join("kernel")).unwrap();
    std::fs::write(
        e.proc_root.join("kernel/core_modes"),
        "file\npipe\nsocket\n",
    )
    .unwrap();
    let state = e.state.to_str().unwrap().to_string();
    for run in 1..=2 {
        let o = k3shim(
            &e,
            &[
                "run",
                "--mode",
                "shadow",
                "--state",
                &state,
                "--",
                "cat",
                "/proc/sys/kernel/core_modes",
            ],
        );
        assert_eq!(o.stdout, "file\npipe\nsocket\n", "run {run}: {}", o.stderr);
        assert!(!o.stderr.contains("damaged"), "run {run}: {}", o.stderr);
        assert_eq!(o.code, 0, "run {run}: {}", o.stderr);
    }
    let show = ok(&fakefs(&e, "show", &["--mode", "shadow"])).to_string();
    assert!(!show.contains("damaged"), "{show}");
    assert_eq!(
        ok(&fakefs(&e, "get", &["kernel.core_modes"])),
        "file\npipe\nsocket\n"
    );
}
