"""kine-like sqlite: N autocommit inserts of 512-byte values in WAL mode, then N point reads.
usage: sqlite_kine.py DBDIR N   -> prints {"inner": seconds} on stdout"""
import json, os, random, sqlite3, sys, time

d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
db = os.path.join(d, "state.db")
for suffix in ("", "-wal", "-shm"):
    try:
        os.unlink(db + suffix)
    except FileNotFoundError:
        pass
t0 = time.perf_counter()
c = sqlite3.connect(db, isolation_level=None)  # autocommit: one transaction per statement
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB)")
c.execute("CREATE INDEX kine_name ON kine (name)")
rnd = random.Random(1)
for i in range(n):
    c.execute("INSERT INTO kine (name, value) VALUES (?, ?)", ("/registry/k/%06d" % i, rnd.randbytes(512)))
for i in range(n):
    row = c.execute("SELECT id, value FROM kine WHERE name = ?", ("/registry/k/%06d" % rnd.randrange(n),)).fetchone()
    assert row is not None and len(row[1]) == 512
c.close()
print(json.dumps({"inner": time.perf_counter() - t0}))
