#!/usr/bin/env bash
# Verifier: check.py inspects the workspace (the working directory) after the agent
# has finished and writes reward.json itself: the reward (1 or 0) and how many of the
# expected lines were right, a detail for whoever reads the trace.
TESTS="${RATCHET_TESTS:-/tests}"
REWARD_DIR="${RATCHET_LOGS:-/logs}/verifier"
mkdir -p "$REWARD_DIR" || exit 1
python3 "$TESTS/check.py" "$REWARD_DIR/reward.json"
