"""k3shim bench driver: runs every workload under every tool, interleaved, and
prints one JSON object per measurement on stdout (progress goes to stderr).

`k3shim bench` writes this file and the workloads into a work directory and
runs it twice: natively, and inside `runsc --platform=ptrace --network=none do`
so that times are taken inside the sandbox and runsc's start-up is not
counted. usage: driver.py CONFIG.json
"""
import json, os, re, selectors, shutil, signal, subprocess, sys, time

cfg = json.load(open(sys.argv[1]))
ENV = cfg["env"]                   # "native" or "gvisor"
WORK = cfg["work"]                 # work directory (scripts, binaries)
SCRATCH = cfg["scratch"]           # scratch directory for this environment
K3SHIM = cfg["k3shim"]
PY = cfg["python"]
SIZES = cfg["sizes"]
REPS = cfg["reps"]
ONLY = cfg.get("only") or ""
FIX = cfg.get("fixtures")          # dir with standin, sysstress (or null)
REAL = "/proc/sys/vm/overcommit_memory"
FAKE = "/proc/sys/vm/panic_on_oom"

os.makedirs(SCRATCH, exist_ok=True)


def log(msg):
    print(f"[bench {ENV}] {msg}", file=sys.stderr, flush=True)


def emit(rec):
    rec["env"] = ENV
    print(json.dumps(rec), flush=True)


def have(prog):
    return shutil.which(prog) is not None


# ---- tools -----------------------------------------------------------------

STATE = os.path.join(SCRATCH, "state")
# The stand-in writes what kubelet writes (vm/overcommit_memory=1, ...): in
# overlay mode that makes those real entries fake. Its own state directory
# keeps the /proc/sys loops' "real entry" real in every repetition.
STATE_STANDIN = os.path.join(SCRATCH, "state-standin")
PROOT_TREE = os.path.join(SCRATCH, "proot-sys")


# Natively k3shim runs in shadow mode: the host's sysctls are never touched
# (the stand-in writes what kubelet writes).
MODE = ["--mode", "shadow"] if ENV == "native" else []


def tool_prefix(tool, state=STATE):
    if tool == "native":
        return []
    if tool == "k3shim":
        return [K3SHIM, "run", "--backend", "ptrace", "--state", state, *MODE, "--"]
    if tool == "k3shim-mount":
        # In gVisor mount namespaces do not isolate: --backend mount binds
        # sandbox-wide (one warning line); runs never overlap here.
        return [K3SHIM, "run", "--backend", "mount", "--state", state, *MODE, "--"]
    if tool == "k3shim-none":
        return [K3SHIM, "run", "--backend", "ptrace", "--state", state, *MODE, "--filter", "none", "--"]
    if tool == "proot":
        return ["proot", "-b", f"{PROOT_TREE}:/proc/sys"]
    if tool == "strace":
        return ["strace", "-f", "--seccomp-bpf", "-e", "trace=%file", "-o", "/dev/null"]
    raise ValueError(tool)


ALL_TOOLS = ["native", "k3shim", "k3shim-mount", "k3shim-none", "proot", "strace"]
# --tools: a subset, in this order (native always)
TOOLS = [t for t in ALL_TOOLS if not cfg.get("tools") or t == "native" or t in cfg["tools"]]


def real_fake_available():
    """Does the fake entry exist natively in this environment?"""
    return os.path.exists(FAKE)


def setup():
    """Seed k3shim's state and build proot's copy of the fake tree (not timed)."""
    notes = {}
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(STATE_STANDIN, ignore_errors=True)
    subprocess.run(tool_prefix("k3shim", STATE_STANDIN) + ["/bin/true"], capture_output=True, text=True)
    r = subprocess.run(tool_prefix("k3shim") + ["/bin/true"], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"k3shim warm-up failed: {r.stderr.strip()[-400:]}")
        notes["k3shim_setup"] = r.stderr.strip()[-400:]
    shutil.rmtree(PROOT_TREE, ignore_errors=True)
    # the copy is what a program sees of /proc/sys under k3shim (real + fake entries)
    r = subprocess.run(tool_prefix("k3shim") + [PY, os.path.join(WORK, "workloads/copytree.py"), "/proc/sys", PROOT_TREE],
                       capture_output=True, text=True)
    n = r.stdout.strip()
    if r.returncode != 0 or not os.path.exists(os.path.join(PROOT_TREE, "vm/panic_on_oom")):
        log(f"copying the fake tree under k3shim failed ({r.stderr.strip()[-300:]}); using a minimal tree")
        for rel, v in [("vm/overcommit_memory", "0\n"), ("vm/panic_on_oom", "0\n"), ("net/ipv4/ip_forward", "0\n")]:
            os.makedirs(os.path.dirname(os.path.join(PROOT_TREE, rel)), exist_ok=True)
            if not os.path.exists(os.path.join(PROOT_TREE, rel)):
                open(os.path.join(PROOT_TREE, rel), "w").write(v)
        notes["proot_tree"] = "minimal"
    else:
        notes["proot_tree_entries"] = n
    return notes


# ---- measurement ------------------------------------------------------------

def vm_hwm_kib(pid):
    """VmHWM, or VmRSS where there is no VmHWM (gVisor): the caller keeps the max of samples."""
    vals = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    vals[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return vals.get("VmHWM", vals.get("VmRSS"))


def measure(cmd, timeout, ready_re=None, watch_rss=False):
    """Run cmd; wall time from launch to exit, or to the first stderr line matching
    ready_re (then the process group is stopped). Returns a dict."""
    out = {"ok": False}
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        out["error"] = str(e)
        return out
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, "out")
    sel.register(p.stderr, selectors.EVENT_READ, "err")
    bufs = {"out": b"", "err": b""}
    open_streams = 2
    rx = re.compile(ready_re.encode()) if ready_re else None
    hwm = None
    deadline = t0 + timeout
    ready_at = None
    while open_streams:
        now = time.perf_counter()
        if now > deadline:
            out["error"] = f"timeout after {timeout}s"
            break
        if watch_rss:
            h = vm_hwm_kib(p.pid)
            if h is not None:
                hwm = max(h, hwm or 0)
        for key, _ in sel.select(timeout=0.05 if watch_rss else min(1.0, deadline - now)):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            bufs[key.data] += chunk
            if rx and key.data == "err" and ready_at is None and rx.search(bufs["err"]):
                ready_at = time.perf_counter()
        if ready_at is not None:
            break
    end = ready_at if ready_at is not None else None
    if ready_at is not None or "error" in out:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    else:
        p.wait()
        end = time.perf_counter()
    sel.close()
    p.stdout.close()
    p.stderr.close()
    out["rc"] = p.returncode
    if "error" in out:
        pass
    elif rx is not None:
        out["ok"] = ready_at is not None
        if not out["ok"]:
            out["error"] = f"exited {p.returncode} before ready"
    else:
        out["ok"] = p.returncode == 0
        if not out["ok"]:
            out["error"] = f"exit {p.returncode}"
    if out["ok"]:
        out["wall"] = end - t0
    if hwm is not None:
        out["rss_kib"] = hwm
    for line in reversed(bufs["out"].decode(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                out.update({k: v for k, v in json.loads(line).items() if k in ("inner", "entries", "value", "ns_per_iter", "n", "round_trip_ns", "untraced_ns", "traced_ns", "stops")})
            except ValueError:
                pass
            break
    if not out["ok"]:
        out["stderr"] = bufs["err"].decode(errors="replace")[-600:]
        out["stdout"] = bufs["out"].decode(errors="replace")[-600:]
    return out


# ---- workloads ---------------------------------------------------------------

def py(script, *args):
    return [PY, os.path.join(WORK, "workloads", script), *map(str, args)]


def statwalk_roots():
    return sorted(os.path.join("/usr/lib", d) for d in os.listdir("/usr/lib") if d.startswith("python3"))


def workloads():
    """(name, tools, fn(tool) -> (cmd, kwargs, note))"""
    ws = []
    s = SIZES

    def sqlite(tool):
        return py("sqlite_kine.py", os.path.join(SCRATCH, f"db-{tool}"), s["sqlite"]), {"timeout": 900}, None
    ws.append(("sqlite", TOOLS, sqlite))

    roots = statwalk_roots()

    def statwalk(tool):
        return py("statwalk.py", s["statwalk_limit"], *roots), {"timeout": 900}, None
    ws.append(("statwalk", TOOLS, statwalk))

    def procsys_real(tool):
        return py("procsys.py", REAL, s["procsys"]), {"timeout": 900}, None
    ws.append(("procsys-real", TOOLS, procsys_real))

    def procsys_fake(tool):
        if tool in ("native", "strace") and not real_fake_available():
            return py("procsys.py", REAL, s["procsys"]), {"timeout": 900}, "real entry (fake one missing here)"
        return py("procsys.py", FAKE, s["procsys"]), {"timeout": 900}, None
    ws.append(("procsys-fake", TOOLS, procsys_fake))

    def dd_after_write(tool):
        # A shell writes a fake entry ("abc": refused everywhere, so natively the
        # host is untouched), then dd writes 1-byte blocks to its stdout, the
        # fd the write went through: under k3shim those writes must not stop.
        script = f"echo abc 2>/dev/null >{FAKE}; dd bs=1 count={s['dd_bytes']} if=/dev/zero 2>/dev/null >/dev/null"
        return ["/bin/sh", "-c", f"{script}; true"], {"timeout": 600}, None
    ws.append(("dd-after-fake-write", [t for t in TOOLS if t in ("native", "k3shim", "k3shim-mount")], dd_after_write))

    if FIX:
        standin = os.path.join(FIX, "standin")
        sysstress = os.path.join(FIX, "sysstress")

        def standin_cmd(tool, agent):
            data = os.path.join(SCRATCH, f"standin-{tool}-{'agent' if agent else 'noagent'}")
            shutil.rmtree(data, ignore_errors=True)
            c = [standin, "server", "--data-dir", data, "--https-listen-port", "0", "--supervisor-port", "0",
                 "--sync-ops", str(s["standin_ops"]), "--node-name", "bench"]
            if not agent:
                c.append("--disable-agent")
            else:
                c += ["--kubelet-arg=feature-gates=UserNamespacesSupport=false"]
            return c

        def standin_ready(tool):
            return standin_cmd(tool, False), {"timeout": 300, "ready_re": r'msg="k3s is up and running"', "state": STATE_STANDIN}, None
        ws.append(("standin", TOOLS, standin_ready))

        def standin_agent(tool):
            return standin_cmd(tool, True), {"timeout": 300, "ready_re": r'"Successfully registered node"', "state": STATE_STANDIN}, None
        ws.append(("standin-agent", [t for t in TOOLS if t in ("k3shim", "k3shim-mount", "k3shim-none")], standin_agent))

        def current(tool, rel):
            """The value the tool shows for /proc/sys/REL (sysstress wants the first VALUE; not timed)."""
            if tool == "proot":
                return open(os.path.join(PROOT_TREE, rel)).read().strip()
            if tool.startswith("k3shim"):
                r = subprocess.run(tool_prefix(tool) + ["/bin/cat", "/proc/sys/" + rel], capture_output=True, text=True)
                return r.stdout.strip()
            return open("/proc/sys/" + rel).read().strip()

        def stress(tool):
            vals = []
            for rel, allowed in (("vm/overcommit_memory", ["0", "1", "2"]), ("net/ipv4/ip_forward", ["0", "1"])):
                cur = current(tool, rel)
                vals.append(f"{rel}=" + ",".join([cur] + [v for v in allowed if v != cur]))
            # -modes without dirfd: under k3shim natively, openat on an O_DIRECTORY fd of
            # /proc/sys/vm reads "" for a real entry (engine bug, reported in bench/README.md)
            c = [sysstress, "-goroutines", "64", "-iterations", str(s["sysstress_iters"]), "-exec-every", "0",
                 "-modes", "open,openat,stackpath",
                 *vals]
            return c, {"timeout": 900, "watch_rss": tool.startswith("k3shim")}, None
        ws.append(("sysstress", TOOLS, stress))
    return [w for w in ws if ONLY in w[0]]


def floor_and_syscall_cost(rep):
    """The bare seccomp-trace round trip and k3shim's cost per intercepted syscall."""
    if ONLY and ONLY not in "floor":
        return
    n = SIZES["floor"]
    for mode in ("regs", "mem"):
        r = measure([os.path.join(WORK, "floor"), str(n), mode], 300)
        if r["ok"]:
            emit({"workload": "floor", "tool": mode, "rep": rep, **r})
    stat_path = "/usr/lib/os-release" if os.path.exists("/usr/lib/os-release") else "/etc/passwd"
    loops = [("open-real", "open", REAL), ("stat", "stat", stat_path),
             ("open-fake", "open", FAKE), ("stat-held", "stat", stat_path)]
    for name, op, path in loops:
        for tool in [t for t in TOOLS if t in ("native", "k3shim", "k3shim-mount")]:
            if tool == "native" and path == FAKE and not real_fake_available():
                path_used = REAL
            else:
                path_used = path
            loop = [os.path.join(WORK, "sysloop"), str(n), op, path_used]
            if name == "stat-held" and tool == "k3shim-mount":
                continue  # holds are measured with the ptrace backend
            if name == "stat-held" and tool == "k3shim":
                cmd = held_while(loop)
            else:
                cmd = tool_prefix(tool) + loop
            r = measure(cmd, 300)
            emit({"workload": f"sysloop-{name}", "tool": tool, "rep": rep, **r})


def held_while(loop):
    """k3shim running `loop` while another process of the traced tree is held
    (its exec of /usr/bin/true waits for a gate that never opens): what a hold
    costs everything else. The held process is killed once the loop is done."""
    tl = os.path.join(SCRATCH, "held.jsonl")
    if os.path.exists(tl):
        os.remove(tl)
    script = ('/usr/bin/true & while ! grep -q \'"kind":"hold"\' "$1"; do sleep 0.01; done; '
              'shift; "$@"; s=$?; kill -9 $!; exit $s')
    return [K3SHIM, "run", "--backend", "ptrace", "--state", STATE, *MODE, "--timeline", tl, "--gate-url", "http://127.0.0.1:9/",
            "--gate-timeout", "0", "--hold", "exec:/usr/bin/true", "--", "/bin/sh", "-c", script, "sh", tl] + loop


def main():
    notes = setup()
    notes["statwalk_roots"] = statwalk_roots()
    notes["fake_entry_native"] = real_fake_available()
    tools_avail = {t: (t in ("native", "k3shim", "k3shim-mount", "k3shim-none") or have(t)) for t in TOOLS}
    emit({"kind": "env", "notes": notes, "tools": tools_avail})
    ws = workloads()
    for rep in range(REPS):
        floor_and_syscall_cost(rep)
        for name, tools, fn in ws:
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]  # rotate so no tool always runs first
            for tool in order:
                if not tools_avail.get(tool, True):
                    continue
                cmd, kw, note = fn(tool)
                state = kw.pop("state", STATE)
                r = measure(tool_prefix(tool, state) + cmd, **kw)
                rec = {"workload": name, "tool": tool, "rep": rep, **r}
                if note:
                    rec["note"] = note
                emit(rec)
                log(f"rep {rep + 1}/{REPS} {name:14} {tool:12} " + (f"{r['wall']:.3f}s" if r["ok"] else f"FAILED {r.get('error')}"))


main()
