"""Copy the /proc/sys tree as this process sees it (e.g. under k3shim) into DEST:
the directory proot binds over /proc/sys. usage: copytree.py SRC DEST"""
import os, sys

src, dst = sys.argv[1], sys.argv[2]
n = 0
for dirpath, dirnames, filenames in os.walk(src):
    rel = os.path.relpath(dirpath, src)
    os.makedirs(os.path.join(dst, rel), exist_ok=True)
    for f in filenames:
        try:
            with open(os.path.join(dirpath, f), "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        with open(os.path.join(dst, rel, f), "wb") as out:
            out.write(data)
        n += 1
print(n)
