//! Checks a state directory before it is used, and moves aside what is damaged.
//!
//! Why: a traced program's redirected open is resolved by the kernel, which
//! follows a symlink in any directory on the way to a value file (O_NOFOLLOW
//! only guards the last name), and a value no write could have stored (bytes
//! that are not text, a FIFO) must not be served as if it were one. So every
//! opener walks values/ and the stand-ins once: every directory on the way must
//! be a directory, every value a regular file holding a value its rule
//! accepts. What fails is reported (`fakefs show`, one warning in `run`), never
//! served, and `fakefs init` moves it to DIR/damaged/<time>/ (nothing is
//! deleted). The walk lists each directory once (getdents64 says what each name
//! is) and reads each value with one open, one read and one close.

use crate::fsutil::{self, FileType, Root};
use crate::Rule;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

/// Something in a state directory that k3shim will not use as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// Relative to the state directory, e.g. `values/vm` or `index.json`.
    pub path: String,
    /// What is wrong, e.g. `a symlink to /etc/shadow`.
    pub problem: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}", self.path, self.problem)
    }
}

/// The names at the top of a state directory and what each must be.
pub(crate) const TOP_DIRS: [&str; 4] = ["values", "views", "tmp", "files"];
pub(crate) const TOP_FILES: [&str; 6] = [
    crate::STATE_FILE,
    crate::INDEX_FILE,
    crate::JOURNAL_FILE,
    CHECKED_FILE,
    "lock",
    "generation",
];

/// How recent a change must be for its stamp not to be trusted (see finish).
const RACY_SECS: i64 = 2;

/// Largest value file accepted (procfs values fit in a page).
const MAX_VALUE: usize = 4096;

fn problem_of(dir: &std::os::fd::OwnedFd, name: &str, kind: FileType, want: FileType) -> String {
    let what = match kind {
        FileType::Symlink => match fsutil::readlink_at(dir, name) {
            Some(t) => format!("a symlink to {t}"),
            None => "a symlink".to_string(),
        },
        k => k.name().to_string(),
    };
    format!("{what} where {} belongs", want.name())
}

/// Checks the names at the top of the state directory.
pub(crate) fn scan_top(root: &Root) -> io::Result<Vec<Damage>> {
    let dir = root.open_dir("", false)?;
    let mut out = Vec::new();
    for (name, kind) in fsutil::list(&dir)? {
        let want = if TOP_DIRS.contains(&name.as_str()) {
            FileType::Dir
        } else if TOP_FILES.contains(&name.as_str()) {
            FileType::File
        } else {
            continue;
        };
        if kind != want {
            out.push(Damage {
                problem: problem_of(&dir, &name, kind, want),
                path: name,
            });
        }
    }
    Ok(out)
}

/// What the walk of values/ found.
#[derive(Default)]
pub(crate) struct ValueScan {
    pub damage: Vec<Damage>,
    /// The value files read (relative to values/, without their newline);
    /// files whose stamp showed them unchanged since they passed are not read.
    pub values: HashMap<String, String>,
    /// Every directory and value file that passed, for the next opener.
    pub checked: Checked,
}

/// What the walk expects: `rule_of(rel)` is the rule of an entry whose value
/// file may be at values/<rel> (None: no entry, a stray file is left alone
/// unless `adopt_strays`, when it is checked as text: an index is being
/// rebuilt); `dirs` are the directories that entries need; `required` the
/// entries whose value file must exist; `key` names all of that (what a
/// cached result is valid for).
pub(crate) struct Expect<'a> {
    pub rule_of: &'a dyn Fn(&str) -> Option<Rule>,
    pub dirs: &'a HashSet<String>,
    pub required: &'a [String],
    pub adopt_strays: bool,
    pub key: String,
}

/// What a directory or value file looked like when it passed the check.
/// Any change to a name in a directory, or to a file's content or mode,
/// changes its ctime (which, unlike mtime, cannot be set back by hand).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_ns: i64,
    size: i64,
    mode: u32,
    /// The rule a value file passed (empty for a directory).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    rule: String,
}

impl Stamp {
    fn of(st: &libc::stat, rule: Option<&Rule>) -> Stamp {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: st.st_ctime,
            ctime_ns: st.st_ctime_nsec,
            size: st.st_size,
            mode: st.st_mode,
            rule: rule.map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// DIR/checked.json: the stamps of the last check, so that the next opener
/// re-reads only what changed (about one fstatat per unchanged directory and
/// value instead of six and three: start-up cost matters inside gVisor).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Checked {
    /// [`Expect::key`] of that check.
    pub key: String,
    /// Whether that check found nothing damaged (else nothing is skipped).
    pub clean: bool,
    /// values/-relative path ("" for values/ itself) -> stamp.
    pub stamps: BTreeMap<String, Stamp>,
}

pub(crate) const CHECKED_FILE: &str = "checked.json";

impl Checked {
    /// The stamps of a previous check, if usable (a missing or unreadable
    /// file only means a full check).
    pub(crate) fn load(root: &Root) -> Option<Checked> {
        let bytes = root.read(CHECKED_FILE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores them for the next opener when they changed (best effort).
    pub(crate) fn save(&self, root: &Root, old: Option<&Checked>) {
        if old == Some(self) {
            return;
        }
        let Ok(text) = serde_json::to_vec(self) else {
            return;
        };
        if let Err(e) = root.write_atomic(CHECKED_FILE, &text, 0o644, false) {
            tracing::debug!("fakefs: cannot store {CHECKED_FILE}: {e}");
        }
    }
}

/// Walks values/ (which must exist and be a directory). With the stamps of a
/// previous clean check made for the same entries and rules, what is
/// unchanged since is only stat'ed; the rest is listed and read.
pub(crate) fn scan_values(
    root: &Root,
    expect: &Expect<'_>,
    cache: Option<&Checked>,
) -> io::Result<ValueScan> {
    let mut scan = ValueScan::default();
    let values = root.open_dir("values", false)?;
    let none = Checked::default();
    let fast = cache.filter(|c| c.clean && c.key == expect.key && !expect.adopt_strays);
    // Without a clean check of the same entries, everything is listed; file
    // stamps (each with its rule) still spare reads of unchanged values.
    let cache = cache.filter(|_| !expect.adopt_strays).unwrap_or(&none);
    let mut walk = Walk {
        root,
        values: &values,
        expect,
        cache: fast.unwrap_or(cache),
        scan: &mut scan,
    };
    if fast.is_some() {
        walk.visit("")?;
    } else {
        walk.record_dir("", None)?;
        walk.dir(&values, "")?;
    }
    finish(scan, expect)
}

fn finish(mut scan: ValueScan, expect: &Expect<'_>) -> io::Result<ValueScan> {
    for rel in expect.required {
        if !scan.checked.stamps.contains_key(rel) && !covered(&scan.damage, rel) {
            scan.damage.push(Damage {
                path: format!("values/{rel}"),
                problem: "missing (the index lists it)".into(),
            });
        }
    }
    scan.checked.key = expect.key.clone();
    scan.checked.clean = scan.damage.is_empty();
    // Racy stamps (as git's index has): a change made within the clock's
    // granularity of the check (coarse, milliseconds) can leave ctime and size
    // as they were. What changed within the last seconds is not vouched for:
    // it is looked at again next time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    let before = scan.checked.stamps.len();
    scan.checked
        .stamps
        .retain(|_, st| st.ctime + RACY_SECS < now);
    if scan.checked.stamps.len() != before {
        scan.checked.clean = false;
    }
    Ok(scan)
}

/// Is values/<rel> at or beneath a damaged path?
pub(crate) fn covered(damage: &[Damage], rel: &str) -> bool {
    damage.iter().any(|d| covers(&d.path, rel))
}

/// Does the damaged path `d` (relative to the state dir) cover entry `rel`?
pub(crate) fn covers(d: &str, rel: &str) -> bool {
    if d == "values" {
        return true;
    }
    match d.strip_prefix("values/") {
        Some(p) => rel == p || (rel.starts_with(p) && rel.as_bytes().get(p.len()) == Some(&b'/')),
        None => false,
    }
}

struct Walk<'a, 'b> {
    root: &'a Root,
    /// values/, opened checked: stamps are taken relative to it.
    values: &'a std::os::fd::OwnedFd,
    expect: &'a Expect<'b>,
    cache: &'a Checked,
    scan: &'a mut ValueScan,
}

impl Walk<'_, '_> {
    /// lstat of values/<rel> (values/ itself for "").
    fn stat(&self, rel: &str) -> io::Result<Option<libc::stat>> {
        if rel.is_empty() {
            return fsutil::stat_at(self.values, ".");
        }
        fsutil::stat_at(self.values, rel)
    }

    fn record_dir(&mut self, rel: &str, st: Option<libc::stat>) -> io::Result<()> {
        let st = match st {
            Some(st) => st,
            None => match self.stat(rel)? {
                Some(st) => st,
                None => return Ok(()),
            },
        };
        self.scan
            .checked
            .stamps
            .insert(rel.to_string(), Stamp::of(&st, None));
        Ok(())
    }

    /// A directory whose stamp is unchanged has the same names as when it
    /// passed: its children are taken from the stamps; a changed one is
    /// listed again.
    fn visit(&mut self, rel: &str) -> io::Result<()> {
        let st = self.stat(rel)?;
        let unchanged = match (&st, self.cache.stamps.get(rel)) {
            (Some(st), Some(c)) => c.is_dir() && *c == Stamp::of(st, None),
            _ => false,
        };
        if !unchanged && rel.is_empty() {
            self.record_dir(rel, st)?;
            return self.dir(self.values, rel);
        }
        if !unchanged {
            return match self.root.open_dir(&values_path(rel), false) {
                Ok(fd) => {
                    self.record_dir(rel, st)?;
                    self.dir(&fd, rel)
                }
                Err(_) => {
                    // Gone or replaced since its parent was listed: check it as
                    // its parent's child.
                    let (parent, name) = split(rel);
                    let fd = self.root.open_dir(&values_path(parent), false)?;
                    let kind = fsutil::type_at(&fd, name)?.unwrap_or(FileType::Other);
                    self.child(&fd, parent, name, kind)
                }
            };
        }
        self.record_dir(rel, st)?;
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let children: Vec<(String, bool)> = self
            .cache
            .stamps
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty() && !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k.clone(), v.is_dir()))
            .collect();
        for (child, is_dir) in children {
            if is_dir {
                self.visit(&child)?;
                continue;
            }
            let rule = (self.expect.rule_of)(&child);
            let same = match (self.stat(&child)?, self.cache.stamps.get(&child)) {
                (Some(st), Some(c)) => *c == Stamp::of(&st, rule.as_ref()),
                _ => false,
            };
            if same {
                let c = self.cache.stamps[&child].clone();
                self.scan.checked.stamps.insert(child, c);
            } else {
                let (parent, name) = split(&child);
                let fd = self.root.open_dir(&values_path(parent), false)?;
                let kind = fsutil::type_at(&fd, name)?.unwrap_or(FileType::Other);
                self.child(&fd, parent, name, kind)?;
            }
        }
        Ok(())
    }

    /// Lists an opened directory and checks each name.
    fn dir(&mut self, dir: &std::os::fd::OwnedFd, rel: &str) -> io::Result<()> {
        for (name, kind) in fsutil::list(dir)? {
            self.child(dir, rel, &name, kind)?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        dir: &std::os::fd::OwnedFd,
        rel: &str,
        name: &str,
        kind: FileType,
    ) -> io::Result<()> {
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let expect = self.expect;
        let mut rule = (expect.rule_of)(&child);
        if rule.is_none()
            && expect.adopt_strays
            && kind == FileType::File
            && !expect.dirs.contains(&child)
        {
            rule = Some(Rule::Text);
        }
        let want = if rule.is_some() {
            FileType::File
        } else if expect.dirs.contains(&child) {
            FileType::Dir
        } else {
            // A name no entry needs: only a symlink or a special file there is
            // reported (a write creating an entry below it would meet it).
            match kind {
                FileType::Dir => FileType::Dir,
                FileType::File => return Ok(()),
                _ => FileType::File,
            }
        };
        let scan = &mut *self.scan;
        let mut damaged = |problem: String| {
            scan.damage.push(Damage {
                path: format!("values/{child}"),
                problem,
            })
        };
        if kind != want {
            damaged(problem_of(dir, name, kind, want));
            return Ok(());
        }
        match kind {
            FileType::Dir => {
                let c = std::ffi::CString::new(name)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
                match fsutil::open_at_checked(dir, &c, flags, 0) {
                    Ok(sub) => {
                        self.record_dir(&child, None)?;
                        self.dir(&sub, &child)?;
                    }
                    // Swapped since the listing: report what is there now.
                    Err(_) => {
                        let now = fsutil::type_at(dir, name)?.unwrap_or(FileType::Other);
                        damaged(problem_of(dir, name, now, FileType::Dir));
                    }
                }
            }
            FileType::File => {
                let Some(rule) = rule else { return Ok(()) };
                let st = fsutil::stat_at(dir, name)?;
                if let Some(st) = &st {
                    let stamp = Stamp::of(st, Some(&rule));
                    if self.cache.stamps.get(&child) == Some(&stamp) && !expect.adopt_strays {
                        self.scan.checked.stamps.insert(child, stamp);
                        return Ok(());
                    }
                }
                match fsutil::read_small_at(dir, name, MAX_VALUE) {
                    Ok(bytes) => match check_value(&bytes, &rule) {
                        Ok(v) => {
                            if let Some(st) = &st {
                                let stamp = Stamp::of(st, Some(&rule));
                                self.scan.checked.stamps.insert(child.clone(), stamp);
                            }
                            self.scan.values.insert(child, v);
                        }
                        Err(why) => damaged(why),
                    },
                    Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                        damaged(format!("longer than {MAX_VALUE} bytes"))
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                        damaged(problem_of(dir, name, FileType::Symlink, FileType::File))
                    }
                    Err(e) => damaged(format!("unreadable ({e})")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn values_path(rel: &str) -> String {
    if rel.is_empty() {
        "values".to_string()
    } else {
        format!("values/{rel}")
    }
}

fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// Checks the stand-in files (guest paths such as /dev/kmsg, kept at
/// files/<path>): each directory on the way a directory, the file (if it is
/// there yet) a regular file.
pub(crate) fn scan_standins<'a>(
    root: &Root,
    guests: impl Iterator<Item = &'a String>,
) -> io::Result<Vec<Damage>> {
    let mut out = Vec::new();
    let Ok(files) = root.open_dir("files", false) else {
        return Ok(out);
    };
    'each: for guest in guests {
        let parts: Vec<&str> = guest.trim_start_matches('/').split('/').collect();
        let mut cur = files.try_clone()?;
        let mut path = "files".to_string();
        for (i, part) in parts.iter().enumerate() {
            path.push('/');
            path.push_str(part);
            let last = i + 1 == parts.len();
            let want = if last { FileType::File } else { FileType::Dir };
            match fsutil::type_at(&cur, part)? {
                None => continue 'each,
                Some(k) if k != want => {
                    out.push(Damage {
                        path: path.clone(),
                        problem: problem_of(&cur, part, k, want),
                    });
                    continue 'each;
                }
                Some(_) if last => {}
                Some(_) => {
                    let c = std::ffi::CString::new(*part)
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
                    match fsutil::open_at_checked(&cur, &c, flags, 0) {
                        Ok(sub) => cur = sub,
                        Err(_) => {
                            out.push(Damage {
                                path: path.clone(),
                                problem: problem_of(&cur, part, FileType::Symlink, want),
                            });
                            continue 'each;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A stored value must be what a write (or shadow mode's copy of the kernel's
/// entry) could have stored: text without NUL, one line ending in a newline
/// (several for free text, as read-only entries print lists), that the
/// entry's rule accepts. Returns the
/// value without its newline, or what is wrong.
pub(crate) fn check_value(bytes: &[u8], rule: &Rule) -> Result<String, String> {
    let bad = |why: &str| format!("holding \"{}\", {why}", escape(bytes));
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(bad("without the newline every value ends with"));
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("which is not text"))?;
    if text.contains('\0') {
        return Err(bad("which is not text"));
    }
    if text.contains('\n') {
        // A read-only text entry prints one item a line (Linux 6.x's
        // kernel/core_modes: "file\npipe\nsocket\n"), and shadow mode copies it.
        if *rule == Rule::Text {
            return Ok(text.to_string());
        }
        return Err(bad("which is not one line of text"));
    }
    rule.normalize(text)
        .map_err(|_| bad(&format!("which its rule ({rule}) rejects")))?;
    Ok(text.to_string())
}

/// Bytes shown on one line: printable ASCII as is, the rest as \xNN, \n, \0.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes.iter().take(64) {
        match b {
            0 => s.push_str("\\0"),
            b'"' | b'\\' => {
                s.push('\\');
                s.push(*b as char);
            }
            0x20..=0x7e => s.push(*b as char),
            _ => s.extend(std::ascii::escape_default(*b).map(|c| c as char)),
        }
    }
    if bytes.len() > 64 {
        s.push_str("...");
    }
    s
}

/// A UTC time for names of things moved aside, e.g. 20261201T042900Z.
pub(crate) fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}

/// Moves `path` (relative to the state directory) to `damaged/<stamp>/<path>`,
/// or, when `beside` is set, to `<path>.corrupt-<stamp>` next to it. A symlink
/// is moved, never followed. Returns the new path.
pub(crate) fn move_aside(root: &Root, path: &str, stamp: &str, beside: bool) -> io::Result<String> {
    let (parent, leaf) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let from = root.open_dir(parent, false)?;
    let (to_dir, base) = if beside {
        (
            root.open_dir(parent, false)?,
            format!("{path}.corrupt-{stamp}"),
        )
    } else {
        let d = if parent.is_empty() {
            format!("damaged/{stamp}")
        } else {
            format!("damaged/{stamp}/{parent}")
        };
        (root.open_dir(&d, true)?, format!("damaged/{stamp}/{path}"))
    };
    // Never replace something already moved aside (two repairs in one second).
    let mut dest = base.clone();
    let mut n = 1;
    while root.lstat(&dest)?.is_some() {
        n += 1;
        dest = format!("{base}-{n}");
    }
    let to_leaf = dest.rsplit('/').next().unwrap_or(&dest);
    fsutil::rename_at(&from, leaf, &to_dir, to_leaf)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_must_be_one_line_of_text_its_rule_accepts() {
        let int = Rule::Integer;
        assert_eq!(check_value(b"5\n", &int), Ok("5".into()));
        assert_eq!(
            check_value(b"32768\t60999\n", &Rule::parse("ints 2").unwrap()),
            Ok("32768\t60999".into())
        );
        for bad in [&b"garbage\0\xff\n"[..], b"5", b"abc\n", b"1\n2\n", b""] {
            assert!(check_value(bad, &int).is_err(), "{bad:?}");
        }
        assert!(check_value(b"a\0b\n", &Rule::Text).is_err());
        assert!(check_value(b"a\nb\0\n", &Rule::Text).is_err());
        assert_eq!(
            check_value(b"file\npipe\nsocket\n", &Rule::Text),
            Ok("file\npipe\nsocket".into())
        );
        assert_eq!(
            check_value(b"garbage\0\xff\n", &int).unwrap_err(),
            "holding \"garbage\\0\\xff\\n\", which is not text"
        );
    }

    #[test]
    fn a_damaged_directory_covers_every_entry_below_it() {
        assert!(covers("values/vm", "vm/panic_on_oom"));
        assert!(covers("values/vm/panic_on_oom", "vm/panic_on_oom"));
        assert!(covers("values", "kernel/panic"));
        assert!(!covers("values/vm", "vmx/a"));
        assert!(!covers("views/vm", "vm/panic_on_oom"));
    }
}
