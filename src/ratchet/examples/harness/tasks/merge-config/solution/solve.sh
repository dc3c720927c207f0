#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
python3 - <<'PY'
import json
def merge(a, b):
    out = dict(a)
    for k, v in b.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
merged = merge(json.load(open("base.json")), json.load(open("override.json")))
json.dump(merged, open("merged.json", "w"), indent=2)
PY
