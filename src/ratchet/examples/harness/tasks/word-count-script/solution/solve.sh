#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
cat > count_words.sh <<'SH'
#!/usr/bin/env bash
wc -w < "$1" | tr -d ' '
SH
chmod +x count_words.sh
