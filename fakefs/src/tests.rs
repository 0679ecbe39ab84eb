//! Specification tests. A temp directory stands in for the real /proc/sys:
//! no test touches the host's.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

struct Env {
    _tmp: TempDir,
    state: PathBuf,
    proc: PathBuf,
    base: PathBuf,
}

/// A fake "real" /proc/sys shaped like this gVisor's: a few entries exist.
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let proc = base.join("procsys");
    for (rel, val, mode) in [
        ("kernel/hostname", "host\n", 0o644),
        ("kernel/panic", "1\n", 0o644),
        ("kernel/shmmax", "18446744073709551615\n", 0o644),
        ("kernel/yama_ro", "1\n", 0o444),
        ("vm/overcommit_memory", "0\n", 0o644),
        ("net/core/somaxconn", "4096\n", 0o644),
        ("net/ipv4/ip_forward", "0\n", 0o644),
        ("net/ipv4/ip_local_port_range", "32768\t60999\n", 0o644),
    ] {
        let p = proc.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, val).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    Env {
        state: base.join("state"),
        proc,
        base,
        _tmp: tmp,
    }
}

fn opts(e: &Env, mode: Mode) -> Options {
    let mut o = Options::new(&e.state);
    o.mode = mode;
    o.proc_root = e.proc.clone();
    o
}

fn open(e: &Env, mode: Mode) -> FakeFs {
    FakeFs::open(opts(e, mode)).unwrap()
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn backing(o: &Outcome) -> PathBuf {
    match o {
        Outcome::Fake { backing, .. } => backing.clone(),
        other => panic!("expected Fake, got {other:?}"),
    }
}

fn token(o: &Outcome) -> u64 {
    match o {
        Outcome::Fake {
            write_token: Some(t),
            ..
        } => *t,
        other => panic!("expected a write token, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            for (n, c) in tree(&e.path()) {
                out.push((format!("{}/{n}", e.file_name().to_string_lossy()), c));
            }
        } else {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
            ));
        }
    }
    out.sort();
    out
}

const WRITE: Op = Op::Write { trunc: true };

// ----- state directory -----

#[test]
fn a_new_state_dir_is_created_and_seeded_from_the_profile() {
    let e = env();
    let f = open(&e, Mode::Overlay);
    let st = fs::read_to_string(e.state.join(STATE_FILE)).unwrap();
    assert!(st.contains("layout = 1"), "{st}");
    assert_eq!(
        fs::read_to_string(e.state.join("values/vm/panic_on_oom")).unwrap(),
        "0\n"
    );
    assert_eq!(mode_of(&e.state.join("values/vm/panic_on_oom")), 0o644);
    assert_eq!(mode_of(&e.state.join("values/kernel/cap_last_cap")), 0o444);
    assert_eq!(fs::read(e.state.join("files/dev/kmsg")).unwrap(), b"");
    assert_eq!(f.state_dir(), fs::canonicalize(&e.state).unwrap());
}

#[test]
fn an_existing_empty_dir_is_seeded() {
    let e = env();
    fs::create_dir(&e.state).unwrap();
    open(&e, Mode::Overlay);
    assert!(e.state.join(STATE_FILE).is_file());
}

#[test]
fn a_foreign_non_empty_dir_is_refused_and_left_untouched() {
    let e = env();
    fs::create_dir(&e.state).unwrap();
    fs::write(e.state.join("thesis.tex"), "precious").unwrap();
    let err = FakeFs::open(opts(&e, Mode::Overlay)).err().unwrap();
    let canon = fs::canonicalize(&e.state).unwrap();
    assert_eq!(
        err.to_string(),
        format!("state directory {} is not a k3shim state directory (no k3shim-state.toml) and is not empty: pick an empty or new directory", canon.display())
    );
    assert_eq!(listing(&e.state), vec!["thesis.tex"]);
}

#[test]
fn a_file_as_state_dir_is_refused() {
    let e = env();
    fs::write(&e.state, "x").unwrap();
    let err = FakeFs::open(opts(&e, Mode::Overlay)).err().unwrap();
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn a_corrupt_state_file_gives_a_clear_error_and_loses_nothing() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    f.set("vm/panic_on_oom", "1").unwrap();
    drop(f);
    fs::write(e.state.join(STATE_FILE), "layout = \"one\n[[[").unwrap();
    let before = tree(&e.state);
    let err = FakeFs::open(opts(&e, Mode::Overlay)).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("k3shim-state.toml is corrupt") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_eq!(tree(&e.state), before);
}

#[test]
fn a_corrupt_index_gives_a_clear_error_and_loses_nothing() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    f.set("vm/panic_on_oom", "2").unwrap();
    drop(f);
    fs::write(e.state.join("index.json"), "{ not json").unwrap();
    let before = tree(&e.state);
    let err = FakeFs::open(opts(&e, Mode::Overlay)).err().unwrap();
    assert!(err.to_string().contains("index.json is corrupt"), "{err}");
    assert_eq!(tree(&e.state), before);
    assert_eq!(
        fs::read_to_string(e.state.join("values/vm/panic_on_oom")).unwrap(),
        "2\n"
    );
}

#[test]
fn a_state_dir_of_another_layout_version_gets_a_clear_message() {
    let e = env();
    open(&e, Mode::Overlay);
    fs::write(e.state.join(STATE_FILE), "layout = 7\n").unwrap();
    let err = FakeFs::open(opts(&e, Mode::Overlay)).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("layout version 7") && msg.contains("reads version 1"),
        "{msg}"
    );
}

#[test]
fn a_bad_profile_fails_before_anything_is_created() {
    let e = env();
    let bad = e.base.join("bad.toml");
    fs::write(
        &bad,
        "[entries]\n\"kernel/panic\" = { value = \"1\", rule = \"intt\" }\n",
    )
    .unwrap();
    let mut o = opts(&e, Mode::Overlay);
    o.profiles = vec!["k3s".into(), bad.to_string_lossy().into()];
    let err = FakeFs::open(o).err().unwrap();
    assert!(
        err.to_string().ends_with(
            "line 2: value rule \"intt\" unknown (expected integer, range, urange, ulong, ints, bitmap, enum, text)"
        ),
        "{err}"
    );
    assert!(!e.state.exists());
}

#[test]
fn written_values_survive_a_reopen() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let t = token(&f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE));
    f.write(t, 1, "kubelet", 0, b"1").unwrap();
    drop(f);
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Read);
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1\n");
    assert_eq!(f.get("vm/panic_on_oom").unwrap(), "1");
}

#[test]
fn changing_profiles_updates_unwritten_defaults_and_keeps_written_values() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    f.set("kernel/panic_on_oops", "1").unwrap();
    drop(f);
    let mine = e.base.join("mine.tsv");
    fs::write(
        &mine,
        "vm/panic_on_oom\t2\trange 0 2\nkernel/panic_on_oops\t0\tinteger\n",
    )
    .unwrap();
    let mut o = opts(&e, Mode::Overlay);
    o.profiles = vec!["k3s".into(), mine.to_string_lossy().into()];
    let f = FakeFs::open(o).unwrap();
    assert_eq!(f.get("vm/panic_on_oom").unwrap(), "2");
    assert_eq!(f.get("kernel/panic_on_oops").unwrap(), "1");
    drop(f);
    let mut o = opts(&e, Mode::Overlay);
    o.profiles = vec!["none".into()];
    let f = FakeFs::open(o).unwrap();
    assert!(!e.state.join("values/vm/panic_on_oom").exists());
    assert_eq!(f.get("kernel/panic_on_oops").unwrap(), "1");
    assert!(!f.covers(p("/dev/kmsg")));
}

#[test]
fn reopening_with_the_same_profile_skips_the_per_entry_check_and_verify_repairs_drift() {
    let e = env();
    drop(open(&e, Mode::Overlay));
    let value = e.state.join("values/vm/panic_on_oom");
    // Drift (a value the rule accepts) the open() check would repair; with an unchanged profile it is not looked at...
    fs::write(&value, "2\n").unwrap();
    let f = open(&e, Mode::Overlay);
    assert_eq!(fs::read_to_string(&value).unwrap(), "2\n");
    drop(f);
    // ...until `verify` (what `k3shim fakefs init` runs on an existing directory).
    let mut f = open(&e, Mode::Overlay);
    f.verify().unwrap();
    assert_eq!(fs::read_to_string(&value).unwrap(), "0\n");
    drop(f);
    // A different profile, or an index written without a fingerprint, is checked in full.
    fs::write(&value, "2\n").unwrap();
    let mine = e.base.join("mine.tsv");
    fs::write(&mine, "kernel/panic_on_oops\t1\tinteger\n").unwrap();
    let mut o = opts(&e, Mode::Overlay);
    o.profiles = vec!["k3s".into(), mine.to_string_lossy().into()];
    drop(FakeFs::open(o).unwrap());
    assert_eq!(fs::read_to_string(&value).unwrap(), "0\n");
    fs::write(&value, "2\n").unwrap();
    let index = e.state.join("index.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&index).unwrap()).unwrap();
    assert!(j.get("profile_fingerprint").is_some());
    j.as_object_mut().unwrap().remove("profile_fingerprint");
    fs::write(&index, serde_json::to_string(&j).unwrap()).unwrap();
    drop(open(&e, Mode::Overlay));
    assert_eq!(fs::read_to_string(&value).unwrap(), "0\n");
}

// ----- covers -----

#[test]
fn covers_proc_sys_standins_and_bind_destinations_only() {
    let e = env();
    let mut o = opts(&e, Mode::Overlay);
    o.binds = vec![parse_bind("/host/diskstats:/proc/diskstats").unwrap()];
    let f = FakeFs::open(o).unwrap();
    for yes in [
        "/proc/sys",
        "/proc/sys/vm/panic_on_oom",
        "/dev/kmsg",
        "/proc/diskstats",
        "/proc/diskstats/x",
    ] {
        assert!(f.covers(p(yes)), "{yes}");
    }
    for no in [
        "/proc/sysx",
        "/proc",
        "/proc/self/status",
        "/dev/kmsg2",
        "/dev",
        "/proc/diskstatsx",
        "/etc/hosts",
    ] {
        assert!(!f.covers(p(no)), "{no}");
    }
}

#[test]
fn uncovered_paths_are_real() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    assert_eq!(f.decide(p("/etc/hosts"), WRITE), Outcome::Real);
}

// ----- overlay and shadow -----

#[test]
fn overlay_passes_reads_of_a_working_real_entry_through() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Read),
        Outcome::Real
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Stat),
        Outcome::Real
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/hostname"), Op::Read),
        Outcome::Real
    );
    assert_eq!(f.get("kernel/panic").unwrap(), "1");
}

#[test]
fn overlay_serves_missing_entries_from_the_state_dir() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Read);
    let b = backing(&o);
    assert!(b.starts_with(f.state_dir()));
    assert_eq!(fs::read_to_string(&b).unwrap(), "0\n");
    assert_eq!(mode_of(&b), 0o644);
    assert_eq!(
        fs::read_to_string(backing(
            &f.decide(p("/proc/sys/net/ipv4/conf/cni0/route_localnet"), Op::Read)
        ))
        .unwrap(),
        "0\n"
    );
}

#[test]
fn overlay_first_write_to_a_real_entry_makes_it_fake_seeded_with_the_real_value() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/overcommit_memory"), WRITE);
    let b = backing(&o);
    assert_eq!(fs::read_to_string(&b).unwrap(), "0\n");
    f.write(token(&o), 7, "kubelet", 0, b"1").unwrap();
    assert_eq!(fs::read_to_string(&b).unwrap(), "1\n");
    assert_eq!(
        fs::read_to_string(e.proc.join("vm/overcommit_memory")).unwrap(),
        "0\n",
        "the real entry is never written"
    );
    assert_eq!(
        backing(&f.decide(p("/proc/sys/vm/overcommit_memory"), Op::Read)),
        b
    );
    drop(f);
    let mut f = open(&e, Mode::Overlay);
    assert_eq!(
        backing(&f.decide(p("/proc/sys/vm/overcommit_memory"), Op::Read)),
        b,
        "stays fake across runs"
    );
}

#[test]
fn overlay_write_through_sends_writes_of_writable_real_entries_to_the_kernel() {
    let e = env();
    let mut o = opts(&e, Mode::Overlay);
    o.write_through = true;
    let mut f = FakeFs::open(o).unwrap();
    assert_eq!(f.decide(p("/proc/sys/kernel/panic"), WRITE), Outcome::Real);
    // Missing entries still go to the fake tree.
    token(&f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE));
}

#[test]
fn overlay_unknown_real_readonly_entry_refuses_writes_with_eacces() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    assert_eq!(
        f.decide(p("/proc/sys/kernel/yama_ro"), WRITE),
        Outcome::Error(libc::EACCES)
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/osrelease"), WRITE),
        Outcome::Error(libc::EACCES)
    );
    assert_eq!(
        f.decide(
            p("/proc/sys/kernel/osrelease"),
            Op::Access { mode: libc::W_OK }
        ),
        Outcome::Error(libc::EACCES)
    );
}

/// This gVisor's procfs says 0444 for vm/overcommit_memory and
/// net/core/somaxconn (writes fail with EIO) and for ip_forward (writes
/// work); procps `sysctl -w` checks the mode and refuses before opening.
/// k3shim takes the write (into the fake tree), so the entry stats writable
/// from the start, as procfs shows a writable sysctl: 0644.
#[test]
fn overlay_an_entry_k3shim_takes_writes_for_stats_0644_though_the_real_one_says_0444() {
    let e = env();
    let real = e.proc.join("net/core/somaxconn");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o444)).unwrap();
    let mut f = open(&e, Mode::Overlay);
    let path = p("/proc/sys/net/core/somaxconn");
    assert_eq!(
        f.decide(path, Op::Read),
        Outcome::Real,
        "the live value is read"
    );
    let st = fs::symlink_metadata(backing(&f.decide(path, Op::Stat))).unwrap();
    assert!(st.is_file());
    assert_eq!(st.permissions().mode() & 0o777, 0o644);
    assert_eq!(st.len(), 0, "procfs files have size 0");
    assert_eq!(
        f.decide(path, Op::Access { mode: libc::W_OK }),
        Outcome::Done
    );
    // Nothing was copied: the entry is still the real one.
    assert!(f
        .entries()
        .iter()
        .any(|i| i.path == "/proc/sys/net/core/somaxconn" && i.source == Source::Real));
    // A real entry k3shim refuses writes for keeps its mode.
    assert_eq!(
        f.decide(p("/proc/sys/kernel/yama_ro"), Op::Stat),
        Outcome::Real
    );
    // A writable real entry is stat'ed for real.
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Stat),
        Outcome::Real
    );
    // After a write the fake value file answers, 0644 too.
    let o = f.decide(path, WRITE);
    assert_eq!(f.write(token(&o), 1, "sysctl", 0, b"32768\n"), Ok(6));
    let st = fs::symlink_metadata(backing(&f.decide(path, Op::Stat))).unwrap();
    assert_eq!(st.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        "4096\n",
        "the real entry is untouched"
    );
}

#[test]
fn shadow_fakes_every_entry_seeded_from_real_values_then_the_profile() {
    let e = env();
    let mut f = open(&e, Mode::Shadow);
    let real = f.decide(p("/proc/sys/kernel/panic"), Op::Read);
    assert_eq!(fs::read_to_string(backing(&real)).unwrap(), "1\n");
    let prof = f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Read);
    assert_eq!(fs::read_to_string(backing(&prof)).unwrap(), "0\n");
    let only_real = f.decide(p("/proc/sys/kernel/hostname"), Op::Read);
    assert_eq!(fs::read_to_string(backing(&only_real)).unwrap(), "host\n");
    // Writes never reach the real tree, even with write_through.
    let mut o = opts(&e, Mode::Shadow);
    o.write_through = true;
    drop(f);
    let mut f = FakeFs::open(o).unwrap();
    let w = f.decide(p("/proc/sys/kernel/panic"), WRITE);
    f.write(token(&w), 1, "sh", 0, b"5\n").unwrap();
    assert_eq!(
        fs::read_to_string(e.proc.join("kernel/panic")).unwrap(),
        "1\n"
    );
    assert_eq!(f.get("kernel/panic").unwrap(), "5");
    assert_eq!(
        f.decide(p("/proc/sys/kernel/nosuch"), Op::Read),
        Outcome::Error(libc::ENOENT)
    );
}

#[test]
fn osrelease_comes_from_uname_when_the_real_entry_is_missing() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let got = fs::read_to_string(backing(
        &f.decide(p("/proc/sys/kernel/osrelease"), Op::Read),
    ))
    .unwrap();
    assert_eq!(got, format!("{}\n", uname_release().unwrap()));
    assert_eq!(mode_of(&e.state.join("values/kernel/osrelease")), 0o444);
}

#[test]
fn boot_id_is_a_uuid_stable_across_reopens() {
    let e = env();
    let a = open(&e, Mode::Overlay)
        .get("kernel/random/boot_id")
        .unwrap();
    let b = open(&e, Mode::Overlay)
        .get("kernel/random/boot_id")
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 36);
    assert_ne!(a, "00000000-0000-4000-8000-000000000000");
}

// ----- write semantics -----

#[test]
fn write_outcome_opens_the_backing_read_only_and_does_not_truncate_it() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/net/netfilter/nf_conntrack_max"), WRITE);
    match &o {
        Outcome::Fake {
            clear_flags,
            add_flags,
            ..
        } => {
            assert_eq!(clear_flags & libc::O_ACCMODE, libc::O_ACCMODE);
            assert_ne!(clear_flags & libc::O_TRUNC, 0);
            assert_eq!(add_flags & libc::O_TRUNC, 0);
        }
        _ => unreachable!(),
    }
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "262144\n");
}

#[test]
fn write_replaces_the_whole_value() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(
        p("/proc/sys/net/netfilter/nf_conntrack_max"),
        Op::Write { trunc: false },
    );
    assert_eq!(f.write(token(&o), 9, "k3s", 0, b"1"), Ok(1));
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1\n");
}

#[test]
fn write_of_invalid_value_is_einval_and_keeps_old() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE);
    for bad in [&b"abc\n"[..], b"3", b"1x", b"\n"] {
        assert_eq!(f.write(token(&o), 9, "sh", 0, bad), Err(libc::EINVAL));
    }
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "0\n");
    assert_eq!(f.write(token(&o), 9, "sh", 0, b""), Ok(0));
}

#[test]
fn write_at_a_nonzero_offset_is_ignored_but_reports_success() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/kernel/panic_on_oops"), WRITE);
    assert_eq!(f.write(token(&o), 9, "sh", 0, b"1"), Ok(1));
    assert_eq!(f.write(token(&o), 9, "sh", 1, b"\n"), Ok(1));
    assert_eq!(f.write(token(&o), 9, "sh", 2, b"junk"), Ok(4));
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1\n");
}

/// Linux (do_proc_dointvec) takes as many numbers as the entry holds and
/// leaves the rest unread: write(2) returns the bytes it took, and a libc
/// retry of the rest lands at a non-zero position, which is ignored.
#[test]
fn a_write_with_more_than_the_entry_holds_stores_the_first_and_returns_what_was_taken() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/kernel/panic"), WRITE);
    assert_eq!(f.write(token(&o), 9, "sh", 0, b"1 2"), Ok(2));
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1\n");
    assert_eq!(f.write(token(&o), 9, "sh", 2, b"2"), Ok(1));
    assert_eq!(f.write(token(&o), 9, "sh", 0, b"3\n4"), Ok(2));
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "3\n");
    assert_eq!(f.write(token(&o), 9, "sh", 0, b"0x10"), Ok(4));
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "16\n");
    assert_eq!(f.write(token(&o), 9, "sh", 0, b"+1"), Err(libc::EINVAL));
    let journal = f.drain_journal();
    let stored: Vec<&str> = journal
        .iter()
        .filter(|j| j.accepted)
        .map(|j| j.new.as_str())
        .collect();
    assert_eq!(
        stored,
        ["1", "3", "16"],
        "the ignored write is not journaled"
    );
}

#[test]
fn multi_integer_values_are_stored_tab_separated() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/net/ipv4/ping_group_range"), WRITE);
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1\t0\n");
    f.write(token(&o), 9, "runc", 0, b"0 4294967294").unwrap();
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "0\t4294967294\n");
    let o = f.decide(p("/proc/sys/net/ipv4/ip_local_port_range"), WRITE);
    assert_eq!(
        f.write(token(&o), 9, "sh", 0, b"1024 70000"),
        Err(libc::EINVAL)
    );
    f.write(token(&o), 9, "sh", 0, b"1024    65000\n").unwrap();
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "1024\t65000\n");
}

#[test]
fn unknown_token_is_ebadf() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    assert_eq!(f.write(999, 1, "x", 0, b"1"), Err(libc::EBADF));
    assert_eq!(f.write(0, 1, "x", 0, b"1"), Err(libc::EBADF));
}

#[test]
fn real_only_entries_get_a_rule_inferred_from_their_value() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/net/ipv4/ip_forward"), WRITE);
    assert_eq!(f.write(token(&o), 1, "cni", 0, b"yes"), Err(libc::EINVAL));
    assert_eq!(f.write(token(&o), 1, "cni", 0, b"1"), Ok(1));
    let o = f.decide(p("/proc/sys/kernel/hostname"), WRITE);
    assert_eq!(f.write(token(&o), 1, "sh", 0, b"node-a\n"), Ok(7));
    assert_eq!(f.get("kernel/hostname").unwrap(), "node-a");
}

// ----- what cannot be done under /proc/sys -----

/// Linux's procfs refuses a missing name in its lookup, also one about to
/// be created: ENOENT whether or not the directory exists (this gVisor says
/// EPERM where it does).
#[test]
fn creating_under_proc_sys_is_enoent_as_on_linux_and_leaves_no_trace() {
    let e = env();
    let mut o = opts(&e, Mode::Overlay);
    o.profiles = vec!["none".into()];
    let mut f = FakeFs::open(o).unwrap();
    let before = tree(&e.state);
    for path in ["/proc/sys/kernel/zzz", "/proc/sys/net/bridge/zzz"] {
        for op in [
            CREATE,
            Op::CreateFile { excl: true },
            Op::Mkdir,
            WRITE,
            Op::Read,
        ] {
            assert_eq!(
                f.decide(p(path), op),
                Outcome::Error(libc::ENOENT),
                "{path} {op:?}"
            );
        }
    }
    assert_eq!(
        f.decide(p("/proc/sys/kernel"), Op::Mkdir),
        Outcome::Error(libc::EEXIST)
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::CreateFile { excl: true }),
        Outcome::Error(libc::EEXIST)
    );
    assert_eq!(tree(&e.state), before);
}

const CREATE: Op = Op::CreateFile { excl: false };

#[test]
fn o_creat_of_an_existing_entry_opens_it_for_writing() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), CREATE);
    assert_eq!(f.write(token(&o), 1, "go", 0, b"1"), Ok(1));
}

const UNLINK: Op = Op::Remove {
    rmdir: Some(false),
    slash: false,
};
const RMDIR: Op = Op::Remove {
    rmdir: Some(true),
    slash: false,
};

/// What Linux answers (measured natively on net/ entries in a private
/// network namespace): removing is EACCES (the directories are 0555 to
/// everyone) but `unlink("dir/")` is EISDIR and rmdir of /proc/sys is EPERM
/// for root; chmod and chown are EPERM; truncate and utime by root succeed
/// and change nothing; xattrs are EOPNOTSUPP; a rename or link is the
/// kernel's (EXDEV across filesystems) unless the directory is not real.
#[test]
fn changes_inside_the_tree_get_linuxs_errnos() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let err = |e| Outcome::Error(e);
    for path in [
        "/proc/sys/vm/panic_on_oom",
        "/proc/sys/kernel/panic",
        "/proc/sys/kernel",
    ] {
        for (op, want) in [
            (UNLINK, err(libc::EACCES)),
            (RMDIR, err(libc::EACCES)),
            (Op::Chmod, err(libc::EPERM)),
            (Op::Utime, Outcome::Done),
            (Op::Xattr { write: false }, err(libc::EOPNOTSUPP)),
        ] {
            assert_eq!(f.decide(p(path), op), want, "{path} {op:?}");
        }
    }
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Xattr { write: true }),
        err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel"), Op::Xattr { write: true }),
        err(libc::EACCES),
        "a directory is not writable"
    );
    assert_eq!(
        f.decide(
            p("/proc/sys/kernel"),
            Op::Remove {
                rmdir: Some(false),
                slash: true
            }
        ),
        err(libc::EISDIR)
    );
    assert_eq!(f.decide(p("/proc/sys"), RMDIR), err(libc::EPERM));
    assert_eq!(f.decide(p("/proc/sys"), UNLINK), err(libc::EISDIR));
    assert_eq!(
        f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Truncate),
        Outcome::Done
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel"), Op::Truncate),
        err(libc::EISDIR)
    );
    // The fake "real" tree has kernel/ and vm/ but no net/bridge/.
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Rename),
        Outcome::Real
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/zzz"), Op::Rename),
        Outcome::Real
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), Op::Link),
        Outcome::Real
    );
    assert_eq!(
        f.decide(
            p("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            Op::Rename
        ),
        err(libc::EXDEV)
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Link),
        err(libc::EXDEV),
        "an entry the real tree lacks"
    );
    for op in [UNLINK, RMDIR, Op::Link, Op::Chmod, Op::Utime] {
        assert_eq!(
            f.decide(p("/proc/sys/kernel/zzz"), op),
            err(libc::ENOENT),
            "{op:?}"
        );
    }
    assert_eq!(
        f.decide(p("/proc/sys/nosuchdir/zzz"), Op::Rename),
        err(libc::ENOENT)
    );
    assert_eq!(
        fs::read_to_string(e.state.join("values/vm/panic_on_oom")).unwrap(),
        "0\n"
    );
}

fn nobody() -> Caller {
    Caller {
        euid: 65534,
        egid: 65534,
        groups: vec![65534],
        cap_eff: 0,
    }
}

/// proc_sys_permission: the caller's effective uid and groups against the
/// entry's mode, no capability override; CAP_NET_ADMIN holders get the
/// owner's bits on net.* entries.
#[test]
fn permission_checks_follow_the_callers_credentials_as_procfs_does() {
    let e = env();
    let mut f = open(&e, Mode::Shadow);
    let as_ = |f: &mut FakeFs, c: Caller, path: &str, op: Op| {
        f.decide_as(p(path), op, &mut || Some(c.clone()))
    };
    let err = |e| Outcome::Error(e);
    let panic_on_oom = "/proc/sys/vm/panic_on_oom";
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, WRITE),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, Op::ReadWrite),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, CREATE),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, Op::Truncate),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, Op::Utime),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(&mut f, nobody(), panic_on_oom, Op::Xattr { write: true }),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(
            &mut f,
            nobody(),
            panic_on_oom,
            Op::Access { mode: libc::W_OK }
        ),
        err(libc::EACCES)
    );
    assert_eq!(
        as_(
            &mut f,
            nobody(),
            panic_on_oom,
            Op::Access { mode: libc::R_OK }
        ),
        Outcome::Done
    );
    backing(&as_(&mut f, nobody(), panic_on_oom, Op::Read));
    assert_eq!(as_(&mut f, nobody(), "/proc/sys", RMDIR), err(libc::EACCES));
    // Root's group gets the group's bits (r--): no write either.
    let mut wheel = nobody();
    wheel.groups.push(0);
    assert_eq!(as_(&mut f, wheel, panic_on_oom, WRITE), err(libc::EACCES));
    // Root without capabilities is still the owner: procfs looks at the uid.
    let mut bare_root = Caller::root();
    bare_root.cap_eff = 0;
    token(&as_(&mut f, bare_root.clone(), panic_on_oom, WRITE));
    // No capability makes a read-only entry writable, even to root.
    assert_eq!(
        as_(&mut f, Caller::root(), "/proc/sys/kernel/yama_ro", WRITE),
        err(libc::EACCES)
    );
    // net.*: CAP_NET_ADMIN gives the owner's bits.
    let mut netadmin = nobody();
    netadmin.cap_eff = 1 << 12;
    token(&as_(
        &mut f,
        netadmin.clone(),
        "/proc/sys/net/core/somaxconn",
        WRITE,
    ));
    assert_eq!(
        as_(&mut f, netadmin, panic_on_oom, WRITE),
        err(libc::EACCES)
    );
    // A 0600 entry copied from the kernel: only root reads it, and it stats 0600.
    fs::write(e.proc.join("kernel/cad_pid"), "1\n").unwrap();
    fs::set_permissions(
        e.proc.join("kernel/cad_pid"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(
        as_(&mut f, nobody(), "/proc/sys/kernel/cad_pid", Op::Read),
        err(libc::EACCES)
    );
    backing(&as_(
        &mut f,
        bare_root,
        "/proc/sys/kernel/cad_pid",
        Op::Read,
    ));
    let st = backing(&f.decide(p("/proc/sys/kernel/cad_pid"), Op::Stat));
    assert_eq!(mode_of(&st), 0o600);
    assert_eq!(fs::metadata(&st).unwrap().len(), 0);
}

/// The caller is looked at only when the answer depends on it.
#[test]
fn credentials_are_read_only_when_the_others_bits_do_not_decide() {
    let e = env();
    let mut f = open(&e, Mode::Shadow);
    let asked = std::cell::Cell::new(0);
    let mut count = || {
        asked.set(asked.get() + 1);
        Some(Caller::root())
    };
    f.decide_as(p("/proc/sys/vm/panic_on_oom"), Op::Read, &mut count);
    f.decide_as(p("/proc/sys/vm/panic_on_oom"), Op::Stat, &mut count);
    f.decide_as(p("/proc/sys/vm"), Op::OpenDir, &mut count);
    assert_eq!(asked.get(), 0);
    f.decide_as(p("/proc/sys/vm/panic_on_oom"), WRITE, &mut count);
    assert_eq!(asked.get(), 1);
}

#[test]
fn o_direct_is_einval_after_the_permission_check() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let d = |read, write| Op::Direct { read, write };
    assert_eq!(
        f.decide(p("/proc/sys/vm/panic_on_oom"), d(true, false)),
        Outcome::Error(libc::EINVAL)
    );
    assert_eq!(
        f.decide(p("/proc/sys/kernel/panic"), d(true, true)),
        Outcome::Error(libc::EINVAL)
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm"), d(true, false)),
        Outcome::Error(libc::EINVAL)
    );
    assert_eq!(
        f.decide_as(
            p("/proc/sys/vm/panic_on_oom"),
            d(false, true),
            &mut || Some(nobody())
        ),
        Outcome::Error(libc::EACCES)
    );
}

/// stat by name reports what procfs does for a file: size 0, the entry's
/// mode (fstat of an open fd still shows the value file).
#[test]
fn a_fake_entry_stats_with_size_zero() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let st = backing(&f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Stat));
    let m = fs::metadata(&st).unwrap();
    assert_eq!((m.len(), m.permissions().mode() & 0o777), (0, 0o644));
    let st = backing(&f.decide(p("/proc/sys/kernel/cap_last_cap"), Op::Stat));
    assert_eq!(mode_of(&st), 0o444);
    let mut f = open(&e, Mode::Shadow);
    let st = backing(&f.decide(p("/proc/sys/kernel/panic"), Op::Stat));
    assert_eq!(fs::metadata(&st).unwrap().len(), 0);
}

#[test]
fn files_and_directories_answer_like_procfs() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let file = "/proc/sys/vm/panic_on_oom";
    assert_eq!(
        f.decide(p(file), Op::OpenDir),
        Outcome::Error(libc::ENOTDIR)
    );
    assert_eq!(
        f.decide(p(file), Op::Readlink),
        Outcome::Error(libc::EINVAL)
    );
    assert_eq!(f.decide(p(file), Op::Exec), Outcome::Error(libc::EACCES));
    assert_eq!(
        f.decide(p(file), Op::Access { mode: libc::X_OK }),
        Outcome::Error(libc::EACCES)
    );
    assert_eq!(
        f.decide(
            p(file),
            Op::Access {
                mode: libc::R_OK | libc::W_OK,
            },
        ),
        Outcome::Done
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm/panic_on_oom/x"), Op::Read),
        Outcome::Error(libc::ENOTDIR)
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm"), WRITE),
        Outcome::Error(libc::EISDIR)
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm"), Op::Access { mode: libc::W_OK }),
        Outcome::Error(libc::EACCES)
    );
    assert_eq!(
        f.decide(p("/proc/sys/nosuchdir/x"), Op::Read),
        Outcome::Error(libc::ENOENT)
    );
    assert_eq!(
        f.decide(p("/proc/sys/vm/../etc/passwd"), Op::Read),
        Outcome::Error(libc::ENOENT)
    );
}

// ----- directories -----

#[test]
fn directory_views_merge_real_and_fake_entries_with_procfs_modes() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let v = backing(&f.decide(p("/proc/sys/vm"), Op::OpenDir));
    assert!(v.starts_with(f.state_dir()));
    assert_eq!(
        listing(&v),
        vec![
            "max_map_count",
            "overcommit_memory",
            "panic_on_oom",
            "swappiness"
        ]
    );
    assert_eq!(mode_of(&v), 0o555);
    assert_eq!(mode_of(&v.join("panic_on_oom")), 0o644);
    let k = backing(&f.decide(p("/proc/sys/kernel"), Op::OpenDir));
    let names = listing(&k);
    for n in [
        "hostname",
        "panic",
        "osrelease",
        "keys",
        "random",
        "yama_ro",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    assert_eq!(mode_of(&k.join("osrelease")), 0o444);
    assert_eq!(mode_of(&k.join("keys")), 0o555);
    let root = backing(&f.decide(p("/proc/sys"), Op::OpenDir));
    assert_eq!(listing(&root), vec!["fs", "kernel", "net", "vm"]);
    // A directory missing from the real tree is a view for stat too.
    let br = backing(&f.decide(p("/proc/sys/net/bridge"), Op::Stat));
    assert_eq!(
        listing(&br),
        vec!["bridge-nf-call-ip6tables", "bridge-nf-call-iptables"]
    );
    // A real directory is stat'ed for real in overlay.
    assert_eq!(f.decide(p("/proc/sys/kernel"), Op::Stat), Outcome::Real);
    // Opening without O_DIRECTORY works too.
    assert_eq!(backing(&f.decide(p("/proc/sys/vm"), Op::Read)), v);
}

#[test]
fn views_pick_up_entries_that_became_fake_and_shadow_lists_real_ones_too() {
    let e = env();
    let mut o = opts(&e, Mode::Shadow);
    o.profiles = vec!["none".into()];
    let mut f = FakeFs::open(o).unwrap();
    let v = backing(&f.decide(p("/proc/sys/vm"), Op::OpenDir));
    assert_eq!(listing(&v), vec!["overcommit_memory"]);
    assert!(matches!(
        f.decide(p("/proc/sys/kernel"), Op::Stat),
        Outcome::Fake { .. }
    ));
    f.set("kernel/hostname", "h2").unwrap();
    let k = backing(&f.decide(p("/proc/sys/kernel"), Op::OpenDir));
    assert!(listing(&k).contains(&"hostname".to_string()));
}

// ----- stand-ins and binds -----

#[test]
fn dev_kmsg_is_a_readable_empty_regular_file() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/dev/kmsg"), Op::Read);
    let b = backing(&o);
    assert!(fs::symlink_metadata(&b).unwrap().is_file());
    assert_eq!(fs::read(&b).unwrap(), b"");
    assert!(matches!(
        f.decide(p("/dev/kmsg"), WRITE),
        Outcome::Fake {
            write_token: None,
            ..
        }
    ));
    assert_eq!(f.untranslate(&b), Some(PathBuf::from("/dev/kmsg")));
}

#[test]
fn binds_redirect_everything_under_their_destination_longest_first() {
    let e = env();
    let mut o = opts(&e, Mode::Overlay);
    o.binds = vec![
        parse_bind("/srv/cg:/sys/fs/cgroup").unwrap(),
        parse_bind("/srv/mem:/sys/fs/cgroup/memory").unwrap(),
    ];
    let mut f = FakeFs::open(o).unwrap();
    assert_eq!(
        backing(&f.decide(p("/sys/fs/cgroup/pids/pids.max"), Op::Read)),
        PathBuf::from("/srv/cg/pids/pids.max")
    );
    assert_eq!(
        backing(&f.decide(p("/sys/fs/cgroup/memory/memory.stat"), WRITE)),
        PathBuf::from("/srv/mem/memory.stat")
    );
    assert_eq!(
        backing(&f.decide(p("/sys/fs/cgroup"), Op::OpenDir)),
        PathBuf::from("/srv/cg")
    );
    assert_eq!(
        f.untranslate(p("/srv/mem/memory.stat")),
        Some(PathBuf::from("/sys/fs/cgroup/memory/memory.stat"))
    );
    assert_eq!(
        f.untranslate(p("/srv/cg")),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn parse_bind_accepts_proot_syntax() {
    assert_eq!(
        parse_bind("/a/b:/c").unwrap(),
        (PathBuf::from("/a/b"), PathBuf::from("/c"))
    );
    assert_eq!(
        parse_bind("/dev").unwrap(),
        (PathBuf::from("/dev"), PathBuf::from("/dev"))
    );
    assert_eq!(
        parse_bind("/a//b/./:/c/d/").unwrap(),
        (PathBuf::from("/a/b"), PathBuf::from("/c/d"))
    );
    let (src, _) = parse_bind("rel/x:/y").unwrap();
    assert!(src.is_absolute());
    let err = parse_bind("/a:rel").unwrap_err();
    assert_eq!(err.to_string(), "bind \"/a:rel\": DST must be an absolute guest path (expected SRC:DST with absolute paths, as proot -b)");
    assert!(parse_bind(":/x").is_err());
}

#[test]
fn untranslate_round_trips_backing_paths() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    for guest in [
        "/proc/sys/vm/panic_on_oom",
        "/proc/sys/vm",
        "/proc/sys",
        "/proc/sys/net/ipv4/conf/flannel.1/route_localnet",
    ] {
        let op = if guest.ends_with("oom") || guest.ends_with("localnet") {
            Op::Read
        } else {
            Op::OpenDir
        };
        let b = backing(&f.decide(p(guest), op));
        assert_eq!(
            f.untranslate(&b),
            Some(PathBuf::from(guest)),
            "{}",
            b.display()
        );
    }
    let w = backing(&f.decide(p("/proc/sys/kernel/panic"), WRITE));
    assert_eq!(
        f.untranslate(&w),
        Some(PathBuf::from("/proc/sys/kernel/panic"))
    );
    assert_eq!(f.untranslate(&f.state_dir().join("journal.jsonl")), None);
    assert_eq!(f.untranslate(p("/etc/hosts")), None);
}

// ----- safety -----

#[test]
fn a_symlink_planted_in_the_state_dir_is_never_followed() {
    let e = env();
    let outside = e.base.join("outside");
    fs::write(&outside, "precious\n").unwrap();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE);
    let b = backing(&o);
    fs::remove_file(&b).unwrap();
    std::os::unix::fs::symlink(&outside, &b).unwrap();
    assert_eq!(f.write(token(&o), 1, "x", 0, b"1"), Ok(1));
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious\n");
    assert!(fs::symlink_metadata(&b).unwrap().is_file());
    // A symlinked directory inside the state dir is refused too.
    fs::remove_dir_all(e.state.join("values/net")).unwrap();
    std::os::unix::fs::symlink(&e.base, e.state.join("values/net")).unwrap();
    let o = f.decide(p("/proc/sys/net/ipv4/ip_forward"), WRITE);
    assert_eq!(o, Outcome::Error(libc::EIO));
}

/// The opening check reads only what changed since the last clean check
/// (checked.json keeps each directory's and value's stamp), yet an in-place
/// edit that keeps the size, a swapped directory and a new symlink are found.
/// Stamps younger than two seconds are not trusted (a change within the
/// clock's granularity can keep ctime), so the test lets the files age once.
#[test]
fn the_opening_check_skips_what_is_unchanged_and_still_finds_every_change() {
    let e = env();
    drop(open(&e, Mode::Overlay));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let f = open(&e, Mode::Overlay);
    assert!(
        f.opened_reads > 50,
        "the first clean check reads everything: {}",
        f.opened_reads
    );
    drop(f);
    let f = open(&e, Mode::Overlay);
    assert_eq!(f.opened_reads, 0, "nothing changed: nothing read");
    assert!(f.damaged().is_empty());
    drop(f);
    // Three changes in three subtrees (values/ itself unchanged): the same
    // size in place; a directory swapped for a symlink to a copy of itself; a
    // symlink where a value file was.
    fs::write(e.state.join("values/vm/panic_on_oom"), "7\n").unwrap();
    let bridge = e.state.join("values/net/bridge");
    fs::rename(&bridge, e.base.join("bridge-copy")).unwrap();
    std::os::unix::fs::symlink(e.base.join("bridge-copy"), &bridge).unwrap();
    let keys = e.state.join("values/kernel/keys/root_maxkeys");
    fs::remove_file(&keys).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &keys).unwrap();
    let f = open(&e, Mode::Overlay);
    assert_eq!(f.opened_reads, 0, "only the changed names are looked at");
    let mut paths: Vec<&str> = f.damaged().iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "values/kernel/keys/root_maxkeys",
            "values/net/bridge",
            "values/vm/panic_on_oom"
        ]
    );
}

#[test]
fn the_real_tree_is_never_written() {
    let e = env();
    let before = tree(&e.proc);
    let mut f = open(&e, Mode::Overlay);
    for rel in [
        "kernel/panic",
        "kernel/hostname",
        "vm/overcommit_memory",
        "net/ipv4/ip_forward",
    ] {
        let o = f.decide(&PathBuf::from(format!("/proc/sys/{rel}")), WRITE);
        f.write(token(&o), 1, "x", 0, b"1").unwrap();
        f.set(rel, "0").unwrap();
    }
    f.reset().unwrap();
    assert_eq!(tree(&e.proc), before);
}

// ----- journal -----

#[test]
fn the_journal_records_accepted_and_rejected_writes_and_persists_them() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE);
    f.write(token(&o), 42, "kubelet", 0, b"1").unwrap();
    f.write(token(&o), 43, "sh", 0, b"abc\n").unwrap_err();
    let j = f.drain_journal();
    assert_eq!(j.len(), 2);
    assert_eq!(
        (j[0].pid, j[0].comm.as_str(), j[0].path.as_str()),
        (42, "kubelet", "/proc/sys/vm/panic_on_oom")
    );
    assert_eq!(
        (
            j[0].old.as_deref(),
            j[0].new.as_str(),
            j[0].accepted,
            j[0].errno.as_deref()
        ),
        (Some("0"), "1", true, None)
    );
    assert_eq!(
        (
            j[1].old.as_deref(),
            j[1].new.as_str(),
            j[1].accepted,
            j[1].errno.as_deref()
        ),
        (Some("1"), "abc", false, Some("EINVAL"))
    );
    assert!(j[0].t_ms > 1_600_000_000_000);
    assert!(f.drain_journal().is_empty());
    let lines: Vec<JournalEntry> = fs::read_to_string(e.state.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, j);
}

#[test]
fn concurrent_writers_never_tear_a_value() {
    let e = env();
    drop(open(&e, Mode::Overlay));
    const THREADS: usize = 8;
    const WRITES: usize = 60;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let value_file = fs::canonicalize(&e.state)
        .unwrap()
        .join("values/net/netfilter/nf_conntrack_max");
    let reader = {
        let stop = stop.clone();
        let vf = value_file.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = fs::read_to_string(&vf).unwrap();
                let n = s
                    .strip_suffix('\n')
                    .unwrap_or_else(|| panic!("torn value {s:?}"));
                let v: u64 = n.parse().unwrap_or_else(|_| panic!("torn value {s:?}"));
                assert!(
                    v == 262144 || (100_000..100_000 + (THREADS * 1000) as u64).contains(&v),
                    "{v}"
                );
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let o = opts(&e, Mode::Overlay);
            std::thread::spawn(move || {
                let mut f = FakeFs::open(o).unwrap();
                for i in 0..WRITES {
                    let out = f.decide(p("/proc/sys/net/netfilter/nf_conntrack_max"), WRITE);
                    // Long values with padding so a torn write would show.
                    let v = format!("  {}\n", 100_000 + t * 1000 + i);
                    assert_eq!(
                        f.write(token(&out), t as i32, "w", 0, v.as_bytes()),
                        Ok(v.len())
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let journal = fs::read_to_string(e.state.join("journal.jsonl")).unwrap();
    let entries: Vec<JournalEntry> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), THREADS * WRITES);
    let f = open(&e, Mode::Overlay);
    assert_eq!(f.diff().len(), 1);
    assert!(
        listing(&e.state.join("tmp")).is_empty(),
        "no temp files left"
    );
}

// ----- commands -----

#[test]
fn set_get_diff_and_reset_work_like_the_commands_promise() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    f.set("vm/panic_on_oom", "1").unwrap();
    f.set("/proc/sys/kernel/panic", "10").unwrap();
    f.set("kernel/panic_on_oops", "0").unwrap(); // same as the profile: no diff line
    let err = f.set("vm/panic_on_oom", "nine").unwrap_err();
    assert_eq!(err.to_string(), "/proc/sys/vm/panic_on_oom: value \"nine\" rejected with EINVAL (rule: range 0 2): give a value the rule accepts");
    assert!(matches!(
        f.set("kernel/osrelease", "5.0"),
        Err(Error::ReadOnly(_))
    ));
    assert!(matches!(
        f.set("kernel/nosuch", "1"),
        Err(Error::NoEntry(_))
    ));
    assert!(matches!(f.get("/etc/passwd"), Err(Error::NotAnEntry(_))));
    assert_eq!(f.get("vm/panic_on_oom").unwrap(), "1");
    let j = f.drain_journal();
    assert!(j
        .iter()
        .all(|x| x.comm == "k3shim" && x.pid == std::process::id() as i32));
    assert_eq!(
        f.diff(),
        vec![
            DiffLine {
                path: "/proc/sys/kernel/panic".into(),
                baseline: "0".into(),
                current: "10".into()
            },
            DiffLine {
                path: "/proc/sys/vm/panic_on_oom".into(),
                baseline: "0".into(),
                current: "1".into()
            },
        ]
    );
    let info = f.entries();
    let find = |path: &str| info.iter().find(|i| i.path == path).unwrap().clone();
    assert_eq!(find("/proc/sys/vm/panic_on_oom").source, Source::Written);
    assert_eq!(find("/proc/sys/vm/overcommit_memory").source, Source::Real);
    assert_eq!(
        find("/proc/sys/net/bridge/bridge-nf-call-iptables").source,
        Source::Profile
    );
    assert_eq!(
        find("/proc/sys/net/ipv4/ping_group_range").rule,
        "ints 2 0 4294967294"
    );
    assert!(find("/proc/sys/kernel/cap_last_cap").readonly);
    assert_eq!(find("/dev/kmsg").value, "");
    f.reset().unwrap();
    assert!(f.diff().is_empty());
    assert_eq!(f.get("vm/panic_on_oom").unwrap(), "0");
    assert_eq!(
        f.get("kernel/panic").unwrap(),
        "1",
        "real again after reset"
    );
    assert_eq!(
        fs::read_to_string(e.state.join("values/vm/panic_on_oom")).unwrap(),
        "0\n"
    );
    assert!(
        fs::read_to_string(e.state.join("journal.jsonl"))
            .unwrap()
            .lines()
            .count()
            >= 3,
        "reset keeps the journal"
    );
}

#[test]
fn a_write_token_survives_a_reset() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), WRITE);
    f.reset().unwrap();
    assert_eq!(f.write(token(&o), 1, "x", 0, b"2"), Ok(1));
    assert_eq!(f.get("vm/panic_on_oom").unwrap(), "2");
}

#[test]
fn a_change_made_by_another_instance_is_seen_on_the_next_decision() {
    // Overlay: kernel/panic is real and readable, so it is served real...
    let e = env();
    let mut a = open(&e, Mode::Overlay);
    let mut b = open(&e, Mode::Overlay);
    assert_eq!(
        a.decide(p("/proc/sys/kernel/panic"), Op::Read),
        Outcome::Real
    );
    // ...until another instance (`k3shim fakefs set`, a second traced run) writes it:
    // the shared generation counter tells `a` to look at the index again.
    b.set("kernel/panic", "7").unwrap();
    let o = a.decide(p("/proc/sys/kernel/panic"), Op::Read);
    assert_eq!(fs::read_to_string(backing(&o)).unwrap(), "7\n");
}

#[test]
fn sysctl_names_become_paths_as_procps_reads_them() {
    assert_eq!(sysctl_name_to_path("vm.panic_on_oom"), "vm/panic_on_oom");
    assert_eq!(
        sysctl_name_to_path("net.ipv4.conf.eth0/1.forwarding"),
        "net/ipv4/conf/eth0.1/forwarding"
    );
    assert_eq!(sysctl_name_to_path("vm/panic_on_oom"), "vm/panic_on_oom");
    // A leading dot starts no dotted name (a proptest found ".-" turned into "/-").
    assert_eq!(sysctl_name_to_path(".-"), ".-");
}

#[test]
fn a_view_holds_what_reads_would_give_and_follows_writes() {
    let e = env();
    let mut f = open(&e, Mode::Overlay);
    let dir = e.base.join("view");
    let v = f.write_view(&dir).unwrap();
    // Overlay: a live read-only entry is the kernel's; a writable live one is
    // a copy; a profile entry missing here is fake.
    assert!(v.real.contains(&"kernel/yama_ro".to_string()), "{v:?}");
    assert_eq!(fs::read(dir.join("kernel/panic")).unwrap(), b"1\n");
    assert_eq!(fs::read(dir.join("vm/panic_on_oom")).unwrap(), b"0\n");
    assert_eq!(mode_of(&dir.join("vm")), 0o555);
    let o = f.decide(p("/proc/sys/vm/panic_on_oom"), Op::Write { trunc: true });
    f.write(token(&o), 1, "t", 0, b"1\n").unwrap();
    f.update_view(&dir, "vm/panic_on_oom").unwrap();
    assert_eq!(fs::read(dir.join("vm/panic_on_oom")).unwrap(), b"1\n");
    assert_eq!(mode_of(&dir.join("vm/panic_on_oom")), 0o644);
}
