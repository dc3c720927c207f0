#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
python3 - <<'PY'
from datetime import datetime
styles = ["%Y-%m-%d", "%m/%d/%Y", "%d %B %Y", "%B %d, %Y", "%Y.%m.%d"]
def parse(text):
    for style in styles:
        try:
            return datetime.strptime(text, style).date()
        except ValueError:
            pass
    raise ValueError(text)
lines = [l.strip() for l in open("dates.txt") if l.strip()]
open("dates_iso.txt", "w").write("".join(parse(l).isoformat() + "\n" for l in lines))
PY
