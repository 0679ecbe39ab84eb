//! procps sysctl(8) under k3shim, as Kubernetes installers run it: `sysctl -p`
//! of their sysctl.d file and `sysctl -w`, inside gVisor (overlay and shadow
//! mode) and natively in shadow mode (the host's sysctls never change).
//!
//! procps stat()s an entry before writing it and refuses one whose mode has no
//! owner-write bit ("setting key ...: Invalid argument"), and exits 0 even when
//! a write failed: the test checks stderr, the modes and the values read back.

mod sandbox;

use sandbox::*;

/// The settings of the sysctl.d files that kubeadm's and k3s's docs,
/// kubespray, kind and the CIS hardening guides (90-kubelet.conf) install,
/// and common node tuning (rp_filter for Calico/Cilium, keepalives, swap).
const SETTINGS: [(&str, &str); 28] = [
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("vm.panic_on_oom", "0"),
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
    ("kernel.keys.maxkeys", "2000"),
    ("fs.inotify.max_user_instances", "8192"),
    ("fs.inotify.max_user_watches", "524288"),
    ("fs.inotify.max_queued_events", "1048576"),
    ("vm.max_map_count", "262144"),
    ("net.core.somaxconn", "32768"),
    ("net.netfilter.nf_conntrack_max", "131072"),
    (
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        "86400",
    ),
    ("net.ipv4.neigh.default.gc_thresh3", "8192"),
    ("net.ipv4.conf.all.forwarding", "1"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "2"),
    ("fs.file-max", "2097152"),
    ("vm.swappiness", "0"),
    ("net.ipv4.tcp_keepalive_time", "600"),
    // kubespray: the NodePort range; read back as the kernel prints it.
    ("net.ipv4.ip_local_reserved_ports", "30000-32767"),
    ("net.ipv4.ip_nonlocal_bind", "1"),
    ("net.ipv4.ip_local_port_range", "1024\t65000"),
];

/// Entries whose mode procps checks before writing: this gVisor's real ones
/// say 0444, the others are fake.
const STAT_BEFORE: [&str; 8] = [
    "vm/overcommit_memory",
    "net/core/somaxconn",
    "net/ipv4/ip_forward",
    "vm/max_map_count",
    "fs/inotify/max_user_watches",
    "net/ipv4/ip_local_reserved_ports",
    "net/ipv4/ip_nonlocal_bind",
    "net/ipv4/tcp_keepalive_time",
];

fn conf() -> String {
    let mut s = String::from("# an installer's /etc/sysctl.d/99-kubernetes.conf\n");
    for (k, v) in SETTINGS {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

fn script(k: &str, state: &str, tmp: &str, mode: &str) -> String {
    let keys: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
    format!(
        r#"set -u
T={tmp}; rm -rf {state} $T; mkdir -p $T
cat > $T/k8s.conf <<'CONF'
{conf}CONF
{k} run --mode {mode} --state {state} -- sh -c '
  {py} -c "import os,sys; [print(\"mode\", p, oct(os.stat(\"/proc/sys/\"+p).st_mode & 0o777)) for p in sys.argv[1:]]" {stat}
  sysctl -p $0/k8s.conf >/dev/null 2>$0/err; echo "sysctl -p rc=$?"
  sed "s/^/sysctl -p said: /" $0/err
  sysctl -n {keys} | sed "s/^/value /"
  sysctl -w vm.overcommit_memory=2 >/dev/null 2>&1; echo "after -w $(cat /proc/sys/vm/overcommit_memory)"
' $T
echo "k3shim rc=$?"
"#,
        conf = conf(),
        py = python(),
        stat = STAT_BEFORE.join(" "),
        keys = keys.join(" "),
    )
}

fn check(out: &str, err: &str) {
    let all = format!("{out}\n--- stderr\n{err}");
    assert!(out.contains("k3shim rc=0"), "{all}");
    for p in STAT_BEFORE {
        assert!(
            out.contains(&format!("mode {p} 0o644")),
            "{p} stats writable before any write: {all}"
        );
    }
    assert!(out.contains("sysctl -p rc=0"), "{all}");
    assert!(
        !out.contains("sysctl -p said"),
        "sysctl -p complained: {all}"
    );
    let values: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("value "))
        .collect();
    let want: Vec<&str> = SETTINGS.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, want, "every setting reads back: {all}");
    assert!(out.contains("after -w 2"), "sysctl -w works too: {all}");
}

#[test]
fn sysctl_p_of_a_kubernetes_sysctl_d_file_works_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    for mode in ["overlay", "shadow"] {
        let o = gvisor(&script(
            &k3shim().display().to_string(),
            "/tmp/ksysctl-state",
            "/tmp/ksysctl",
            mode,
        ));
        check(&stdout(&o), &stderr(&o));
    }
}

#[test]
fn sysctl_p_of_a_kubernetes_sysctl_d_file_works_natively_in_shadow_mode() {
    let real = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/{}", fakefs::sysctl_name_to_path(k)))
            .unwrap_or_default()
    };
    let before: Vec<String> = SETTINGS.iter().map(|(k, _)| real(k)).collect();
    let host = host_sysctls();
    let st = scratch("sysctl-tool");
    let o = native(&script(
        &k3shim().display().to_string(),
        &st.join("s").display().to_string(),
        &st.join("t").display().to_string(),
        "shadow",
    ));
    check(&stdout(&o), &stderr(&o));
    let after: Vec<String> = SETTINGS.iter().map(|(k, _)| real(k)).collect();
    assert_eq!(after, before, "a host sysctl changed");
    assert_eq!(host_sysctls(), host);
}
