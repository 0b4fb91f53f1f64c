"""Reads meson test logs and prints one closing line: "N passed, N failed, N skipped".

A test program that prints its own "N passed, N failed[, N skipped]" line contributes its case
counts; any other test counts as one case (a meson SKIP as one skipped). An argument that is not a
meson JSON log (e.g. the output of fuzz/run.sh) contributes its last such line, or one failure
when it has none."""
import json
import re
import sys

LINE = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?", re.M)
passed = failed = skipped = 0
for path in sys.argv[1:]:
    build = path.split("/")[0]
    if not path.endswith(".json"):
        try:
            with open(path) as f:
                counts = LINE.findall(f.read())
        except FileNotFoundError:
            counts = []
        if counts:
            passed += int(counts[-1][0])
            failed += int(counts[-1][1])
            skipped += int(counts[-1][2] or 0)
        else:
            failed += 1
            print(f"failed: no result line in {path}")
        continue
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        failed += 1
        print(f"failed: no test log {path}")
        continue
    for r in records:
        counts = LINE.findall(r.get("stdout") or "")
        ok = r["result"] in ("OK", "EXPECTEDFAIL")
        if r["result"] == "SKIP":
            skipped += 1
            continue
        if counts:
            p, f_, s_ = (int(c or 0) for c in counts[-1])
            passed += p
            failed += f_
            skipped += s_
            if not ok and f_ == 0:
                failed += 1  # crashed or timed out after its last report
        elif ok:
            passed += 1
        else:
            failed += 1
        if not ok:
            print(f"failed: {build} {r['name']} ({r['result']})")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
