"""Times N stat(2) calls on PATH in chunks of 50 and prints the median time
per call of the chunks, in microseconds: robust to a busy machine.
usage: statloop.py N PATH"""
import os
import sys
import time

n, path = int(sys.argv[1]), sys.argv[2]
per = []
for _ in range(max(1, n // 50)):
    t = time.perf_counter()
    for _ in range(50):
        os.stat(path)
    per.append((time.perf_counter() - t) / 50)
per.sort()
print(f"{per[len(per) // 2] * 1e6:.1f}")
