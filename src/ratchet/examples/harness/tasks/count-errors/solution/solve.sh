#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
awk '$2 == "ERROR"' app.log | wc -l | tr -d ' ' > error_count.txt
