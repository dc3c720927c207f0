#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
python3 - <<'PY'
import math
values = []
for line in open("access.log"):
    _, _, _, status, latency = line.split()
    if 200 <= int(status) < 300:
        values.append(int(latency.removesuffix("ms")))
values.sort()
open("p95.txt", "w").write(f"{values[math.ceil(0.95 * len(values)) - 1]}\n")
PY
