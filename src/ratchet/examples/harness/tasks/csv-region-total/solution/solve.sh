#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
python3 - <<'PY'
import csv
with open("sales.csv", newline="") as f:
    total = sum(float(r["amount"]) for r in csv.DictReader(f)
                if r["region"].strip().lower() == "west")
open("west_total.txt", "w").write(f"{total:.2f}\n")
PY
