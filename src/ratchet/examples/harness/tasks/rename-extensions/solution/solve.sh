#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
for f in photos/*; do
  case "${f##*.}" in
    [jJ][pP][eE][gG]) mv -- "$f" "${f%.*}.jpg" ;;
  esac
done
