"""stat walk: lstat every entry under the given roots (at most LIMIT entries, 0 = all).
usage: statwalk.py LIMIT ROOT...   -> prints {"inner": seconds, "entries": n}"""
import json, os, sys, time

limit = int(sys.argv[1])
t0 = time.perf_counter()
n = 0
for root in sys.argv[2:]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            n += 1
            if limit and n >= limit:
                break
        if limit and n >= limit:
            break
print(json.dumps({"inner": time.perf_counter() - t0, "entries": n}))
