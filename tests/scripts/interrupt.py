"""Interrupts a command the way a user does, and says how it ended.

usage: interrupt.py [--via pty|group|kill] [--signal INT|TERM|HUP]
                    [--ready-file F] [--ready-text T] [--limit S] -- CMD [ARGS...]

--via pty (default): CMD runs as the foreground process group of a new
pseudo-terminal (its session leader, like a shell's job) and the user types
Ctrl-C (INT); other signals are sent to the foreground group as --via group.
--via group: the same terminal, and the signal goes to its foreground process
group with killpg: what the terminal itself does for Ctrl-C, and what a hangup
(HUP) or `kill -TERM -PGID` does. gVisor's pty has no signal characters
(runsc 20221219: typing ^C there only echoes it), so tests use this there.
--via kill: CMD runs in a pipe-connected child and only CMD gets the signal,
as from `kill PID`.

Ready: when --ready-text appears in --ready-file (e.g. '"kind":"hold"' in a
timeline), else in CMD's output. Prints one JSON line: how CMD ended
(signaled/signal/code), seconds from the signal to its end, and its output."""
import argparse
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--via", choices=["pty", "group", "kill"], default="pty")
ap.add_argument("--signal", default="INT")
ap.add_argument("--ready-file")
ap.add_argument("--ready-text", required=True)
ap.add_argument("--limit", type=float, default=60)
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
sig = getattr(signal, "SIG" + a.signal)

out = b""
if a.via in ("pty", "group"):
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
else:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid, fd = p.pid, p.stdout.fileno()
# gVisor's pty master can poll readable and then block once the other side is
# closed (where Linux gives EIO): never block on it.
os.set_blocking(fd, False)


def pump(timeout):
    """Reads what CMD printed for up to `timeout` s; False at EOF."""
    global out
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return True
    try:
        b = os.read(fd, 65536)
    except BlockingIOError:
        return True
    except OSError:  # EIO: the pty's other side is closed
        return False
    out += b
    return bool(b)


def ready():
    if a.ready_file:
        try:
            return a.ready_text in open(a.ready_file, errors="replace").read()
        except OSError:
            return False
    return a.ready_text.encode() in out


t0 = time.monotonic()
open_ = True
while not ready():
    if time.monotonic() - t0 > a.limit:
        os.kill(pid, signal.SIGKILL)
        print(json.dumps({"error": "never ready", "output": out.decode(errors="replace")}))
        sys.exit(1)
    if open_:
        open_ = pump(0.02)
    else:
        time.sleep(0.02)

t_sig = time.monotonic()
if a.via == "pty" and sig == signal.SIGINT:
    os.write(fd, b"\x03")  # the terminal's intr character (^C)
elif a.via in ("pty", "group"):
    os.killpg(os.getpgid(pid), sig)
else:
    os.kill(pid, sig)

status = None
while status is None:
    if time.monotonic() - t_sig > a.limit:
        if a.via == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        print(json.dumps({"error": f"still running {a.limit} s after the signal", "output": out.decode(errors="replace")}))
        sys.exit(1)
    if open_:
        open_ = pump(0.05)
    else:
        time.sleep(0.02)
    w, st = os.waitpid(pid, os.WNOHANG)
    if w == pid:
        status = st
secs = time.monotonic() - t_sig
while open_:
    n = len(out)
    open_ = pump(0.2)
    if len(out) == n:
        break
print(json.dumps({
    "signaled": os.WIFSIGNALED(status),
    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    "secs": round(secs, 3),
    "output": out.decode(errors="replace"),
}))
