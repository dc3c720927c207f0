#!/usr/bin/env bash
# A smoke check on a machine with an NVIDIA GPU, PyTorch and ratchet installed:
# two slots pinned to GPU 0 (`[executor] gpus = [0]`) tune a small CUDA program under the
# process layer and under bwrap (whose minimal /dev gets the GPU's device nodes bound in).
# It prints each measurement's slot and the CUDA_VISIBLE_DEVICES and device count the
# program saw. Results are in docs/scaling.md.
#
#     bash bench/gpu_smoke.sh
set -u
ratchet doctor
for kind in process bwrap; do
  p=/tmp/p-$kind; mkdir -p $p && cd $p && git init -q -b main
  git config user.email t@t; git config user.name t
  cat > train.py <<'EOF'
import os, torch
N = 512  # ratchet: knob int 64..2048 log
assert torch.cuda.is_available(), "no GPU visible"
x = torch.randn(N, N, device="cuda", generator=torch.Generator("cuda").manual_seed(int(os.environ["RATCHET_SEED"])))
for _ in range(50):
    x = torch.tanh(x @ x / N**0.5)
torch.cuda.synchronize()
print(f"visible: {os.environ.get('CUDA_VISIBLE_DEVICES')}")
print(f"devices: {torch.cuda.device_count()}")
print(f"loss: {abs(x.mean().item()) + 1 / N}")
EOF
  cat > ratchet.toml <<EOF
[sandbox]
kind = "$kind"
[scope]
editable = ["train.py"]
[metric]
command = "python3 train.py"
name = "loss"
budget = "120s"
[run]
max_experiments = 6
[executor]
parallel = 2
gpus = [0]
EOF
  printf '.ratchet/\n' > .gitignore
  git add -A && git commit -qm init
  timeout 500 ratchet run 2>&1 | tail -15
  ratchet log 2>&1 | tail -10
  python3 - <<'EOF'
import sqlite3, json
db = sqlite3.connect(".ratchet/journal.db")
for e, s, st, m, why in db.execute("SELECT m.experiment, e.slot, m.status, m.metrics, e.why FROM measurements m JOIN experiments e ON e.id=m.experiment"):
    print(e, s, st, m, (why or "")[:80])
EOF
  cd /
done
