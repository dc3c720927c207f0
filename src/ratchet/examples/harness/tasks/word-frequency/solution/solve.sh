#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
python3 - <<'PY'
import re
from collections import Counter
counts = Counter(re.findall(r"[a-z]+", open("story.txt").read().lower()))
top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
open("top_words.txt", "w").write("".join(f"{w} {c}\n" for w, c in top))
PY
