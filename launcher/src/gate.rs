//! The readiness gate: an HTTP(S) probe that decides when the apiserver
//! responds. Until it opens (or `--gate-timeout` passes) held syscalls stay
//! held and hooks do not start.
//!
//! [`GateConfig::validate`] checks everything that can be checked before
//! anything is launched (URL, kubeconfig, certificates) and builds the HTTP
//! client; [`start`] runs the probe loop as a tokio task and returns a
//! [`GateHandle`] whose [`GateHandle::is_open`] is one atomic load.
//!
//! A kubeconfig that does not exist yet is accepted: k3s writes
//! /etc/rancher/k3s/k3s.yaml only once it runs. Every attempt then says in
//! the timeline that it is waiting for the file, and the file is (re)loaded
//! whenever its size or modification time changes, so a kubeconfig rewritten
//! by a restarted k3s is picked up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail};
use base64::Engine as _;
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::timeline::Timeline;

/// What happens to hooks when `--gate-timeout` passes before the probe did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeoutAction {
    /// Hooks run as if the gate had opened (`--gate-timeout-action run-hooks`).
    #[default]
    RunHooks,
    /// Hooks do not run; the timeline says `hooks_skipped`.
    SkipHooks,
}

impl TimeoutAction {
    /// The CLI spelling: `run-hooks` or `skip-hooks`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutAction::RunHooks => "run-hooks",
            TimeoutAction::SkipHooks => "skip-hooks",
        }
    }
}

impl std::str::FromStr for TimeoutAction {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run-hooks" => Ok(TimeoutAction::RunHooks),
            "skip-hooks" => Ok(TimeoutAction::SkipHooks),
            _ => bail!("--gate-timeout-action {s:?}: expected run-hooks or skip-hooks"),
        }
    }
}

/// How the gate ended. `at_ms` is timeline time (ms since launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateOutcome {
    Opened { at_ms: u64 },
    TimedOut { at_ms: u64 },
}

impl GateOutcome {
    pub fn at_ms(&self) -> u64 {
        match *self {
            GateOutcome::Opened { at_ms } | GateOutcome::TimedOut { at_ms } => at_ms,
        }
    }
}

/// The gate's settings, as given on the command line.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// `--gate-url`; when empty and a kubeconfig is given, its server + "/readyz".
    pub url: String,
    /// `--gate-kubeconfig`: CA, client certificate and key, or token.
    pub kubeconfig: Option<PathBuf>,
    /// `--gate-insecure`: do not verify the server's certificate.
    pub insecure: bool,
    /// The status that counts as ready (200).
    pub expect_status: u16,
    /// Consecutive ready answers needed (1).
    pub successes: u32,
    /// Time between attempts (250 ms); grows by half after each failure, up to 2 s.
    pub interval: Duration,
    /// Per-attempt timeout (2 s).
    pub attempt_timeout: Duration,
    /// `--gate-timeout`: give up waiting after this long (from `start`).
    pub timeout: Option<Duration>,
    pub timeout_action: TimeoutAction,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            url: String::new(),
            kubeconfig: None,
            insecure: false,
            expect_status: 200,
            successes: 1,
            interval: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(2),
            timeout: None,
            timeout_action: TimeoutAction::RunHooks,
        }
    }
}

/// The longest wait between attempts once backoff has grown.
pub const MAX_INTERVAL: Duration = Duration::from_secs(2);

/// `--gate-timeout` when none is given: k3s is ready in well under a minute
/// natively and within a few minutes in gVisor; kubeadm waits 4 minutes for
/// its control plane. `--gate-timeout 0` waits for ever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// When the gate first says on stderr that it is still waiting, then how often.
pub const REMIND_FIRST: Duration = Duration::from_secs(5);
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// A validated gate, ready to [`start`].
pub struct PreparedGate {
    cfg: GateConfig,
    /// The explicit URL, if `--gate-url` was given.
    url: Option<Url>,
    kube: Option<KubeSource>,
    /// Client and auth in use (None until a kubeconfig that did not exist appears).
    active: Option<Active>,
}

impl std::fmt::Debug for PreparedGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedGate")
            .field("url", &self.describe_url())
            .field("kubeconfig", &self.cfg.kubeconfig)
            .finish_non_exhaustive()
    }
}

struct KubeSource {
    path: PathBuf,
    /// (len, mtime) of the file when it was last loaded.
    loaded: Option<(u64, Option<SystemTime>)>,
}

struct Active {
    client: reqwest::Client,
    url: Url,
    auth: Option<Auth>,
}

#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
}

impl GateConfig {
    /// Checks the URL and kubeconfig and builds the HTTP client. Errors are
    /// one line naming the option (and the kubeconfig field) at fault.
    pub fn validate(&self) -> Result<PreparedGate, anyhow::Error> {
        if self.expect_status < 100 || self.expect_status > 599 {
            bail!(
                "--gate-expect-status {}: not an HTTP status (100..=599)",
                self.expect_status
            );
        }
        if self.successes == 0 {
            bail!("--gate-successes 0: at least one successful probe is needed");
        }
        if self.interval.is_zero() {
            bail!("--gate-interval-ms 0: must be more than 0");
        }
        if self.attempt_timeout.is_zero() {
            bail!("--gate-attempt-timeout-ms 0: must be more than 0");
        }
        let url = if self.url.trim().is_empty() {
            if self.kubeconfig.is_none() {
                bail!("--gate-url: missing (give --gate-url URL or --gate-kubeconfig FILE)");
            }
            None
        } else {
            Some(parse_url("--gate-url", self.url.trim())?)
        };
        let mut prepared = PreparedGate {
            cfg: self.clone(),
            url,
            kube: None,
            active: None,
        };
        match &self.kubeconfig {
            None => {
                let url = prepared.url.clone().expect("checked above");
                let client = build_client(self, None, None)?;
                prepared.active = Some(Active {
                    client,
                    url,
                    auth: None,
                });
            }
            Some(path) => {
                prepared.kube = Some(KubeSource {
                    path: path.clone(),
                    loaded: None,
                });
                match std::fs::metadata(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Not written yet (k3s writes it once it runs): probes wait for it.
                    }
                    Err(e) => bail!("--gate-kubeconfig {}: {e}", path.display()),
                    Ok(_) => prepared.reload_kubeconfig()?,
                }
            }
        }
        Ok(prepared)
    }
}

impl PreparedGate {
    /// The URL probed, or a description when it comes from a kubeconfig not yet written.
    pub fn describe_url(&self) -> String {
        if let Some(a) = &self.active {
            return a.url.to_string();
        }
        if let Some(u) = &self.url {
            return u.to_string();
        }
        match &self.kube {
            Some(k) => format!("(server of {})/readyz", k.path.display()),
            None => String::new(),
        }
    }

    pub fn config(&self) -> &GateConfig {
        &self.cfg
    }

    /// Loads the kubeconfig if it changed since the last load.
    fn reload_kubeconfig(&mut self) -> Result<(), anyhow::Error> {
        let Some(kube) = &mut self.kube else {
            return Ok(());
        };
        let path = kube.path.clone();
        let meta = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("--gate-kubeconfig {}: not written yet", path.display())
            } else {
                anyhow!("--gate-kubeconfig {}: {e}", path.display())
            }
        })?;
        let sig = (meta.len(), meta.modified().ok());
        if kube.loaded == Some(sig) && self.active.is_some() {
            return Ok(());
        }
        let creds = load_kubeconfig(&path)?;
        let url = match &self.url {
            Some(u) => u.clone(),
            None => {
                let Some(server) = &creds.server else {
                    bail!(
                        "--gate-kubeconfig {}: cluster.server: missing (and no --gate-url given)",
                        path.display()
                    );
                };
                let base = server.trim_end_matches('/');
                parse_url(
                    &format!("--gate-kubeconfig {}: cluster.server", path.display()),
                    &format!("{base}/readyz"),
                )?
            }
        };
        let client = build_client(&self.cfg, Some(&creds), Some(&path))?;
        self.active = Some(Active {
            client,
            url,
            auth: creds.auth.clone(),
        });
        if let Some(k) = &mut self.kube {
            k.loaded = Some(sig);
        }
        Ok(())
    }

    /// One attempt: Ok(status, failing checks or body excerpt) or Err(why).
    async fn probe_once(&mut self) -> Result<(u16, Option<serde_json::Value>), String> {
        if self.kube.is_some() {
            if let Err(e) = self.reload_kubeconfig() {
                return Err(e.to_string());
            }
        }
        let active = self
            .active
            .as_ref()
            .ok_or_else(|| "no kubeconfig loaded".to_string())?;
        let mut req = active.client.get(active.url.clone());
        match &active.auth {
            Some(Auth::Bearer(t)) => req = req.bearer_auth(t),
            Some(Auth::Basic(u, p)) => req = req.basic_auth(u, Some(p)),
            None => {}
        }
        let timeout = self.cfg.attempt_timeout;
        let fut = async {
            let resp = req.send().await.map_err(|e| error_chain(&e))?;
            let status = resp.status().as_u16();
            let detail = if status != self.cfg.expect_status {
                // Short bodies only: the apiserver's readyz lists its failing checks as "[-]name failed".
                let body = tokio::time::timeout(Duration::from_millis(500), resp.text())
                    .await
                    .ok()
                    .and_then(|r| r.ok());
                body.map(|b| body_detail(&b))
            } else {
                None
            };
            Ok::<_, String>((status, detail))
        };
        match tokio::time::timeout(timeout + Duration::from_millis(200), fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        }
    }
}

/// From a non-ready answer: the failing readyz checks, else the body's start.
fn body_detail(body: &str) -> serde_json::Value {
    let failing: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[-]"))
        .map(|l| l.trim_end_matches(" failed: reason withheld").trim())
        .collect();
    if !failing.is_empty() {
        return json!({ "failing": failing });
    }
    let mut b: String = body.chars().take(200).collect();
    if body.chars().count() > 200 {
        b.push('…');
    }
    json!({ "body": b.trim() })
}

fn parse_url(field: &str, s: &str) -> Result<Url, anyhow::Error> {
    let u = Url::parse(s).map_err(|e| anyhow!("{field} {s:?}: not a URL: {e}"))?;
    match u.scheme() {
        "http" | "https" => {}
        other => bail!("{field} {s:?}: scheme {other:?} is not http or https"),
    }
    if u.host_str().is_none_or(str::is_empty) {
        bail!("{field} {s:?}: no host");
    }
    if u.port() == Some(0) {
        bail!("{field} {s:?}: port 0 is no port a server listens on");
    }
    Ok(u)
}

/// "error sending request: client error (Connect): tcp connect error: Connection refused"
fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn build_client(
    cfg: &GateConfig,
    creds: Option<&Creds>,
    kc: Option<&Path>,
) -> Result<reqwest::Client, anyhow::Error> {
    let field = |f: &str| match kc {
        Some(p) => format!("--gate-kubeconfig {}: {f}", p.display()),
        None => f.to_string(),
    };
    let insecure = cfg.insecure || creds.is_some_and(|c| c.insecure);
    let ca = creds.and_then(|c| c.ca_pem.as_ref());
    // Certificates and keys are only fully parsed when a client is built: build
    // one without the client identity first, so that an error names the right field.
    let base = || -> Result<reqwest::ClientBuilder, anyhow::Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.attempt_timeout)
            .connect_timeout(cfg.attempt_timeout)
            .pool_max_idle_per_host(0);
        if let Some(ca) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(|e| {
                anyhow!(
                    "{}: not a PEM certificate: {}",
                    field(&ca.field),
                    error_text(&e)
                )
            })?;
            if certs.is_empty() {
                bail!("{}: no PEM certificate in it", field(&ca.field));
            }
            b = b.tls_built_in_root_certs(false);
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        if insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b)
    };
    let what = ca.map(|p| p.field.as_str()).unwrap_or("gate");
    let client = base()?.build().map_err(|e| {
        anyhow!(
            "{}: cannot build the HTTP client: {}",
            field(what),
            error_text(&e)
        )
    })?;
    let Some(id) = creds.and_then(|c| c.identity_pem.as_ref()) else {
        return Ok(client);
    };
    let ident = reqwest::Identity::from_pem(&id.pem).map_err(|e| {
        anyhow!(
            "{}: not a PEM certificate and key: {}",
            field(&id.field),
            error_text(&e)
        )
    })?;
    base()?.identity(ident).build().map_err(|e| {
        anyhow!(
            "{}: not a usable certificate and key: {}",
            field(&id.field),
            error_text(&e)
        )
    })
}

fn error_text(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

// ---------------------------------------------------------------- kubeconfig

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeConfig {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    #[serde(default)]
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Cluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify")]
    insecure: bool,
}

#[derive(Deserialize)]
struct NamedUser {
    #[serde(default)]
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    #[serde(default)]
    name: String,
    context: Context,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

struct Pem {
    field: String,
    pem: Vec<u8>,
}

struct Creds {
    server: Option<String>,
    ca_pem: Option<Pem>,
    identity_pem: Option<Pem>,
    auth: Option<Auth>,
    insecure: bool,
}

/// Reads the credentials of the current context (or of the only/first
/// cluster and user when there is no current context).
fn load_kubeconfig(path: &Path) -> Result<Creds, anyhow::Error> {
    let d = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("--gate-kubeconfig {d}: {e}"))?;
    let kc: KubeConfig = serde_yaml::from_str(&text).map_err(|e| {
        anyhow!(
            "--gate-kubeconfig {d}: not a kubeconfig: {}",
            one_line(&e.to_string())
        )
    })?;
    let (cluster_name, user_name) = match kc.current_context.as_deref().filter(|s| !s.is_empty()) {
        Some(cur) => {
            let Some(ctx) = kc.contexts.iter().find(|c| c.name == cur) else {
                bail!("--gate-kubeconfig {d}: current-context {cur:?}: no such entry in contexts");
            };
            (
                Some(ctx.context.cluster.clone()),
                Some(ctx.context.user.clone()),
            )
        }
        None => (None, None),
    };
    let cluster = match &cluster_name {
        Some(n) => kc.clusters.iter().find(|c| &c.name == n).ok_or_else(|| {
            anyhow!("--gate-kubeconfig {d}: contexts[{:?}].context.cluster {n:?}: no such entry in clusters", kc.current_context.as_deref().unwrap_or(""))
        })?,
        None => kc.clusters.first().ok_or_else(|| anyhow!("--gate-kubeconfig {d}: clusters: none given"))?,
    };
    let user = match &user_name {
        Some(n) if !n.is_empty() => Some(kc.users.iter().find(|u| &u.name == n).ok_or_else(|| {
            anyhow!("--gate-kubeconfig {d}: contexts[{:?}].context.user {n:?}: no such entry in users", kc.current_context.as_deref().unwrap_or(""))
        })?),
        Some(_) => None,
        None => kc.users.first(),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let cprefix = format!("clusters[{:?}].cluster", cluster.name);
    let c = &cluster.cluster;
    if let Some(s) = &c.server {
        parse_url(&format!("--gate-kubeconfig {d}: {cprefix}.server"), s)?;
    }
    let ca_pem = pem_field(
        path,
        base,
        &cprefix,
        "certificate-authority",
        c.ca_data.as_deref(),
        c.ca_file.as_deref(),
    )?;
    let mut identity_pem = None;
    let mut auth = None;
    if let Some(u) = user {
        let uprefix = format!("users[{:?}].user", u.name);
        let u2 = &u.user;
        let cert = pem_field(
            path,
            base,
            &uprefix,
            "client-certificate",
            u2.cert_data.as_deref(),
            u2.cert_file.as_deref(),
        )?;
        let key = pem_field(
            path,
            base,
            &uprefix,
            "client-key",
            u2.key_data.as_deref(),
            u2.key_file.as_deref(),
        )?;
        match (cert, key) {
            (Some(c), Some(k)) => {
                if !String::from_utf8_lossy(&k.pem).contains("PRIVATE KEY-----") {
                    bail!(
                        "--gate-kubeconfig {d}: {}: no PEM private key in it",
                        k.field
                    );
                }
                let mut pem = c.pem;
                if !pem.ends_with(b"\n") {
                    pem.push(b'\n');
                }
                pem.extend_from_slice(&k.pem);
                identity_pem = Some(Pem {
                    field: format!("{} + {}", c.field, k.field),
                    pem,
                });
            }
            (Some(c), None) => bail!(
                "--gate-kubeconfig {d}: {}: given without a client-key",
                c.field
            ),
            (None, Some(k)) => bail!(
                "--gate-kubeconfig {d}: {}: given without a client-certificate",
                k.field
            ),
            (None, None) => {}
        }
        if let Some(t) = u2.token.as_deref().filter(|t| !t.is_empty()) {
            auth = Some(Auth::Bearer(t.trim().to_string()));
        } else if let Some(f) = &u2.token_file {
            let p = base.join(f);
            let t = std::fs::read_to_string(&p).map_err(|e| {
                anyhow!(
                    "--gate-kubeconfig {d}: {uprefix}.tokenFile {}: {e}",
                    p.display()
                )
            })?;
            auth = Some(Auth::Bearer(t.trim().to_string()));
        } else if let (Some(un), Some(pw)) = (&u2.username, &u2.password) {
            auth = Some(Auth::Basic(un.clone(), pw.clone()));
        }
    }
    Ok(Creds {
        server: c.server.clone(),
        ca_pem,
        identity_pem,
        auth,
        insecure: c.insecure,
    })
}

/// A PEM given inline as base64 `NAME-data` or as a file `NAME`.
fn pem_field(
    kc: &Path,
    base: &Path,
    prefix: &str,
    name: &str,
    data: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Pem>, anyhow::Error> {
    let d = kc.display();
    if let Some(b64) = data.filter(|s| !s.trim().is_empty()) {
        let field = format!("{prefix}.{name}-data");
        let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|e| anyhow!("--gate-kubeconfig {d}: {field}: not base64: {e}"))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
            bail!("--gate-kubeconfig {d}: {field}: not PEM after base64 decoding");
        }
        return Ok(Some(Pem { field, pem }));
    }
    if let Some(f) = file.filter(|s| !s.is_empty()) {
        let field = format!("{prefix}.{name}");
        let p = base.join(f);
        let pem = std::fs::read(&p)
            .map_err(|e| anyhow!("--gate-kubeconfig {d}: {field} {}: {e}", p.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
            bail!("--gate-kubeconfig {d}: {field} {}: not PEM", p.display());
        }
        return Ok(Some(Pem { field, pem }));
    }
    Ok(None)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- the running gate

type Callback = Box<dyn FnOnce(GateOutcome) + Send>;

/// What the gate has seen so far (for "still waiting" lines).
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The URL probed (or what it will be, from a kubeconfig not written yet).
    pub url: String,
    pub attempts: u64,
    /// The last attempt's result: "status 503", "connection refused", ...
    pub last: Option<String>,
    pub timeout: Option<Duration>,
}

struct Shared {
    open: AtomicBool,
    progress: Mutex<Progress>,
    tx: watch::Sender<Option<GateOutcome>>,
    callbacks: Mutex<Vec<Callback>>,
    stop: watch::Sender<bool>,
    timeout_action: TimeoutAction,
}

/// A handle on the running gate; clones share it.
#[derive(Clone)]
pub struct GateHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateHandle")
            .field("outcome", &self.outcome())
            .finish()
    }
}

impl GateHandle {
    /// True once the probe passed or the gate timed out. One atomic load.
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    pub fn outcome(&self) -> Option<GateOutcome> {
        *self.shared.tx.borrow()
    }

    /// Resolves when the gate opens or times out. Never resolves for a gate
    /// stopped before either (see [`GateHandle::stop`]).
    pub async fn wait(&self) -> GateOutcome {
        let mut rx = self.shared.tx.subscribe();
        let r = rx
            .wait_for(Option::is_some)
            .await
            .map(|v| v.expect("wait_for Some"));
        match r {
            Ok(v) => v,
            Err(_) => std::future::pending().await,
        }
    }

    /// What the gate has seen so far.
    pub fn progress(&self) -> Progress {
        self.shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_progress(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner()));
    }

    /// What hooks do if the gate times out (from the config).
    pub fn timeout_action(&self) -> TimeoutAction {
        self.shared.timeout_action
    }

    /// Calls `f` once with the outcome, from the gate's task when it
    /// resolves, or now if it already has. For the tracer thread: e.g. to
    /// wake its wait loop so that held syscalls are released at once.
    pub fn on_resolved(&self, f: impl FnOnce(GateOutcome) + Send + 'static) {
        let mut cbs = self
            .shared
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(o) = self.outcome() {
            drop(cbs);
            f(o);
        } else {
            cbs.push(Box::new(f));
        }
    }

    /// Stops probing (the target exited). An unresolved gate stays closed;
    /// the timeline says `gate_stopped`.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// A gate that is open from the start (no --gate-url/--gate-kubeconfig):
    /// hooks run at once, nothing is held. Emits nothing.
    pub fn already_open() -> GateHandle {
        let h = GateHandle::new(TimeoutAction::RunHooks);
        h.resolve(GateOutcome::Opened { at_ms: 0 });
        h
    }

    fn new(timeout_action: TimeoutAction) -> GateHandle {
        GateHandle {
            shared: Arc::new(Shared {
                open: AtomicBool::new(false),
                progress: Mutex::new(Progress::default()),
                tx: watch::channel(None).0,
                callbacks: Mutex::new(Vec::new()),
                stop: watch::channel(false).0,
                timeout_action,
            }),
        }
    }

    fn resolve(&self, o: GateOutcome) {
        let cbs = {
            let mut cbs = self
                .shared
                .callbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.open.store(true, Ordering::Release);
            self.shared.tx.send_replace(Some(o));
            std::mem::take(&mut *cbs)
        };
        for f in cbs {
            f(o);
        }
    }
}

/// Starts probing on the current tokio runtime (panics outside one).
/// Emits `gate_start`, one `probe` per attempt, then `gate_open` or
/// `gate_timeout` (or `gate_stopped`).
pub fn start(prepared: PreparedGate, timeline: Timeline) -> GateHandle {
    use tracing::Instrument as _;
    let handle = GateHandle::new(prepared.cfg.timeout_action);
    let h = handle.clone();
    let span = tracing::debug_span!("gate", url = %prepared.describe_url());
    tokio::spawn(async move { run(prepared, timeline, h).await }.instrument(span));
    handle
}

/// Says on stderr, once after [`REMIND_FIRST`] and then every
/// [`REMIND_EVERY`], that the gate is still waiting, on what, and what waits
/// on it (`waiting()`: e.g. the held syscalls), until it opens, times out or
/// is stopped.
pub async fn remind(h: GateHandle, waiting: impl Fn() -> Option<String>) {
    let t0 = tokio::time::Instant::now();
    let mut stop_rx = h.shared.stop.subscribe();
    let mut next = REMIND_FIRST;
    loop {
        tokio::select! {
            _ = h.wait() => return,
            _ = stop_rx.wait_for(|s| *s) => return,
            _ = tokio::time::sleep_until(t0 + next) => {}
        }
        let p = h.progress();
        let last = p
            .last
            .as_deref()
            .map(|l| format!("last probe: {l}; "))
            .unwrap_or_default();
        let then = match p.timeout {
            Some(t) => format!("gives up after {} s (--gate-timeout)", t.as_secs_f64()),
            None => "waits for ever (--gate-timeout 0)".into(),
        };
        let what = waiting().map(|w| format!("; {w}")).unwrap_or_default();
        tracing::info!(
            target: crate::log::NOTICE,
            "gate: still waiting for {} after {} s ({last}{} attempts){what}; {then}",
            p.url,
            next.as_secs(),
            p.attempts
        );
        next += REMIND_EVERY;
    }
}

async fn run(mut g: PreparedGate, tl: Timeline, h: GateHandle) {
    let cfg = g.cfg.clone();
    let started = Instant::now();
    let deadline = cfg.timeout.map(|d| tokio::time::Instant::now() + d);
    h.set_progress(|p| {
        p.url = g.describe_url();
        p.timeout = cfg.timeout;
    });
    let mut stop_rx = h.shared.stop.subscribe();
    tl.emit(
        "gate_start",
        json!({
            "url": g.describe_url(),
            "kubeconfig": cfg.kubeconfig.as_ref().map(|p| p.display().to_string()),
            "expect_status": cfg.expect_status,
            "successes": cfg.successes,
            "interval_ms": cfg.interval.as_millis() as u64,
            "attempt_timeout_ms": cfg.attempt_timeout.as_millis() as u64,
            "timeout_ms": cfg.timeout.map(|d| d.as_millis() as u64),
            "timeout_action": cfg.timeout_action.as_str(),
        }),
    );
    let max_interval = MAX_INTERVAL.max(cfg.interval);
    let mut interval = cfg.interval;
    let mut attempt: u64 = 0;
    let mut completed: u64 = 0;
    let mut consecutive = 0u32;
    let mut last: serde_json::Value = serde_json::Value::Null;

    let until_deadline = || async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };

    loop {
        attempt += 1;
        let t0 = Instant::now();
        let res = tokio::select! {
            r = g.probe_once() => r,
            _ = until_deadline() => break,
            _ = stop_rx.wait_for(|s| *s) => { tl.emit("gate_stopped", json!({"attempts": completed})); return; }
        };
        let latency_ms = t0.elapsed().as_millis() as u64;
        completed = attempt;
        let ok = match res {
            Ok((status, detail)) => {
                let ok = status == cfg.expect_status;
                let mut f = json!({"attempt": attempt, "status": status, "ok": ok, "latency_ms": latency_ms});
                if let Some(serde_json::Value::Object(m)) = detail {
                    f.as_object_mut().unwrap().extend(m);
                }
                tl.emit("probe", f);
                tracing::debug!(attempt, status, latency_ms, "probe");
                last = json!({"status": status});
                h.set_progress(|p| {
                    p.url = g.describe_url();
                    p.attempts = attempt;
                    p.last = Some(format!("status {status}"));
                });
                ok
            }
            Err(e) => {
                tl.emit(
                    "probe",
                    json!({"attempt": attempt, "error": e, "ok": false, "latency_ms": latency_ms}),
                );
                tracing::debug!(attempt, error = %e, latency_ms, "probe");
                h.set_progress(|p| {
                    p.url = g.describe_url();
                    p.attempts = attempt;
                    p.last = Some(e.clone());
                });
                last = json!({"error": e});
                false
            }
        };
        if ok {
            consecutive += 1;
            if consecutive >= cfg.successes {
                let at_ms = tl.t_ms();
                tl.emit(
                    "gate_open",
                    json!({"attempts": attempt, "url": g.describe_url()}),
                );
                tracing::info!(
                    target: crate::log::NOTICE,
                    "gate: open after {:.1} s ({} answered {} at attempt {attempt})",
                    started.elapsed().as_secs_f64(),
                    g.describe_url(),
                    cfg.expect_status
                );
                h.resolve(GateOutcome::Opened { at_ms });
                return;
            }
            interval = cfg.interval;
        } else {
            consecutive = 0;
        }
        let wait = interval;
        if !ok {
            interval = (interval * 3 / 2).min(max_interval);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = until_deadline() => break,
            _ = stop_rx.wait_for(|s| *s) => { tl.emit("gate_stopped", json!({"attempts": completed})); return; }
        }
    }
    // The deadline passed before the probe did.
    let at_ms = tl.t_ms();
    let mut f = json!({
        "attempts": completed,
        "timeout_ms": cfg.timeout.map(|d| d.as_millis() as u64),
        "action": cfg.timeout_action.as_str(),
        "url": g.describe_url(),
    });
    if let serde_json::Value::Object(m) = last {
        for (k, v) in m {
            f.as_object_mut().unwrap().insert(format!("last_{k}"), v);
        }
    }
    tl.emit("gate_timeout", f);
    let p = h.progress();
    tracing::warn!(
        target: crate::log::NOTICE,
        "gate: timed out after {} s waiting for {} ({}{completed} attempts); hooks {} (--gate-timeout-action {})",
        cfg.timeout.unwrap_or_default().as_secs_f64(),
        g.describe_url(),
        p.last.map(|l| format!("last probe: {l}; ")).unwrap_or_default(),
        match cfg.timeout_action {
            TimeoutAction::RunHooks => "run now",
            TimeoutAction::SkipHooks => "are skipped",
        },
        cfg.timeout_action.as_str()
    );
    h.resolve(GateOutcome::TimedOut { at_ms });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_body_lists_failing_checks() {
        let body = "[+]ping ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[+]etcd ok\nreadyz check failed\n";
        assert_eq!(
            body_detail(body),
            json!({"failing": ["poststarthook/rbac/bootstrap-roles"]})
        );
        assert_eq!(
            body_detail("Service Unavailable"),
            json!({"body": "Service Unavailable"})
        );
    }

    #[test]
    fn url_must_be_http() {
        assert!(parse_url("--gate-url", "ftp://x/")
            .unwrap_err()
            .to_string()
            .contains("--gate-url"));
        assert!(parse_url("--gate-url", "http://127.0.0.1:6443/readyz").is_ok());
    }
}
