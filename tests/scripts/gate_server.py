"""A readiness fixture: answers 503 on every path for its first NOT_READY
seconds, then 200 "ok" (or 503 forever with --never). With --tls DIR it serves
HTTPS with DIR/server.{crt,key} and requires a client certificate signed by
DIR/ca.crt. Also listens on extra plain TCP ports (--accept PORT) that accept
and close connections, for connect-hold tests. Writes 'ready' to stdout once
listening."""
import argparse
import http.server
import socket
import ssl
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--not-ready", type=float, default=1.5)
ap.add_argument("--never", action="store_true")
ap.add_argument("--tls")
ap.add_argument("--accept", type=int, action="append", default=[])
a = ap.parse_args()
start = time.monotonic()


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = not a.never and time.monotonic() - start >= a.not_ready
        body = b"ok" if ready else b"[-]informer-sync failed: not finished\nreadyz check failed"
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def acceptor(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        c.close()


for p in a.accept:
    threading.Thread(target=acceptor, args=(p,), daemon=True).start()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H)
if a.tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls + "/server.crt", a.tls + "/server.key")
    ctx.load_verify_locations(a.tls + "/ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
