//! Hold rules: which connect(2) and execve(2) calls wait for the gate.

use anyhow::{bail, Result};
use shim::HoldRequest;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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
        let Ok(port) = port.parse::<u16>() else {
            bail!("--hold {s:?}: port {port:?} is not a number from 0 to 65535; {FORMS}");
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
    }

    #[test]
    fn bad_rules_name_the_accepted_forms() {
        for bad in [
            "connect:1.2.3.4",
            "connect:host.example:80",
            "listen:80",
            "exec:relative",
            "connect:1.2.3.4:99999",
        ] {
            let e = HoldRule::parse(bad).unwrap_err().to_string();
            assert!(e.contains("accepted forms"), "{bad}: {e}");
        }
    }
}
