#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
echo 'Hello, ratchet!' > greeting.txt
