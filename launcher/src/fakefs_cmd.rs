//! `k3shim fakefs init|show|get|set|diff|reset`: inspect and shape a fake
//! /proc/sys state directory.
//!
//! Only `init` creates a state directory; the other commands refuse a path
//! that does not exist (a typo must not leave a fresh, seeded directory
//! behind). `show`, `get` and `diff` open it read-only (they write nothing and
//! work without write permission); `init` and `reset --yes` repair what is
//! damaged or corrupt instead of refusing. Every error is one line naming the
//! state directory or the path and what to do; nothing in the state directory
//! changes on bad input (values, profiles and the directory are checked
//! before anything is written).

use crate::cli::{FakefsArgs, FakefsCmd, FakefsCommon};
use crate::config;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs one `k3shim fakefs` subcommand, printing to stdout. Returns the exit status.
pub fn run(args: &FakefsArgs) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run_to(args, &mut out) {
        // `k3shim fakefs show | head`: the reader went away; not an error.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        r => r,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// As [`run`], writing to `out` (for tests and embedding).
pub fn run_to(args: &FakefsArgs, out: &mut dyn Write) -> Result<i32> {
    match &args.cmd {
        FakefsCmd::Init(common) => init(common, out),
        FakefsCmd::Show { common, json } => show(common, *json, out),
        FakefsCmd::Get { common, path } => get(common, path, out),
        FakefsCmd::Set {
            common,
            path,
            value,
        } => set(common, path, value, out),
        FakefsCmd::Diff { common, json } => diff(common, *json, out),
        FakefsCmd::Reset { common, yes } => reset(common, *yes, out),
    }
}

fn state_of(common: &FakefsCommon) -> Result<PathBuf> {
    config::state_dir(&common.state)
}

/// How a command opens the state directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    ReadOnly,
    Write,
    Repair,
}

/// Opens an existing state directory (every command but init).
fn open_existing(common: &FakefsCommon, how: How) -> Result<(fakefs::FakeFs, PathBuf)> {
    let dir = state_of(common)?;
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "fakefs state {}: no such directory: create it with `k3shim fakefs init --state {}` (or check --state / $K3SHIM_STATE)",
            dir.display(),
            dir.display()
        ),
        _ => {}
    }
    Ok((open(common, how)?, dir))
}

fn open(common: &FakefsCommon, how: How) -> Result<fakefs::FakeFs> {
    let o = config::fakefs_options_recorded(&common.state)?;
    match how {
        How::Write => config::open_fakefs(o),
        How::ReadOnly => fakefs::FakeFs::open_read_only(o).map_err(anyhow::Error::from),
        How::Repair => fakefs::FakeFs::open_repairing(o).map_err(anyhow::Error::from),
    }
}

fn io(r: std::io::Result<()>) -> Result<()> {
    r.context("cannot write to standard output")
}

/// "1 entry", "2 entries".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn mode_name(m: fakefs::Mode) -> &'static str {
    match m {
        fakefs::Mode::Overlay => "overlay",
        fakefs::Mode::Shadow => "shadow",
    }
}

fn init(common: &FakefsCommon, out: &mut dyn Write) -> Result<i32> {
    let dir = state_of(common)?;
    let existed = std::fs::symlink_metadata(dir.join(fakefs::STATE_FILE)).is_ok();
    // On an existing directory this also repairs: what is damaged or corrupt is
    // moved aside and every entry at its profile default is checked.
    let fs = open(common, How::Repair)?;
    for r in fs.repairs() {
        io(writeln!(out, "repaired: {r}"))?;
    }
    let entries = fs.entries();
    let profiles = if common.state.profiles.is_empty() {
        "k3s".to_string()
    } else {
        common.state.profiles.join(" + ")
    };
    io(writeln!(
        out,
        "{} state directory {} (profile {profiles}, {} mode, {})",
        if existed {
            "opened existing"
        } else {
            "initialized"
        },
        fs.state_dir().display(),
        mode_name(fs.mode()),
        plural(entries.len(), "entry", "entries")
    ))?;
    Ok(0)
}

/// Shows a value on one line: control characters escaped, empty as "".
fn printable(v: &str) -> String {
    if v.is_empty() {
        "\"\"".to_string()
    } else if v.chars().any(|c| c.is_control()) {
        format!("\"{}\"", v.escape_debug())
    } else {
        v.to_string()
    }
}

/// Formats rows as left-aligned columns separated by two spaces (no trailing blanks).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<String>, s: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut s);
    for r in rows {
        line(r.clone(), &mut s);
    }
    s
}

#[derive(Serialize)]
struct ShowJson<'a> {
    state: &'a Path,
    mode: &'static str,
    entries: Vec<fakefs::EntryInfo>,
    damaged: &'a [fakefs::Damage],
}

fn show(common: &FakefsCommon, json: bool, out: &mut dyn Write) -> Result<i32> {
    let (fs, _) = open_existing(common, How::ReadOnly)?;
    let entries = fs.entries();
    if json {
        let j = ShowJson {
            state: fs.state_dir(),
            mode: mode_name(fs.mode()),
            entries,
            damaged: fs.damaged(),
        };
        io(writeln!(out, "{}", serde_json::to_string_pretty(&j)?))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let (value, source) = match &e.damage {
                Some(_) if e.value.is_empty() => ("-".into(), "damaged".into()),
                Some(_) => (printable(&e.value), "damaged".into()),
                None => (printable(&e.value), e.source.to_string()),
            };
            vec![
                e.path.clone(),
                value,
                source,
                e.rule.clone(),
                if e.readonly {
                    "ro".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let count = |s: fakefs::Source| {
        entries
            .iter()
            .filter(|e| e.source == s && e.damage.is_none())
            .count()
    };
    let damaged = entries.iter().filter(|e| e.damage.is_some()).count();
    io(write!(
        out,
        "{}",
        table(&["PATH", "VALUE", "SOURCE", "RULE", "RO"], &rows)
    ))?;
    io(writeln!(
        out,
        "{} in {} ({} mode): {} real, {} profile, {} written{}",
        plural(entries.len(), "entry", "entries"),
        fs.state_dir().display(),
        mode_name(fs.mode()),
        count(fakefs::Source::Real),
        count(fakefs::Source::Profile),
        count(fakefs::Source::Written),
        if damaged > 0 {
            format!(", {damaged} damaged")
        } else {
            String::new()
        }
    ))?;
    for d in fs.damaged() {
        io(writeln!(out, "damaged: {d}"))?;
    }
    if !fs.damaged().is_empty() {
        io(writeln!(
            out,
            "a run serves no damaged entry (EIO) and refuses a damaged top level; `k3shim fakefs init --state {}` moves what is damaged to {} and restores the entries",
            fs.state_dir().display(),
            fs.state_dir().join("damaged").display()
        ))?;
    }
    Ok(0)
}

fn get(common: &FakefsCommon, path: &str, out: &mut dyn Write) -> Result<i32> {
    let (fs, dir) = open_existing(common, How::ReadOnly)?;
    let v = fs
        .get(path)
        .with_context(|| format!("fakefs get {path} (state {})", dir.display()))?;
    io(writeln!(out, "{v}"))?;
    Ok(0)
}

fn set(common: &FakefsCommon, path: &str, value: &str, out: &mut dyn Write) -> Result<i32> {
    let (check, dir) = open_existing(common, How::ReadOnly)?;
    // Says once that nothing was changed (fakefs's refusals of a damaged or
    // corrupt directory already do).
    let refused = |e: anyhow::Error| {
        let head = format!("fakefs set {path} (state {})", dir.display());
        if format!("{e:#}").contains("nothing was changed") {
            e.context(head)
        } else {
            e.context(format!("{head}; nothing was changed"))
        }
    };
    // Everything that can refuse the value, before the directory is opened
    // for writing (which may bring it in line with the profile).
    let old = check.get(path).map_err(|e| refused(e.into()))?;
    check
        .check_set(path, value)
        .map_err(|e| refused(e.into()))?;
    drop(check);
    let mut fs = open(common, How::Write).map_err(refused)?;
    fs.set(path, value).map_err(|e| refused(e.into()))?;
    let new = fs.get(path).map_err(|e| refused(e.into()))?;
    io(writeln!(
        out,
        "{path}: {} -> {}",
        printable(&old),
        printable(&new)
    ))?;
    Ok(0)
}

#[derive(Serialize)]
struct DiffJson<'a> {
    state: &'a Path,
    changes: Vec<fakefs::DiffLine>,
    /// Not compared (their values cannot be trusted): see `show`.
    damaged: &'a [fakefs::Damage],
}

fn diff(common: &FakefsCommon, json: bool, out: &mut dyn Write) -> Result<i32> {
    let (fs, _) = open_existing(common, How::ReadOnly)?;
    let changes = fs.diff();
    if json {
        let j = DiffJson {
            state: fs.state_dir(),
            changes,
            damaged: fs.damaged(),
        };
        io(writeln!(out, "{}", serde_json::to_string_pretty(&j)?))?;
        return Ok(0);
    }
    let damaged_note = |out: &mut dyn Write| {
        if fs.damaged().is_empty() {
            return Ok(());
        }
        io(writeln!(
            out,
            "{} in {} not compared: see `k3shim fakefs show --state {}`",
            plural(
                fs.damaged().len(),
                "damaged thing was",
                "damaged things were"
            ),
            fs.state_dir().display(),
            fs.state_dir().display()
        ))
    };
    if changes.is_empty() {
        io(writeln!(
            out,
            "no changes relative to the profile in {}",
            fs.state_dir().display()
        ))?;
        damaged_note(out)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|d| {
            vec![
                d.path.clone(),
                printable(&d.baseline),
                printable(&d.current),
            ]
        })
        .collect();
    io(write!(out, "{}", table(&["PATH", "PROFILE", "NOW"], &rows)))?;
    io(writeln!(
        out,
        "{} relative to the profile in {}",
        plural(changes.len(), "entry changed", "entries changed"),
        fs.state_dir().display()
    ))?;
    damaged_note(out)?;
    Ok(0)
}

fn reset(common: &FakefsCommon, yes: bool, out: &mut dyn Write) -> Result<i32> {
    if !yes {
        return reset_preview(common, out);
    }
    // Always ends with a working directory: a corrupt index or state file, or
    // anything damaged, is moved aside first (and said so) instead of refused.
    let (mut fs, dir) = open_existing(common, How::Repair)?;
    for r in fs.repairs() {
        io(writeln!(out, "repaired: {r}"))?;
    }
    let written = fs
        .entries()
        .iter()
        .filter(|e| e.source == fakefs::Source::Written)
        .count();
    fs.reset()
        .with_context(|| format!("fakefs reset (state {})", dir.display()))?;
    io(writeln!(
        out,
        "reset {}: {} to the profile's values (journal kept)",
        fs.state_dir().display(),
        plural(
            written,
            "written entry restored",
            "written entries restored"
        )
    ))?;
    Ok(0)
}

/// `reset` without --yes: says what --yes would do, changes nothing.
fn reset_preview(common: &FakefsCommon, out: &mut dyn Write) -> Result<i32> {
    let dir = state_of(common)?;
    let nothing_changed = |dir: &Path| {
        anyhow::anyhow!(
            "fakefs reset (state {}): nothing was changed; run again with --yes to restore the profile's values (the journal is kept)",
            dir.display()
        )
    };
    let fs = match open_existing(common, How::ReadOnly) {
        Ok((fs, _)) => fs,
        Err(e) => match e.downcast_ref::<fakefs::Error>() {
            Some(fakefs::Error::Corrupt { file, reason, .. }) => {
                io(writeln!(
                    out,
                    "{file} in {} is corrupt ({reason}): reset --yes moves it aside ({file}.corrupt-<time>) and restores the profile's values",
                    dir.display()
                ))?;
                io(out.flush())?;
                return Err(nothing_changed(&dir));
            }
            _ => return Err(e),
        },
    };
    let written: Vec<fakefs::EntryInfo> = fs
        .entries()
        .into_iter()
        .filter(|e| e.source == fakefs::Source::Written)
        .collect();
    let diffs = fs.diff();
    if written.is_empty() {
        io(writeln!(
            out,
            "nothing written in {}: reset would only re-seed the profile's values",
            dir.display()
        ))?;
    } else {
        let rows: Vec<Vec<String>> = written
            .iter()
            .map(|e| {
                let to = diffs
                    .iter()
                    .find(|d| d.path == e.path)
                    .map(|d| printable(&d.baseline));
                let now = match &e.damage {
                    Some(_) => "(damaged)".to_string(),
                    None => printable(&e.value),
                };
                vec![
                    e.path.clone(),
                    now,
                    to.unwrap_or_else(|| "(unchanged)".into()),
                ]
            })
            .collect();
        io(writeln!(
            out,
            "reset would restore {} in {}:",
            plural(written.len(), "written entry", "written entries"),
            dir.display()
        ))?;
        io(write!(
            out,
            "{}",
            table(&["PATH", "NOW", "AFTER RESET"], &rows)
        ))?;
    }
    for d in fs.damaged() {
        io(writeln!(out, "reset would move aside: {d}"))?;
    }
    io(out.flush())?;
    Err(nothing_changed(&dir))
}
