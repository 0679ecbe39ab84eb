//! Profiles: data files naming the fake entries, their defaults and rules.
//!
//! Why data and not code: users layer their own (`--profile k3s --profile
//! my.toml`) without rebuilding, and the k3s profile can be checked against
//! ../shared/sysctl-k8s.tsv by a test.

use crate::rules::Rule;
use crate::Error;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The built-in k3s profile, embedded so the binary needs no data files.
pub const K3S_PROFILE: &str = include_str!("../profiles/k3s.toml");

/// Interface names `<if>` expands to when a profile does not list its own.
pub const DEFAULT_INTERFACES: &[&str] = &["lo", "eth0", "cni0", "flannel.1", "all", "default"];

/// Where a default value comes from when it depends on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    /// uname(2)'s release: what programs already see through uname.
    UnameRelease,
    /// A random UUID, generated once per state directory (like boot_id).
    RandomUuid,
}

/// One /proc/sys entry of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEntry {
    /// Normalized default value, without trailing newline.
    pub value: String,
    pub rule: Rule,
    /// 0444 entry: writes get EACCES.
    pub readonly: bool,
    pub dynamic: Option<Dynamic>,
}

/// A merged stack of profile layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Keyed by path relative to /proc/sys.
    pub entries: BTreeMap<String, ProfileEntry>,
    /// Stand-in files outside /proc/sys: absolute guest path -> initial content.
    pub files: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlProfile {
    #[serde(default)]
    profile: Option<TomlMeta>,
    #[serde(default)]
    entries: BTreeMap<String, toml::Spanned<TomlEntry>>,
    #[serde(default)]
    files: BTreeMap<String, toml::Spanned<TomlFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlMeta {
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    interfaces: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TomlValue {
    S(String),
    I(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntry {
    value: TomlValue,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    dynamic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    value: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Profile {
    /// Loads and layers profiles, later wins. Each name is `k3s`, `none`, or
    /// a path to a .toml/.tsv file. An empty list means `["k3s"]`.
    pub fn load(names: &[String]) -> Result<Profile, Error> {
        let default = ["k3s".to_string()];
        let names = if names.is_empty() {
            &default[..]
        } else {
            names
        };
        let mut merged = Profile::default();
        for name in names {
            let layer = match name.as_str() {
                "k3s" => Profile::parse_toml("k3s", K3S_PROFILE)?,
                "none" => Profile::default(),
                path => {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::ProfileRead {
                        name: path.to_string(),
                        reason: e.to_string(),
                    })?;
                    if path.ends_with(".tsv") {
                        Profile::parse_tsv(path, &text)?
                    } else if path.ends_with(".toml") {
                        Profile::parse_toml(path, &text)?
                    } else {
                        return Err(Error::ProfileRead {
                            name: path.to_string(),
                            reason: "not k3s, none, or a file ending in .toml or .tsv".into(),
                        });
                    }
                }
            };
            merged.entries.extend(layer.entries);
            merged.files.extend(layer.files);
        }
        Ok(merged)
    }

    /// Parses the TOML profile format (see profiles/k3s.toml for its doc).
    pub fn parse_toml(name: &str, text: &str) -> Result<Profile, Error> {
        let err = |line: usize, msg: String| Error::Profile {
            file: name.to_string(),
            line,
            msg,
        };
        let raw: TomlProfile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            err(line, e.message().trim().replace('\n', " "))
        })?;
        let ifaces: Vec<String> = raw
            .profile
            .and_then(|m| m.interfaces)
            .unwrap_or_else(|| DEFAULT_INTERFACES.iter().map(|s| s.to_string()).collect());
        let mut out = Profile::default();
        let mut templated: Vec<(String, ProfileEntry)> = Vec::new();
        for (path, spanned) in &raw.entries {
            let line = line_of(text, spanned.span().start);
            let e = spanned.get_ref();
            let value = match &e.value {
                TomlValue::S(s) => s.clone(),
                TomlValue::I(i) => i.to_string(),
            };
            let dynamic = match e.dynamic.as_deref() {
                None => None,
                Some("uname-release") => Some(Dynamic::UnameRelease),
                Some("random-uuid") => Some(Dynamic::RandomUuid),
                Some(d) => {
                    return Err(err(
                        line,
                        format!("dynamic \"{d}\" unknown (expected uname-release, random-uuid)"),
                    ))
                }
            };
            let entry = make_entry(
                path,
                &value,
                e.rule.as_deref().unwrap_or("integer"),
                e.readonly,
                dynamic,
            )
            .map_err(|m| err(line, m))?;
            if path.contains("<if>") {
                for i in &ifaces {
                    templated.push((path.replace("<if>", i), entry.clone()));
                }
            } else {
                out.entries.insert(path.clone(), entry);
            }
        }
        for (p, e) in templated {
            out.entries.entry(p).or_insert(e);
        }
        for (path, spanned) in &raw.files {
            let line = line_of(text, spanned.span().start);
            check_file_path(path).map_err(|m| err(line, m))?;
            out.files
                .insert(path.clone(), spanned.get_ref().value.clone());
        }
        Ok(out)
    }

    /// Parses the TSV format: `path<TAB>value<TAB>rule[<TAB>ro|rw]`, `#`
    /// comments; an absolute path is a stand-in file (value = content).
    pub fn parse_tsv(name: &str, text: &str) -> Result<Profile, Error> {
        let mut out = Profile::default();
        let mut templated = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |msg: String| Error::Profile {
                file: name.to_string(),
                line,
                msg,
            };
            if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = raw.split('\t').collect();
            let path = cols[0].trim();
            if path.starts_with('/') {
                check_file_path(path).map_err(err)?;
                out.files.insert(
                    path.to_string(),
                    cols.get(1).copied().unwrap_or("").to_string(),
                );
                continue;
            }
            if cols.len() < 2 || cols.len() > 4 {
                return Err(err("expected path<TAB>value<TAB>rule[<TAB>ro|rw]".into()));
            }
            let rule = cols.get(2).copied().unwrap_or("integer");
            let readonly = match cols.get(3).map(|s| s.trim()) {
                None | Some("") | Some("rw") | Some("0644") => false,
                Some("ro") | Some("0444") => true,
                Some(o) => return Err(err(format!("access \"{o}\" unknown (expected ro or rw)"))),
            };
            let entry = make_entry(path, cols[1], rule, readonly, None).map_err(err)?;
            if path.contains("<if>") {
                for i in DEFAULT_INTERFACES {
                    templated.push((path.replace("<if>", i), entry.clone()));
                }
            } else {
                out.entries.insert(path.to_string(), entry);
            }
        }
        for (p, e) in templated {
            out.entries.entry(p).or_insert(e);
        }
        Ok(out)
    }

    /// Is `rel` a directory implied by the profile's entries?
    pub fn dirs(&self) -> std::collections::HashSet<String> {
        let mut dirs = std::collections::HashSet::new();
        for p in self.entries.keys() {
            let mut cur = p.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                dirs.insert(cur.to_string());
            }
        }
        dirs
    }
}

fn make_entry(
    path: &str,
    value: &str,
    rule: &str,
    readonly: bool,
    dynamic: Option<Dynamic>,
) -> Result<ProfileEntry, String> {
    check_rel_path(path)?;
    let rule = Rule::parse(rule)?;
    let value = rule.normalize(value).map_err(|_| {
        format!("{path}: default value {value:?} does not satisfy its rule \"{rule}\"")
    })?;
    Ok(ProfileEntry {
        value,
        rule,
        readonly,
        dynamic,
    })
}

/// A profile key must be a clean relative path (no `.`/`..`/empty parts):
/// it becomes a path inside the state directory.
pub(crate) fn check_rel_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "path {path:?} must be relative to /proc/sys, without empty, . or .. parts"
        ));
    }
    Ok(())
}

fn check_file_path(path: &str) -> Result<(), String> {
    let inner = path.strip_prefix('/').unwrap_or("");
    if check_rel_path(inner).is_err() || path == "/proc/sys" || path.starts_with("/proc/sys/") {
        return Err(format!(
            "file {path:?} must be an absolute clean path outside /proc/sys"
        ));
    }
    let _ = Path::new(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_profile_parses_and_expands_interfaces() {
        let p = Profile::parse_toml("k3s", K3S_PROFILE).unwrap();
        for i in DEFAULT_INTERFACES {
            assert!(
                p.entries
                    .contains_key(&format!("net/ipv4/conf/{i}/route_localnet")),
                "{i}"
            );
            assert!(
                p.entries
                    .contains_key(&format!("net/ipv6/conf/{i}/accept_ra")),
                "{i}"
            );
        }
        assert!(!p.entries.keys().any(|k| k.contains("<if>")));
        assert_eq!(p.entries["net/ipv4/ping_group_range"].value, "1\t0");
        assert!(p.entries["kernel/osrelease"].readonly);
        assert!(p.entries["kernel/random/boot_id"].readonly);
        assert!(p.entries["kernel/cap_last_cap"].readonly);
        assert!(!p.entries["vm/overcommit_memory"].readonly);
        assert_eq!(p.files.get("/dev/kmsg").map(String::as_str), Some(""));
    }

    /// The paths of ../shared/sysctl-k8s.tsv (copied so the test runs in any
    /// checkout; the shared file is checked too when it is present).
    const TSV_PATHS: &[&str] = &[
        "kernel/cap_last_cap",
        "kernel/keys/root_maxbytes",
        "kernel/keys/root_maxkeys",
        "kernel/osrelease",
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/pid_max",
        "kernel/random/boot_id",
        "kernel/threads-max",
        "net/bridge/bridge-nf-call-ip6tables",
        "net/bridge/bridge-nf-call-iptables",
        "net/core/devconf_inherit_init_net",
        "net/core/somaxconn",
        "net/ipv4/conf/<if>/arp_notify",
        "net/ipv4/conf/<if>/route_localnet",
        "net/ipv4/conf/all/arp_announce",
        "net/ipv4/conf/all/arp_ignore",
        "net/ipv4/conf/all/forwarding",
        "net/ipv4/conf/all/route_localnet",
        "net/ipv4/conf/default/forwarding",
        "net/ipv4/ip_forward",
        "net/ipv4/ip_unprivileged_port_start",
        "net/ipv4/ping_group_range",
        "net/ipv4/vs/conn_reuse_mode",
        "net/ipv4/vs/conntrack",
        "net/ipv4/vs/expire_nodest_conn",
        "net/ipv4/vs/expire_quiescent_template",
        "net/ipv6/conf/<if>/accept_dad",
        "net/ipv6/conf/<if>/accept_ra",
        "net/ipv6/conf/<if>/disable_ipv6",
        "net/ipv6/conf/<if>/keep_addr_on_down",
        "net/ipv6/conf/all/forwarding",
        "net/ipv6/conf/default/forwarding",
        "net/netfilter/nf_conntrack_max",
        "net/netfilter/nf_conntrack_tcp_be_liberal",
        "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
        "net/netfilter/nf_conntrack_tcp_timeout_established",
        "net/netfilter/nf_conntrack_udp_timeout",
        "net/netfilter/nf_conntrack_udp_timeout_stream",
        "vm/overcommit_memory",
        "vm/panic_on_oom",
    ];

    #[test]
    fn k3s_profile_covers_every_path_of_sysctl_k8s_tsv() {
        let p = Profile::load(&["k3s".into()]).unwrap();
        let mut paths: Vec<String> = TSV_PATHS.iter().map(|s| s.to_string()).collect();
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sysctl-k8s.tsv");
        if let Ok(text) = std::fs::read_to_string(shared) {
            for l in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("path\t"))
            {
                paths.push(l.split('\t').next().unwrap().to_string());
            }
        }
        for path in paths {
            for i in DEFAULT_INTERFACES {
                let p2 = path.replace("<if>", i);
                assert!(p.entries.contains_key(&p2), "k3s profile lacks {p2}");
            }
        }
    }

    #[test]
    fn k3s_profile_uses_linux_defaults_not_wanted_values() {
        let p = Profile::load(&[]).unwrap();
        assert_eq!(p.entries["vm/panic_on_oom"].value, "0");
        assert_eq!(p.entries["vm/overcommit_memory"].value, "0");
        assert_eq!(p.entries["kernel/panic"].value, "0");
        assert_eq!(p.entries["net/ipv4/conf/all/route_localnet"].value, "0");
        assert_eq!(p.entries["kernel/keys/root_maxkeys"].value, "1000000");
    }

    #[test]
    fn layers_later_wins_and_none_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("my.toml");
        std::fs::write(&f, "[entries]\n\"kernel/panic\" = { value = \"10\" }\n\"my/new\" = { value = \"x\", rule = \"text\" }\n").unwrap();
        let p = Profile::load(&["k3s".into(), f.to_string_lossy().into()]).unwrap();
        assert_eq!(p.entries["kernel/panic"].value, "10");
        assert_eq!(p.entries["my/new"].value, "x");
        assert_eq!(p.entries["vm/panic_on_oom"].value, "0");
        assert!(Profile::load(&["none".into()]).unwrap().entries.is_empty());
        let t = dir.path().join("my.tsv");
        std::fs::write(
            &t,
            "# c\nkernel/panic\t7\trange 0 9\nkernel/ro\tz\ttext\tro\n/dev/foo\thello\n",
        )
        .unwrap();
        let p = Profile::load(&["k3s".into(), t.to_string_lossy().into()]).unwrap();
        assert_eq!(p.entries["kernel/panic"].value, "7");
        assert!(p.entries["kernel/ro"].readonly);
        assert_eq!(p.files["/dev/foo"], "hello");
    }

    #[test]
    fn profile_errors_name_file_and_line() {
        let e = Profile::parse_toml(
            "my.toml",
            "[entries]\n\n\"kernel/panic\" = { value = \"1\", rule = \"intt\" }\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "profile my.toml line 3: value rule \"intt\" unknown (expected integer, range, urange, ulong, ints, bitmap, enum, text)");
        let e =
            Profile::parse_toml("my.toml", "[entries]\n\"a/b\" = { value = \"x\" }\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profile my.toml line 2: a/b: default value \"x\""),
            "{e}"
        );
        let e = Profile::parse_toml("my.toml", "[entries\n").unwrap_err();
        assert!(e.to_string().starts_with("profile my.toml line 1: "), "{e}");
        assert!(!e.to_string().contains('\n'));
        let e = Profile::parse_toml("my.toml", "[entries]\n\"../x\" = { value = \"1\" }\n")
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Profile::parse_tsv("my.tsv", "kernel/panic\t1\tinteger\n\nkernel/x\t1\tbogus\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profile my.tsv line 3: value rule \"bogus\" unknown"),
            "{e}"
        );
        let e = Profile::load(&["nosuch.toml".into()]).unwrap_err();
        assert!(e.to_string().contains("nosuch.toml"), "{e}");
    }
}
