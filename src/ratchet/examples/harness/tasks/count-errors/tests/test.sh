#!/usr/bin/env bash
# Verifier: check.py inspects the workspace (the working directory) after the agent
# has finished; the reward is 1 when every check holds, else 0. Harbor mounts this
# folder at /tests and collects /logs; ratchet's local runner may name both instead.
TESTS="${RATCHET_TESTS:-/tests}"
REWARD_DIR="${RATCHET_LOGS:-/logs}/verifier"
mkdir -p "$REWARD_DIR" || exit 1
if python3 "$TESTS/check.py"; then
  echo 1 > "$REWARD_DIR/reward.txt"
else
  echo 0 > "$REWARD_DIR/reward.txt"
fi
