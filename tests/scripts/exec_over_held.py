"""One thread of this process waits in a held execve while another thread of
it execs /bin/echo, which ends every other thread (the kernel's rule for
execve in a multi-threaded process).

usage: exec_over_held.py leader|thread HELD_PATH
  leader: the main thread (the thread-group leader) is held; a second thread execs.
  thread: a second thread is held; the leader execs.
A thread is held once it is in a ptrace stop ('t' in /proc/PID/task/TID/stat)."""
import ctypes
import os
import sys
import threading
import time

mode, held = sys.argv[1], sys.argv[2]
pid = os.getpid()
libc = ctypes.CDLL(None, use_errno=True)


def held_exec():
    # Through ctypes, which lets go of the GIL (os.execv keeps it, and the
    # other thread could never run).
    argv = (ctypes.c_char_p * 2)(held.encode(), None)
    libc.execv(held.encode(), argv)
    sys.exit(f"execv {held}: errno {ctypes.get_errno()}")


def wait_held(tid):
    while True:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("t", "T"):
            return
        time.sleep(0.005)


if mode == "leader":
    def other():
        wait_held(pid)
        os.execv("/bin/echo", ["echo", "a thread exec'd over the held leader"])

    threading.Thread(target=other).start()
    held_exec()
else:
    tids = []
    ready = threading.Event()

    def other():
        tids.append(threading.get_native_id())
        ready.set()
        held_exec()

    threading.Thread(target=other).start()
    ready.wait()
    wait_held(tids[0])
    os.execv("/bin/echo", ["echo", "the leader exec'd over a held thread"])
