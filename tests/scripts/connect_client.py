"""Connects to each 127.0.0.1:PORT given, in order, and prints
'PORT SECONDS' with the time since start when each connect completed."""
import socket
import sys
import time

t0 = time.monotonic()
for p in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", int(p)), timeout=60)
    print(p, "%.3f" % (time.monotonic() - t0), flush=True)
    s.close()
