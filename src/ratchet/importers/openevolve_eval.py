"""`python -m ratchet.importers.openevolve_eval EVALUATOR PROGRAM`: OpenEvolve's evaluator
as a ratchet metric command.

In a child process, it imports `evaluate` from EVALUATOR and calls `evaluate(PROGRAM)`
with the program's absolute path; the child's output goes to stderr and its metrics come
back through a pipe, so this process prints the metrics as the one JSON line on stdout,
last, after the child has exited: a program that prints a `combined_score` itself, or
exits early, cannot pass for the evaluator (with `[metric] strict`, which the importer
sets, a second `combined_score` is a `no-metric`). `evaluate` may return a dict or an object with `.metrics` (OpenEvolve's
`EvaluationResult`); numbers are kept, anything else (artifacts, text) is dropped. When
there is no `combined_score`, the mean of the numbers is printed as `combined_score`,
as OpenEvolve ranks such programs. Standard library only: it runs in the user's Python.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCORE = "combined_score"


def numeric_metrics(result: Any) -> dict[str, float]:
    """The numbers in what `evaluate` returned, by name; `combined_score` added when
    missing, as the mean of the others."""
    data = getattr(result, "metrics", result)
    if not isinstance(data, dict):
        raise TypeError(f"evaluate() returned {type(result).__name__}, not a dict of metrics")
    metrics = {
        str(name): float(value)
        for name, value in data.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if SCORE not in metrics and metrics:
        metrics[SCORE] = sum(metrics.values()) / len(metrics)
    return metrics


def load_evaluate(evaluator: Path) -> Any:
    sys.path.insert(0, str(evaluator.parent))  # its own helper modules, as OpenEvolve does
    spec = importlib.util.spec_from_file_location("evaluator", evaluator)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {evaluator}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate):
        raise AttributeError(f"{evaluator} defines no evaluate(program_path)")
    return evaluate


def _child(fd: int, evaluator: Path, program: Path) -> int:
    metrics = numeric_metrics(load_evaluate(evaluator)(str(program)))
    with os.fdopen(fd, "w") as pipe:
        pipe.write(json.dumps(metrics))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "--child":
        return _child(int(argv[1]), Path(argv[2]), Path(argv[3]))
    if len(argv) != 2:
        print(
            "usage: python -m ratchet.importers.openevolve_eval EVALUATOR PROGRAM", file=sys.stderr
        )
        return 2
    evaluator, program = (str(Path(a).resolve()) for a in argv)
    read, write = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-m", __spec__.name if __spec__ else "ratchet.importers.openevolve_eval",
         "--child", str(write), evaluator, program],
        stdout=sys.stderr, pass_fds=(write,),
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    code = child.wait()
    if code != 0 or not data:
        print(f"the evaluator returned no metrics (exit status {code})", file=sys.stderr)
        return 1
    metrics = json.loads(data)
    print(json.dumps(metrics), flush=True)
    return 0 if metrics else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
