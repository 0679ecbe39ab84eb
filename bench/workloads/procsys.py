"""N x open+read+close of one /proc/sys entry (as kubelet's os.ReadFile would).
usage: procsys.py PATH N   -> prints {"inner": seconds, "value": "..."}"""
import json, sys, time

path, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
v = None
for _ in range(n):
    with open(path, "rb") as f:
        v = f.read()
print(json.dumps({"inner": time.perf_counter() - t0, "value": v.decode().strip()}))
