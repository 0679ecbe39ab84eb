//! Experiment files: experiments/NAME.toml. One experiment is one or more
//! steps (the demo has three, timing two); `[common]` gives every step's
//! defaults and each `[[step]]` overrides them.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The experiments shipped with k3shim, used when no experiments directory is found.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "control-plane",
        include_str!("../../../experiments/control-plane.toml"),
    ),
    ("fakefs", include_str!("../../../experiments/fakefs.toml")),
    ("timing", include_str!("../../../experiments/timing.toml")),
    (
        "wait-and-monitor",
        include_str!("../../../experiments/wait-and-monitor.toml"),
    ),
    ("gated", include_str!("../../../experiments/gated.toml")),
    ("demo", include_str!("../../../experiments/demo.toml")),
];

/// The helper hooks use (`{bin}/kube GET /api/v1/nodes`): curl with the kubeconfig's credentials.
pub const KUBE_HELPER: &str = include_str!("../../../experiments/hooks/kube");

/// Milestones every run has without a pattern, derived from the timeline.
pub const BUILTIN_MILESTONES: &[&str] = &[
    "gate_open",
    "gate_timeout",
    "held",
    "released",
    "hooks_ok",
    "hook_failed",
];

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: Option<String>,
    pub description: String,
    /// Which seed experiment this reproduces.
    pub seed: Option<String>,
    /// NAME = REGEX on the target's output (k3s logs to stderr).
    #[serde(default)]
    pub milestones: BTreeMap<String, String>,
    /// Print the last step's timeline table at the end (the demo does).
    #[serde(default)]
    pub print_timeline: bool,
    #[serde(default)]
    pub common: StepSpec,
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
    /// What changes with `--k3s upstream` (the real parts of tests/fixtures/k8s).
    pub upstream: Option<UpstreamSpec>,
}

/// `[upstream]`: overlays applied when the target is the real Kubernetes parts
/// (`--k3s upstream`). `milestones` replace or add patterns by name, `common`
/// overlays `[common]` key by key, `step.NAME` overlays the step NAME.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    #[serde(default)]
    pub milestones: BTreeMap<String, String>,
    #[serde(default)]
    pub common: StepSpec,
    #[serde(default)]
    pub step: BTreeMap<String, StepSpec>,
}

/// Which kind of target an experiment runs on: its expectations can differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The Go stand-in or a real k3s binary: the file as written.
    Default,
    /// The real Kubernetes parts: the file with its `[upstream]` overlays.
    Upstream,
}

/// The header line that marks a run directory's experiment.toml as run on the upstream parts.
pub const UPSTREAM_MARK: &str = "# variant: upstream";

/// Each key set in `top` replaces the one in `base`.
fn overlay(top: &StepSpec, base: &StepSpec) -> StepSpec {
    macro_rules! pick {
        ($($f:ident),*) => { StepSpec { $($f: top.$f.clone().or_else(|| base.$f.clone()),)* } };
    }
    pick!(
        name,
        title,
        shim,
        gvisor,
        runsc_args,
        command,
        standin_args,
        profile,
        mode,
        filter,
        holds,
        hooks,
        hook_failure,
        release,
        gate,
        watch,
        until,
        linger,
        expect
    )
}

fn step_name(s: &StepSpec, i: usize) -> String {
    s.name.clone().unwrap_or_else(|| {
        if i == 0 {
            "main".into()
        } else {
            format!("step{}", i + 1)
        }
    })
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: Option<String>,
    /// One line saying what this step shows.
    pub title: Option<String>,
    /// Run under `k3shim run` (default) or bare.
    pub shim: Option<bool>,
    /// Run inside gVisor (default) or natively.
    pub gvisor: Option<bool>,
    /// Extra runsc flags (before `do`), e.g. ["--net-raw"] for iptables.
    pub runsc_args: Option<Vec<String>>,
    /// argv; placeholders {k3s} {run} {data} {kubeconfig} {bin}.
    pub command: Option<Vec<String>>,
    /// Appended to the command only when the k3s binary is the Go stand-in.
    pub standin_args: Option<Vec<String>>,
    pub profile: Option<String>,
    pub mode: Option<String>,
    /// paths (default) or none (stop every syscall).
    pub filter: Option<String>,
    pub holds: Option<Vec<String>>,
    pub hooks: Option<Vec<String>>,
    /// continue (default) or stop.
    pub hook_failure: Option<String>,
    /// When held syscalls continue: after-hooks (default) or at-gate (`--release`).
    pub release: Option<String>,
    pub gate: Option<GateSpec>,
    /// Seconds to watch at most (scaled by --quick).
    pub watch: Option<f64>,
    /// Stop watching (SIGTERM) once this milestone appears...
    pub until: Option<String>,
    /// ...and this many seconds more have passed (scaled by --quick).
    pub linger: Option<f64>,
    pub expect: Option<Expect>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub url: Option<String>,
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    pub timeout: Option<f64>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// An exit code, a list of them, or "stopped" (still running when the watch ended).
    pub exit: Option<ExitExpect>,
    /// Milestones that must appear.
    #[serde(default)]
    pub milestones: Vec<String>,
    /// Milestones that must not appear.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Pairs [A, B]: A must appear before B.
    #[serde(default)]
    pub before: Vec<(String, String)>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum ExitExpect {
    Code(i32),
    Codes(Vec<i32>),
    Word(String),
}

impl ExitExpect {
    pub fn describe(&self) -> String {
        match self {
            ExitExpect::Code(c) => format!("exit {c}"),
            ExitExpect::Codes(c) => format!(
                "exit {}",
                c.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            ExitExpect::Word(w) => w.clone(),
        }
    }
    /// `code` None: the runner stopped the target at the end of its watch.
    pub fn accepts(&self, stopped: bool, code: Option<i32>) -> bool {
        match self {
            ExitExpect::Word(_) => stopped,
            ExitExpect::Code(c) => !stopped && code == Some(*c),
            ExitExpect::Codes(cs) => !stopped && code.map(|c| cs.contains(&c)).unwrap_or(false),
        }
    }
}

/// One step with every default filled in.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub title: String,
    pub shim: bool,
    pub gvisor: bool,
    pub runsc_args: Vec<String>,
    pub command: Vec<String>,
    pub standin_args: Vec<String>,
    pub profile: String,
    pub mode: String,
    pub filter: String,
    pub holds: Vec<String>,
    pub hooks: Vec<String>,
    pub hook_failure: String,
    pub release: String,
    pub gate: Option<GateSpec>,
    pub watch: f64,
    pub until: Option<String>,
    pub linger: f64,
    pub expect: Expect,
}

pub struct Loaded {
    pub name: String,
    pub source: String,
    pub path: Option<PathBuf>,
    pub exp: Experiment,
    pub steps: Vec<Step>,
    pub milestones: Vec<(String, regex::Regex)>,
}

fn merge(c: &StepSpec, s: &StepSpec, i: usize) -> Result<Step> {
    let name = step_name(s, i);
    let command = s
        .command
        .clone()
        .or_else(|| c.command.clone())
        .ok_or_else(|| anyhow!("step {name}: no command"))?;
    if command.is_empty() {
        bail!("step {name}: empty command");
    }
    let filter = s
        .filter
        .clone()
        .or_else(|| c.filter.clone())
        .unwrap_or_else(|| "paths".into());
    if !["paths", "none"].contains(&filter.as_str()) {
        bail!("step {name}: filter {filter:?}: expected paths or none");
    }
    let mode = s
        .mode
        .clone()
        .or_else(|| c.mode.clone())
        .unwrap_or_else(|| "overlay".into());
    if !["overlay", "shadow"].contains(&mode.as_str()) {
        bail!("step {name}: mode {mode:?}: expected overlay or shadow");
    }
    let hook_failure = s
        .hook_failure
        .clone()
        .or_else(|| c.hook_failure.clone())
        .unwrap_or_else(|| "continue".into());
    if !["continue", "stop"].contains(&hook_failure.as_str()) {
        bail!("step {name}: hook_failure {hook_failure:?}: expected continue or stop");
    }
    let release = s
        .release
        .clone()
        .or_else(|| c.release.clone())
        .unwrap_or_else(|| "after-hooks".into());
    if !["after-hooks", "at-gate"].contains(&release.as_str()) {
        bail!("step {name}: release {release:?}: expected after-hooks or at-gate");
    }
    let watch = s.watch.or(c.watch).unwrap_or(60.0);
    if !(watch > 0.0 && watch.is_finite()) {
        bail!("step {name}: watch {watch}: expected seconds > 0");
    }
    Ok(Step {
        title: s
            .title
            .clone()
            .or_else(|| c.title.clone())
            .unwrap_or_default(),
        shim: s.shim.or(c.shim).unwrap_or(true),
        gvisor: s.gvisor.or(c.gvisor).unwrap_or(true),
        runsc_args: s
            .runsc_args
            .clone()
            .or_else(|| c.runsc_args.clone())
            .unwrap_or_default(),
        command,
        standin_args: s
            .standin_args
            .clone()
            .or_else(|| c.standin_args.clone())
            .unwrap_or_default(),
        profile: s
            .profile
            .clone()
            .or_else(|| c.profile.clone())
            .unwrap_or_else(|| "k3s".into()),
        mode,
        filter,
        holds: s
            .holds
            .clone()
            .or_else(|| c.holds.clone())
            .unwrap_or_default(),
        hooks: s
            .hooks
            .clone()
            .or_else(|| c.hooks.clone())
            .unwrap_or_default(),
        hook_failure,
        release,
        gate: s.gate.clone().or_else(|| c.gate.clone()),
        watch,
        until: s.until.clone().or_else(|| c.until.clone()),
        linger: s.linger.or(c.linger).unwrap_or(0.0).max(0.0),
        expect: s
            .expect
            .clone()
            .or_else(|| c.expect.clone())
            .unwrap_or_default(),
        name,
    })
}

/// Parses and checks an experiment file's text (as written, for the stand-in or k3s).
pub fn parse(name: &str, source: &str, path: Option<PathBuf>) -> Result<Loaded> {
    parse_variant(name, source, path, Variant::Default)
}

/// Parses a run directory's experiment.toml for the variant it was run as.
pub fn parse_as_run(name: &str, source: &str, path: Option<PathBuf>) -> Result<Loaded> {
    let v = if source.lines().any(|l| l.starts_with(UPSTREAM_MARK)) {
        Variant::Upstream
    } else {
        Variant::Default
    };
    parse_variant(name, source, path, v)
}

/// Parses and checks an experiment file's text; for `Variant::Upstream` with
/// its `[upstream]` overlays applied. Both variants are checked either way, so
/// a bad `[upstream]` section is refused before anything runs.
pub fn parse_variant(
    name: &str,
    source: &str,
    path: Option<PathBuf>,
    variant: Variant,
) -> Result<Loaded> {
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("built-in {name}"));
    let mut exp: Experiment = toml::from_str(source)
        .map_err(|e| anyhow!("{shown}: {}", e.to_string().trim().replace('\n', " ")))?;
    if variant == Variant::Default && exp.upstream.is_some() {
        parse_variant(name, source, path.clone(), Variant::Upstream)
            .map_err(|e| anyhow!("[upstream]: {e}"))?;
    }
    if let (Variant::Upstream, Some(u)) = (variant, exp.upstream.clone()) {
        let names: Vec<String> = exp
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| step_name(s, i))
            .collect();
        for n in u.step.keys() {
            if !names.contains(n) {
                bail!(
                    "{shown}: [upstream.step.{n}]: no step named {n} (steps: {})",
                    names.join(", ")
                );
            }
        }
        exp.milestones.extend(u.milestones);
        exp.common = overlay(&u.common, &exp.common);
        for (i, s) in exp.steps.iter_mut().enumerate() {
            if let Some(top) = u.step.get(&names[i]) {
                *s = overlay(top, s);
            }
        }
    }
    let name = exp.name.clone().unwrap_or_else(|| name.to_string());
    if exp.steps.is_empty() {
        bail!("{shown}: no [[step]]");
    }
    let mut milestones = Vec::new();
    for (n, r) in &exp.milestones {
        let re = regex::Regex::new(r).map_err(|e| {
            anyhow!(
                "{shown}: milestone {n}: bad regex: {}",
                e.to_string().lines().last().unwrap_or("")
            )
        })?;
        if BUILTIN_MILESTONES.contains(&n.as_str()) {
            bail!("{shown}: milestone {n}: the name is taken by a built-in milestone");
        }
        milestones.push((n.clone(), re));
    }
    let known = |m: &str| exp.milestones.contains_key(m) || BUILTIN_MILESTONES.contains(&m);
    let mut steps = Vec::new();
    for (i, s) in exp.steps.iter().enumerate() {
        let st = merge(&exp.common, s, i).with_context(|| shown.clone())?;
        let names = st
            .expect
            .milestones
            .iter()
            .chain(&st.expect.absent)
            .chain(st.until.iter())
            .chain(st.expect.before.iter().flat_map(|(a, b)| [a, b]));
        for m in names {
            if !known(m) {
                bail!("{shown}: step {}: milestone {m:?} is not defined in [milestones] (built-in: {})", st.name, BUILTIN_MILESTONES.join(", "));
            }
        }
        if let Some(ExitExpect::Word(w)) = &st.expect.exit {
            if w != "stopped" {
                bail!("{shown}: step {}: expect.exit {w:?}: expected a code, a list of codes, or \"stopped\"", st.name);
            }
        }
        if !st.shim && (!st.holds.is_empty() || !st.hooks.is_empty() || st.gate.is_some()) {
            bail!(
                "{shown}: step {}: holds, hooks and gate need shim = true",
                st.name
            );
        }
        if steps.iter().any(|x: &Step| x.name == st.name) {
            bail!("{shown}: two steps named {}", st.name);
        }
        steps.push(st);
    }
    Ok(Loaded {
        name,
        source: source.to_string(),
        path,
        exp,
        steps,
        milestones,
    })
}

/// The experiments directory: --dir, ./experiments, or the one next to the source tree k3shim was built from.
pub fn find_dir(dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = dir {
        return Some(d.to_path_buf());
    }
    let cwd = std::env::current_dir().ok()?;
    for a in cwd.ancestors() {
        let d = a.join("experiments");
        if d.join("control-plane.toml").is_file() {
            return Some(d);
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .join("experiments");
    src.join("control-plane.toml").is_file().then_some(src)
}

/// All experiments: (name, description) from the directory, else the built-in set.
pub fn list(dir: Option<&Path>) -> Result<(String, Vec<Loaded>)> {
    match find_dir(dir) {
        Some(d) => {
            let mut out = Vec::new();
            let mut entries: Vec<_> = std::fs::read_dir(&d)
                .with_context(|| format!("{}: cannot read", d.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().map(|x| x == "toml").unwrap_or(false))
                .collect();
            entries.sort();
            for p in entries {
                out.push(load_path(&p, Variant::Default)?);
            }
            Ok((d.display().to_string(), out))
        }
        None => Ok((
            "built-in".into(),
            BUILTIN
                .iter()
                .map(|(n, s)| parse(n, s, None))
                .collect::<Result<_>>()?,
        )),
    }
}

fn load_path(p: &Path, variant: Variant) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_variant(&stem, &text, Some(p.to_path_buf()), variant)
}

/// NAME (in the experiments directory or built in) or a path to a .toml file.
pub fn load(name: &str, dir: Option<&Path>) -> Result<Loaded> {
    load_variant(name, dir, Variant::Default)
}

/// `load` for one variant (`Variant::Upstream`: with the `[upstream]` overlays).
pub fn load_variant(name: &str, dir: Option<&Path>, variant: Variant) -> Result<Loaded> {
    if name.ends_with(".toml") || name.contains('/') {
        return load_path(Path::new(name), variant);
    }
    if let Some(d) = find_dir(dir) {
        let p = d.join(format!("{name}.toml"));
        if p.is_file() {
            return load_path(&p, variant);
        }
        if dir.is_some() {
            bail!(
                "no experiment {name:?} in {} (see `k3shim experiment list`)",
                d.display()
            );
        }
    }
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, s)) => parse_variant(n, s, None, variant),
        None => bail!("no experiment {name:?} (see `k3shim experiment list`)"),
    }
}

/// Replaces {k3s} {run} {data} {kubeconfig} {bin} in one argument.
pub fn expand(s: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let key = &after[..j];
        match vars.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.is_empty() =>
            {
                bail!(
                    "{s:?}: unknown placeholder {{{key}}} (known: {})",
                    vars.iter()
                        .map(|(k, _)| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            None => out.push_str(&rest[i..i + 2 + j]),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
description = "d"
[milestones]
ready = 'up and running'
failed = 'stand-in failure'
[common]
command = ["{k3s}", "server"]
watch = 60
[common.expect]
exit = "stopped"
milestones = ["ready"]
[[step]]
name = "a"
filter = "none"
[[step]]
name = "b"
[step.expect]
exit = 1
absent = ["ready"]

[upstream.milestones]
failed = 'real failure'
listed = '^vm +Ready'
[upstream.common]
runsc_args = ["--net-raw"]
watch = 240
[upstream.step.b]
title = "real parts"
[upstream.step.b.expect]
exit = "stopped"
milestones = ["listed"]
"#;

    fn step<'a>(l: &'a Loaded, n: &str) -> &'a Step {
        l.steps.iter().find(|s| s.name == n).unwrap()
    }

    #[test]
    fn the_file_as_written_ignores_its_upstream_section() {
        let l = parse("x", FILE, None).unwrap();
        assert_eq!(step(&l, "a").watch, 60.0);
        assert!(step(&l, "a").runsc_args.is_empty());
        assert_eq!(step(&l, "b").expect.exit, Some(ExitExpect::Code(1)));
        let failed = l.milestones.iter().find(|(n, _)| n == "failed").unwrap();
        assert_eq!(failed.1.as_str(), "stand-in failure");
        assert!(!l.milestones.iter().any(|(n, _)| n == "listed"));
    }

    #[test]
    fn upstream_overlays_milestones_common_and_named_steps_key_by_key() {
        let l = parse_variant("x", FILE, None, Variant::Upstream).unwrap();
        let pat = |n: &str| {
            l.milestones
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, r)| r.as_str().to_string())
        };
        assert_eq!(pat("failed").as_deref(), Some("real failure"));
        assert_eq!(pat("listed").as_deref(), Some("^vm +Ready"));
        assert_eq!(pat("ready").as_deref(), Some("up and running"));
        // [upstream.common] overlays [common]: every step gets it, keeps its own keys.
        let a = step(&l, "a");
        assert_eq!((a.watch, a.filter.as_str()), (240.0, "none"));
        assert_eq!(a.runsc_args, ["--net-raw"]);
        assert_eq!(a.expect.milestones, ["ready"]);
        // [upstream.step.b] replaces b's title and its whole expect table.
        let b = step(&l, "b");
        assert_eq!(b.title, "real parts");
        assert_eq!(b.expect.exit, Some(ExitExpect::Word("stopped".into())));
        assert_eq!(b.expect.milestones, ["listed"]);
        assert!(b.expect.absent.is_empty());
    }

    #[test]
    fn an_upstream_overlay_for_a_missing_step_or_milestone_is_refused_for_either_variant() {
        let bad_step = FILE.replace("[upstream.step.b]", "[upstream.step.c]");
        let bad_step = bad_step.replace("[upstream.step.b.expect]", "[upstream.step.c.expect]");
        for v in [Variant::Default, Variant::Upstream] {
            let e = parse_variant("x", &bad_step, None, v).err().unwrap();
            assert!(e.to_string().contains("no step named c"), "{e}");
        }
        let bad_ms = FILE.replace("milestones = [\"listed\"]", "milestones = [\"nope\"]");
        let e = parse("x", &bad_ms, None).err().unwrap();
        assert!(e.to_string().contains("\"nope\" is not defined"), "{e}");
        let bad_key = FILE.replace("[upstream.common]", "[upstream.common]\nbogus = 1");
        assert!(parse("x", &bad_key, None).is_err());
    }

    #[test]
    fn a_run_directorys_file_is_read_back_as_the_variant_it_ran_as() {
        let marked =
            format!("# k3s: /x/k3s-like\n{UPSTREAM_MARK}: the [upstream] overlays apply\n{FILE}");
        let l = parse_as_run("x", &marked, None).unwrap();
        assert_eq!(step(&l, "a").watch, 240.0);
        let l = parse_as_run("x", FILE, None).unwrap();
        assert_eq!(step(&l, "a").watch, 60.0);
    }

    #[test]
    fn every_shipped_experiment_parses_as_written_and_for_upstream() {
        for (n, s) in BUILTIN {
            parse(n, s, None).unwrap();
            parse_variant(n, s, None, Variant::Upstream).unwrap();
        }
    }
}
