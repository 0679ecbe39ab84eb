//! Property tests: fakefs's parsers never panic on hostile input, and a state
//! directory opened from any profile never lets a profile key escape it.
//!
//! - `parse_bind` on arbitrary strings.
//! - `Rule::parse` and `Rule` application on arbitrary text.
//! - `FakeFs::open` with a random profile file (TOML built from a grammar of
//!   keys, values, rules and junk, or raw text; TSV likewise), in a fresh temp
//!   dir with an empty fake "real" /proc/sys: Ok or Err, never a panic; when it
//!   opens, every entry reads back, random writes are accepted or refused
//!   (EINVAL/EACCES) with the old value kept, and nothing is created outside
//!   the state directory.
//!
//! Case counts: PROPTEST_CASES (default 256); x20 when K3SHIM_SOAK_SECS > 0.

use fakefs::{FakeFs, Mode, Op, Options, Outcome, Profile, Rule};
use proptest::prelude::*;
use std::path::Path;

fn config(default: u32) -> ProptestConfig {
    let base = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let soak = std::env::var("K3SHIM_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let cases = if soak > 0 {
        base.saturating_mul(20)
    } else {
        base
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Keys as a hostile profile would write them.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("kernel/panic".to_string()),
        Just("vm/panic_on_oom".to_string()),
        Just("net/ipv4/conf/<if>/x".to_string()),
        Just("../../escape".to_string()),
        Just("a/../../b".to_string()),
        Just("/etc/passwd".to_string()),
        Just("a//b".to_string()),
        Just("./a".to_string()),
        Just("".to_string()),
        Just("values".to_string()),
        Just("kernel".to_string()),
        Just("kernel/panic/sub".to_string()),
        "[a-z<>./_-]{1,12}(/[a-z<>._-]{1,8}){0,3}",
        any::<String>(),
    ]
}

fn rule_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("integer".to_string()),
        Just("text".to_string()),
        Just("range 0 1".to_string()),
        Just("range 5 1".to_string()),
        Just("range -9223372036854775808 9223372036854775807".to_string()),
        Just("ints 2 1 65535".to_string()),
        Just("ints 0".to_string()),
        Just("ints 99999999999999999999".to_string()),
        Just("enum a b c".to_string()),
        Just("enum".to_string()),
        "(integer|range|ints|enum|text|int)( [-0-9a-z]{1,21}){0,4}",
        any::<String>(),
    ]
}

fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1 0".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("".to_string()),
        Just("a\nb".to_string()),
        "[-0-9 \t]{0,24}",
        any::<String>(),
    ]
}

fn toml_str(s: &str) -> String {
    // A TOML basic string (serde's escaping), so that the grammar reaches the
    // profile checks and not only the TOML parser.
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML profile: mostly well-formed, with hostile keys, values and rules,
/// sometimes junk appended.
fn toml_profile() -> impl Strategy<Value = String> {
    let entry = (
        key(),
        value_text(),
        prop::option::of(rule_text()),
        any::<bool>(),
        prop::option::of(prop_oneof![
            Just("uname-release"),
            Just("random-uuid"),
            Just("nope")
        ]),
    );
    let file = (
        prop_oneof![
            Just("/dev/kmsg".to_string()),
            Just("/proc/sys/x".to_string()),
            Just("/../etc/shadow".to_string()),
            Just("relative".to_string()),
            "/[a-z./]{1,16}"
        ],
        any::<String>(),
    );
    (
        prop::option::of(prop::collection::vec("[a-z0-9.<>/]{0,8}", 0..4)),
        prop::collection::vec(entry, 0..6),
        prop::collection::vec(file, 0..3),
        prop::option::of(any::<String>()),
    )
        .prop_map(|(ifaces, entries, files, junk)| {
            let mut t = String::new();
            if let Some(i) = ifaces {
                t.push_str("[profile]\nname = \"fuzz\"\ninterfaces = [");
                t.push_str(&i.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "));
                t.push_str("]\n");
            }
            t.push_str("[entries]\n");
            for (k, v, r, ro, d) in entries {
                t.push_str(&format!("{} = {{ value = {}", toml_str(&k), toml_str(&v)));
                if let Some(r) = r {
                    t.push_str(&format!(", rule = {}", toml_str(&r)));
                }
                if ro {
                    t.push_str(", readonly = true");
                }
                if let Some(d) = d {
                    t.push_str(&format!(", dynamic = {}", toml_str(d)));
                }
                t.push_str(" }\n");
            }
            t.push_str("[files]\n");
            for (p, v) in files {
                t.push_str(&format!(
                    "{} = {{ value = {} }}\n",
                    toml_str(&p),
                    toml_str(&v)
                ));
            }
            if let Some(j) = junk {
                t.push_str(&j);
            }
            t
        })
}

fn tsv_profile() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        (
            key(),
            value_text(),
            rule_text(),
            prop_oneof![
                Just(""),
                Just("\tro"),
                Just("\trw"),
                Just("\t0444"),
                Just("\tx"),
                Just("\t\t\t")
            ]
        )
            .prop_map(|(k, v, r, a)| format!("{k}\t{}\t{r}{a}", v.replace('\n', " "))),
        Just("# comment".to_string()),
        Just("/dev/kmsg\thello".to_string()),
        Just("/proc/sys/kernel/panic\t1".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(line, 0..8).prop_map(|v| v.join("\n"))
}

/// Every path under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Opens a state directory from `text` saved as `profile.EXT`, then reads and
/// writes every entry. Checks confinement: only `state/...` appears beside the
/// profile and the fake proc root.
fn exercise(ext: &str, text: &str, writes: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let td = tempfile::tempdir().unwrap();
    let prof = td.path().join(format!("profile.{ext}"));
    std::fs::write(&prof, text).unwrap();
    let proc_root = td.path().join("proc-sys");
    std::fs::create_dir(&proc_root).unwrap();
    let mut o = Options::new(td.path().join("state"));
    o.profiles = vec![prof.to_string_lossy().into_owned()];
    o.mode = Mode::Shadow;
    o.proc_root = proc_root.clone();
    let opened = FakeFs::open(o);
    if let Ok(mut fs) = opened {
        let entries = fs.entries();
        for (i, e) in entries.iter().enumerate() {
            if !e.path.starts_with("/proc/sys/") {
                continue;
            }
            // By path: a relative name would be read as a sysctl name (a
            // single component "x." is the name of /proc/sys/x).
            let before = fs.get(&e.path);
            prop_assert!(before.is_ok(), "{}: {:?}", e.path, before);
            let before = before.unwrap();
            if let Outcome::Fake {
                write_token: Some(tok),
                ..
            } = fs.decide(Path::new(&e.path), Op::Write { trunc: true })
            {
                let data = &writes[i % writes.len()];
                match fs.write(tok, 1, "fuzz", 0, data) {
                    // The kernel's handlers may take less than was written
                    // ("1 2" to one integer takes 2 bytes), never more.
                    Ok(n) => {
                        prop_assert!(n <= data.len(), "{}: took {} of {}", e.path, n, data.len())
                    }
                    Err(errno) => {
                        prop_assert!(
                            [libc::EINVAL, libc::EACCES].contains(&errno),
                            "{}: errno {}",
                            e.path,
                            errno
                        );
                        prop_assert_eq!(
                            fs.get(&e.path).unwrap(),
                            before,
                            "a refused write keeps the old value"
                        );
                    }
                }
            }
        }
    }
    let mut outside: Vec<String> = listing(td.path())
        .into_iter()
        .filter(|p| !p.starts_with("state") && p != "proc-sys")
        .collect();
    outside.retain(|p| !p.starts_with("profile."));
    prop_assert!(
        outside.is_empty(),
        "created outside the state dir: {outside:?}"
    );
    prop_assert!(
        listing(&proc_root).is_empty(),
        "the fake real /proc/sys was written"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn parse_bind_never_panics(s in prop_oneof![any::<String>(), "[a-z/.:]{0,24}"]) {
        if let Ok((src, dst)) = fakefs::parse_bind(&s) {
            prop_assert!(src.is_absolute() && dst.is_absolute(), "{s:?} -> {src:?}:{dst:?}");
            for p in [&src, &dst] {
                prop_assert!(p.components().all(|c| !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)), "{p:?} not normalized");
            }
        }
    }

    #[test]
    fn rules_parse_and_apply_never_panic(r in rule_text(), v in value_text(), data in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(rule) = Rule::parse(&r) {
            let _ = rule.normalize(&v);
            let _ = rule.apply(&data, &v);
            // The rule prints back to something that parses to the same rule.
            let again = Rule::parse(&rule.to_string());
            prop_assert_eq!(again, Ok(rule.clone()), "{}", r);
        }
    }

    #[test]
    fn toml_profiles_never_panic_and_stay_inside_the_state_dir(text in toml_profile(), writes in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..4)) {
        let _ = Profile::parse_toml("fuzz.toml", &text);
        exercise("toml", &text, &writes)?;
    }

    #[test]
    fn tsv_profiles_never_panic_and_stay_inside_the_state_dir(text in tsv_profile(), writes in prop::collection::vec(prop_oneof![prop::collection::vec(any::<u8>(), 0..24), "[-0-9 ]{1,12}\n?".prop_map(|s| s.into_bytes())], 1..4)) {
        let _ = Profile::parse_tsv("fuzz.tsv", &text);
        exercise("tsv", &text, &writes)?;
    }
}
