#!/usr/bin/env bash
# The reference solution, run in the workspace.
set -euo pipefail
awk '/^\[/{section=$0} section=="[server]" && /^port *=/{$0="port = 8080"} {print}' \
  settings.ini > settings.ini.new
mv settings.ini.new settings.ini
