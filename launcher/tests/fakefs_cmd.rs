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

#[test]
fn a_corrupt_index_gives_a_one_line_error_and_is_left_intact() {
    let e = env();
    ok(&fakefs(&e, "init", &[]));
    ok(&fakefs(&e, "set", &["kernel/panic", "10"]));
    std::fs::write(
        e.state.join("index.json"),
        "{\"layout\": 1, \"entries\": {\"kernel/panic\": ",
    )
    .unwrap();
    let before = snapshot(&e.state);
    for (sub, rest) in [
        ("show", &[][..]),
        ("get", &["kernel/panic"][..]),
        ("set", &["kernel/panic", "5"][..]),
        ("diff", &[][..]),
        ("reset", &["--yes"][..]),
        ("init", &[][..]),
    ] {
        let out = fakefs(&e, sub, rest);
        let err = one_line_error(&out);
        assert!(
            err.contains("index.json") && err.contains("corrupt"),
            "{sub}: {err}"
        );
        assert_eq!(
            snapshot(&e.state),
            before,
            "{sub} changed a corrupt state directory"
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
