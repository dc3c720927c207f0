"""The fixed part of the demo: the data set and the evaluation. Protected: do not edit.

The data is a noisy three-armed spiral in the plane, three classes, made from a fixed
seed so that every experiment sees the same points. `train.py` imports `load_train()`;
the validation split never leaves this file.

    python prepare.py --evaluate    # score model.npz on the validation split
"""

import sys

import numpy as np

SEED = 1337  # fixed: the data set must be the same for every experiment
N_POINTS = 3000  # in all, split below
N_CLASSES = 3  # the arms of the spiral
N_VAL = 1000  # held out; train.py never receives these
NOISE = 0.45  # radians of jitter: the arms overlap, so no model reaches zero loss
TURNS = 1.25  # how far each arm winds: enough to defeat a linear model
MODEL_FILE = "model.npz"
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")


def _make_data():
    rng = np.random.default_rng(SEED)
    y = rng.integers(0, N_CLASSES, N_POINTS)
    r = rng.uniform(0.05, 1.0, N_POINTS)
    theta = 2 * np.pi * (y / N_CLASSES + TURNS * r) + rng.normal(0.0, NOISE, N_POINTS)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return x.astype(np.float64), y.astype(np.int64)


def load_train():
    """The training split: inputs (n, 2) and integer labels (n,)."""
    x, y = _make_data()
    return x[N_VAL:], y[N_VAL:]


def activate(name, z):
    # The evaluator's own forward pass: a candidate cannot change how it is scored.
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return z / (1.0 + np.exp(-1.702 * z))  # the sigmoid approximation, as in train.py
    return 1.0 / (1.0 + np.exp(-z))


def _load_model(path):
    """Weights W0, b0, W1, b1, ... and an activation name; anything else is refused."""
    with np.load(path, allow_pickle=False) as data:
        activation = str(data["activation"])
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        layers, fan_in = [], 2
        while f"W{len(layers)}" in data:
            i = len(layers)
            w = np.asarray(data[f"W{i}"], dtype=np.float64)
            b = np.asarray(data[f"b{i}"], dtype=np.float64)
            if w.ndim != 2 or w.shape[0] != fan_in or b.shape != (w.shape[1],):
                raise ValueError(f"layer {i} has shapes {w.shape} and {b.shape}")
            if w.size > 1_000_000:
                raise ValueError(f"layer {i} is too large")
            layers.append((w, b))
            fan_in = w.shape[1]
    if not layers or fan_in != N_CLASSES:
        raise ValueError(f"expected layers ending in {N_CLASSES} outputs")
    return layers, activation


def evaluate():
    try:
        layers, activation = _load_model(MODEL_FILE)
    except Exception as exc:  # missing file, bad archive, wrong shapes: all the same to us
        print(f"error: cannot load {MODEL_FILE}: {exc}", file=sys.stderr)
        sys.exit(1)
    x, y = _make_data()
    x, y = x[:N_VAL], y[:N_VAL]
    h = x
    with np.errstate(all="ignore"):  # a diverged model scores nan, not a traceback
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = activate(activation, h)
        shifted = h - h.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(len(y)), y].mean()
        accuracy = (h.argmax(axis=1) == y).mean()
    print(f"val_accuracy: {accuracy:.4f}")
    print(f"val_loss: {loss:.6f}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--evaluate"]:
        print("usage: python prepare.py --evaluate", file=sys.stderr)
        sys.exit(2)
    evaluate()
