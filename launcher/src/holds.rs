//! Hold rules (which connect(2) and execve(2) calls wait), and [`Release`]:
//! when held syscalls continue.

use anyhow::{bail, Result};
use shim::HoldRequest;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const FORMS: &str = "accepted forms: connect:HOST:PORT (IPv4 or localhost), connect:[IPV6]:PORT, connect:unix:PATH, exec:PATH";

/// One --hold rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldRule {
    /// Any of these addresses (localhost is 127.0.0.1 and ::1) at this port.
    Connect {
        ips: Vec<IpAddr>,
        port: u16,
    },
    ConnectUnix {
        path: PathBuf,
    },
    Exec {
        path: PathBuf,
    },
}

impl HoldRule {
    pub fn parse(s: &str) -> Result<HoldRule> {
        if let Some(p) = s.strip_prefix("exec:") {
            if !p.starts_with('/') {
                bail!("--hold {s:?}: exec needs an absolute path; {FORMS}");
            }
            return Ok(HoldRule::Exec {
                path: PathBuf::from(p),
            });
        }
        let Some(rest) = s.strip_prefix("connect:") else {
            bail!("--hold {s:?}: unknown rule; {FORMS}");
        };
        if let Some(p) = rest.strip_prefix("unix:") {
            if p.is_empty() {
                bail!("--hold {s:?}: empty unix socket path; {FORMS}");
            }
            if !p.starts_with('/') && !p.starts_with('@') {
                // connect(2) resolves a relative name against each program's own cwd.
                bail!("--hold {s:?}: the unix socket path must be absolute (or @NAME for an abstract socket); {FORMS}");
            }
            return Ok(HoldRule::ConnectUnix {
                path: PathBuf::from(p),
            });
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            match r.split_once("]:") {
                Some((h, p)) => (h, p),
                None => bail!("--hold {s:?}: IPv6 needs [ADDR]:PORT; {FORMS}"),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => bail!("--hold {s:?}: missing :PORT; {FORMS}"),
            }
        };
        let port = match port.parse::<u16>() {
            Ok(0) => bail!("--hold {s:?}: port 0 is no port a program connects to; {FORMS}"),
            Ok(p) => p,
            Err(_) => bail!("--hold {s:?}: port {port:?} is not a number from 1 to 65535; {FORMS}"),
        };
        let ips = if host == "localhost" {
            vec!["127.0.0.1".parse()?, "::1".parse()?]
        } else {
            match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => bail!("--hold {s:?}: {host:?} is not an IP address (names other than localhost are not resolved); {FORMS}"),
            }
        };
        Ok(HoldRule::Connect { ips, port })
    }

    pub fn matches(&self, r: &HoldRequest) -> bool {
        match (self, r) {
            (HoldRule::Connect { ips, port }, HoldRequest::ConnectInet { addr }) => {
                addr.port() == *port && ips.iter().any(|ip| same_ip(*ip, addr))
            }
            (HoldRule::ConnectUnix { path }, HoldRequest::ConnectUnix { path: p }) => path == p,
            (HoldRule::Exec { path }, HoldRequest::Exec { path: p }) => path == p,
            _ => false,
        }
    }

    pub fn needs_connect(&self) -> bool {
        !matches!(self, HoldRule::Exec { .. })
    }
}

/// When held syscalls continue (`--release`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReleaseAt {
    /// Once the gate has opened (or timed out) and every hook has ended, so a
    /// held client sees what the hooks did (the default).
    #[default]
    AfterHooks,
    /// As soon as the gate opens (or times out), while hooks start.
    AtGate,
}

/// Whether held syscalls may continue, why, and what is held now. Shared by
/// the policy (on the tracer thread) and whoever decides (the gate, hooks,
/// k3shim's signal thread); opening it wakes the tracer, which then releases
/// every held syscall at once.
#[derive(Clone, Default)]
pub struct Release {
    inner: Arc<ReleaseInner>,
}

#[derive(Default)]
struct ReleaseInner {
    open: AtomicBool,
    reason: Mutex<Option<String>>,
    /// tid -> what it waits in (`connect:127.0.0.1:6443`).
    held: Mutex<BTreeMap<i32, String>>,
    waker: OnceLock<shim::Waker>,
}

impl Release {
    pub fn new() -> Release {
        Release::default()
    }

    /// Open from the start: nothing is ever held (no gate).
    pub fn already_open() -> Release {
        let r = Release::new();
        r.inner.open.store(true, Ordering::Release);
        r
    }

    /// The tracer is running: opening wakes it from now on. (Nothing is held
    /// before the tracer runs, and it asks `is_open` before every sleep.)
    pub fn set_waker(&self, w: shim::Waker) {
        let _ = self.inner.waker.set(w);
    }

    /// One atomic load (asked by the tracer before each sleep while something is held).
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Lets held syscalls continue (the first reason is kept) and says so on
    /// stderr when anything is held. Returns false if it was open already.
    pub fn open(&self, reason: &str) -> bool {
        {
            let mut r = self.inner.reason.lock().unwrap_or_else(|e| e.into_inner());
            if self.inner.open.swap(true, Ordering::AcqRel) {
                return false;
            }
            *r = Some(reason.to_string());
        }
        let held = self.held();
        if !held.is_empty() {
            tracing::info!(
                target: crate::log::NOTICE,
                "holds: releasing {}: {reason}",
                describe_held(&held)
            );
        }
        self.wake();
        true
    }

    fn wake(&self) {
        if let Some(w) = self.inner.waker.get() {
            w.wake();
        }
    }

    /// Why held syscalls were let go, once they were.
    pub fn reason(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What is held now (`what` of each held syscall).
    pub fn held(&self) -> Vec<String> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The policy's record of hold and release events.
    pub fn note_held(&self, tid: i32, what: Option<&str>) {
        let mut h = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        match what {
            Some(w) => h.insert(tid, w.to_string()),
            None => h.remove(&tid),
        };
    }
}

/// "1 held syscall (exec:/usr/bin/true)", "3 held syscalls (connect:..., ...)".
pub fn describe_held(held: &[String]) -> String {
    let mut kinds: Vec<&str> = held.iter().map(String::as_str).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let s = if held.len() == 1 { "" } else { "s" };
    format!("{} held syscall{s} ({})", held.len(), kinds.join(", "))
}

fn same_ip(rule: IpAddr, addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    // An IPv4-mapped IPv6 address is the IPv4 one.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    ip == rule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> HoldRequest {
        HoldRequest::ConnectInet {
            addr: s.parse().unwrap(),
        }
    }

    #[test]
    fn connect_rules_match_address_and_port() {
        let r = HoldRule::parse("connect:127.0.0.1:6443").unwrap();
        assert!(r.matches(&inet("127.0.0.1:6443")));
        assert!(r.matches(&inet("[::ffff:127.0.0.1]:6443")));
        assert!(!r.matches(&inet("127.0.0.1:6444")));
        let l = HoldRule::parse("connect:localhost:6443").unwrap();
        assert!(l.matches(&inet("[::1]:6443")));
        let v6 = HoldRule::parse("connect:[::1]:80").unwrap();
        assert!(v6.matches(&inet("[::1]:80")));
    }

    #[test]
    fn unix_and_exec_rules_match_paths() {
        let u = HoldRule::parse("connect:unix:/run/k3s/containerd.sock").unwrap();
        assert!(u.matches(&HoldRequest::ConnectUnix {
            path: "/run/k3s/containerd.sock".into()
        }));
        let e = HoldRule::parse("exec:/usr/bin/kubectl").unwrap();
        assert!(e.matches(&HoldRequest::Exec {
            path: "/usr/bin/kubectl".into()
        }));
        assert!(!e.needs_connect());
        let a = HoldRule::parse("connect:unix:@k3s-abstract").unwrap();
        assert!(a.matches(&HoldRequest::ConnectUnix {
            path: "@k3s-abstract".into()
        }));
    }

    #[test]
    fn a_release_opens_once_keeps_its_first_reason_and_tracks_what_is_held() {
        let r = Release::new();
        assert!(!r.is_open());
        r.note_held(7, Some("exec:/usr/bin/true"));
        r.note_held(8, Some("exec:/usr/bin/true"));
        assert_eq!(
            describe_held(&r.held()),
            "2 held syscalls (exec:/usr/bin/true)"
        );
        assert!(r.open("the gate timed out"));
        assert!(!r.open("k3shim got SIGINT"));
        assert!(r.is_open());
        assert_eq!(r.reason().as_deref(), Some("the gate timed out"));
        r.note_held(7, None);
        assert_eq!(r.held(), vec!["exec:/usr/bin/true".to_string()]);
        assert!(Release::already_open().is_open());
    }

    #[test]
    fn bad_rules_name_the_accepted_forms() {
        for bad in [
            "connect:1.2.3.4",
            "connect:host.example:80",
            "listen:80",
            "exec:relative",
            "connect:1.2.3.4:99999",
            "connect:127.0.0.1:0",
            "connect:unix:run/k3s.sock",
        ] {
            let e = HoldRule::parse(bad).unwrap_err().to_string();
            assert!(e.contains("accepted forms"), "{bad}: {e}");
        }
    }
}
