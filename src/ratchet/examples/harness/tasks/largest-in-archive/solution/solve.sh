#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
tar -tvzf bundle.tar.gz | awk '$1 ~ /^-/ {print $3, $6}' | sort -n | tail -1 \
  | cut -d' ' -f2 > largest.txt
