"""`k3shim bench --upstream`, part 2, run inside gVisor: the full k3s-like
server (kine, kube-apiserver, kubelet, kube-proxy) under k3shim, in its
steady state. Once kube-proxy is past its sysctls (the last start-up step;
the node registered well before), a WINDOW-second window measures k3shim's
own CPU time (utime+stime of the tracer process, all threads) and its RSS;
in "trace" mode the stopped syscalls instead (`k3shim trace` writes one line
per stopped syscall: lines added during the window). Prints one JSON object.

    python3 steady.py CONFIG.json    (k3shim, server, work, mode, window, startup_limit)
"""
import json, os, signal, subprocess, sys, threading, time

cfg = json.load(open(sys.argv[1]))
mode, window = cfg["mode"], float(cfg["window"])
work = os.path.join(cfg["work"], "steady-" + mode)
os.makedirs(work, exist_ok=True)
trace_file = os.path.join(work, "trace.txt")
server = [cfg["server"], "server", "--data-dir", os.path.join(work, "data"),
          "--write-kubeconfig", os.path.join(work, "k3s.yaml")]
common = ["--state", os.path.join(work, "state"), "--profile", "k3s",
          "--timeline", os.path.join(work, "timeline.jsonl")]
if mode == "trace":
    argv = [cfg["k3shim"], "trace", "-o", trace_file] + common + ["--"] + server
else:
    argv = [cfg["k3shim"], "run"] + common + ["--"] + server
log = open(os.path.join(work, "target.log"), "wb")
p = subprocess.Popen(argv, stdout=log, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
seen = {}
marks = {"node_registered": b"Successfully registered node",
         "kube_proxy_started": b"kube-proxy running in",
         "ready": b'msg="k3s is up and running"'}
t_launch = time.monotonic()
ready = threading.Event()


def reader():
    for line in p.stderr:
        log.write(line)
        for k, m in marks.items():
            if k not in seen and m in line:
                seen[k] = round(time.monotonic() - t_launch, 3)
        if "kube_proxy_started" in seen and "node_registered" in seen:
            ready.set()
    ready.set()


threading.Thread(target=reader, daemon=True).start()
hz = os.sysconf("SC_CLK_TCK")


def sample():
    with open("/proc/%d/stat" % p.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / hz
    rss = hwm = None
    with open("/proc/%d/status" % p.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    lines = None
    if mode == "trace" and os.path.exists(trace_file):
        with open(trace_file, "rb") as f:
            lines = sum(1 for _ in f)
    return {"t": time.monotonic(), "cpu_s": cpu, "rss_kib": rss, "hwm_kib": hwm, "trace_lines": lines}


out = {"mode": mode, "window_s": window, "argv": argv}
ok = ready.wait(float(cfg.get("startup_limit", 240))) and p.poll() is None \
    and "kube_proxy_started" in seen
out["milestones_s"] = dict(seen)
if ok:
    a = sample()
    rss_max = a["rss_kib"] or 0
    end = a["t"] + window
    while time.monotonic() < end and p.poll() is None:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        rss_max = max(rss_max, sample()["rss_kib"] or 0)
    b = sample()
    dt = b["t"] - a["t"]
    out.update({
        "ok": p.poll() is None,
        "measured_s": round(dt, 3),
        "tracer_cpu_s": round(b["cpu_s"] - a["cpu_s"], 3),
        "tracer_cpu_pct": round(100.0 * (b["cpu_s"] - a["cpu_s"]) / dt, 2),
        "tracer_rss_kib_end": b["rss_kib"],
        "tracer_rss_kib_max_sampled": rss_max,
        "tracer_hwm_kib": b["hwm_kib"],
    })
    if mode == "trace":
        out["stopped"] = b["trace_lines"] - a["trace_lines"]
        out["stopped_per_s"] = round(out["stopped"] / dt, 1)
else:
    out.update({"ok": False, "error": "the server did not reach its steady state (see %s)" % work})
p.send_signal(signal.SIGTERM)
try:
    p.wait(30)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
out["exit"] = p.returncode
print(json.dumps(out), flush=True)
