"""Train a small MLP on the spiral data of prepare.py and save it to model.npz.

This is the file the search edits. The knobs below are annotated for ratchet; the
score is computed afterwards by `python prepare.py --evaluate`, from the saved model.
"""

import itertools
import os
import time

# One BLAS thread: the matrices are small, and threads only add jitter to the timing.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402  (after the thread settings, which numpy reads on import)
from prepare import load_train  # noqa: E402

# -- knobs: the baseline is deliberately poor (a tiny LR, sigmoid), leaving room to improve
LR = 0.0003  # ratchet: knob log 1e-4..1e-1
HIDDEN = 16  # ratchet: knob int 8..64 log
DEPTH = 1  # ratchet: knob int 1..3
BATCH_SIZE = 32  # ratchet: knob int 16..128 log
WEIGHT_DECAY = 0.01  # ratchet: knob log 1e-5..1e-1
ACTIVATION = "sigmoid"  # ratchet: knob choice sigmoid|tanh|relu|gelu

# -- fixed settings --------------------------------------------------------------------
STEPS = 2000  # a step count, never a clock: the result must not depend on the machine's load
SEED = 0  # same init and batch order every run: a change is the knobs' doing
CLIP = 1.0  # clip the global gradient norm, so large learning rates stay finite
BETAS = (0.9, 0.999)  # Adam's moment decay rates
MODEL_FILE = "model.npz"


def activate(z):
    """The activation and its derivative with respect to z."""
    if ACTIVATION == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(z.dtype)
    if ACTIVATION == "tanh":
        a = np.tanh(z)
        return a, 1.0 - a * a
    if ACTIVATION == "gelu":  # the sigmoid approximation, z * sigmoid(1.702 z): cheap
        s = 1.0 / (1.0 + np.exp(-1.702 * z))
        return z * s, s + 1.702 * z * s * (1.0 - s)
    s = 1.0 / (1.0 + np.exp(-z))
    return s, s * (1.0 - s)


def init_params(rng, sizes):
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, fan_out)))
        params.append(np.zeros(fan_out))
    return params


def loss_and_grads(params, x, y):
    """Mean cross-entropy of a batch and its gradients, by a hand-written backward pass."""
    hs, derivs = [x], []
    for i in range(0, len(params) - 2, 2):
        a, d = activate(hs[-1] @ params[i] + params[i + 1])
        hs.append(a)
        derivs.append(d)
    logits = hs[-1] @ params[-2] + params[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(probs[np.arange(n), y] + 1e-12).mean()
    delta = probs
    delta[np.arange(n), y] -= 1.0
    delta /= n
    grads = [None] * len(params)
    for i in range(len(params) - 2, -1, -2):
        grads[i] = hs[i // 2].T @ delta
        grads[i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ params[i].T) * derivs[i // 2 - 1]
    return loss, grads


def main():
    x, y = load_train()
    rng = np.random.default_rng(SEED)
    params = init_params(rng, [x.shape[1]] + [HIDDEN] * DEPTH + [int(y.max()) + 1])
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t0 = time.perf_counter()
    smooth = None
    for step in range(1, STEPS + 1):
        idx = rng.integers(0, len(x), BATCH_SIZE)
        loss, grads = loss_and_grads(params, x[idx], y[idx])
        norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
        scale = min(1.0, CLIP / (norm + 1e-12))
        # AdamW: the weight decay acts on the weights directly, not through the moments
        for p, g, mi, vi in zip(params, grads, m, v, strict=True):
            g = g * scale
            mi[:] = BETAS[0] * mi + (1 - BETAS[0]) * g
            vi[:] = BETAS[1] * vi + (1 - BETAS[1]) * g * g
            mhat = mi / (1 - BETAS[0] ** step)
            vhat = vi / (1 - BETAS[1] ** step)
            p -= LR * (mhat / (np.sqrt(vhat) + 1e-8) + WEIGHT_DECAY * p)
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        if step % 300 == 0:
            print(f"step {step:5d} | loss {smooth:.4f}")
        if not np.isfinite(loss):
            print("loss is not finite; stopping")
            break
    seconds = time.perf_counter() - t0
    weights = {f"W{i // 2}" if i % 2 == 0 else f"b{i // 2}": p for i, p in enumerate(params)}
    np.savez(MODEL_FILE, activation=np.array(ACTIVATION), **weights)
    print(f"train_loss: {smooth:.6f}")
    print(f"training_seconds: {seconds:.2f}")


if __name__ == "__main__":
    main()
