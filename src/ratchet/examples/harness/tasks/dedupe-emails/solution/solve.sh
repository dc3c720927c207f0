#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
sed 's/^[[:space:]]*//; s/[[:space:]]*$//' emails.txt | tr 'A-Z' 'a-z' \
  | grep -v '^$' | LC_ALL=C sort -u > unique_emails.txt
