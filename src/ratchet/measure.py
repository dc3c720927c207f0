"""One measurement: run the metric command in a candidate's worktree and read its number.

With `[metric] evaluate` set, the candidate's `command` runs first and only the
protected evaluator's output is parsed, so nothing the candidate prints can become
the metric.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ratchet.safeio import Refused, read_capped
from ratchet.sandbox import Sandbox, pidfile_for
from ratchet.spec import MetricSpec

Status = Literal["ok", "crash", "timeout", "no-metric", "not-finite"]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
_PAIR = re.compile(rf"^\s*([A-Za-z_][\w./-]*)\s*[:=]\s*({_NUMBER})\s*$", re.IGNORECASE)
MAX_METRICS_FILE = 16 << 20  # bytes of `[metric] file` read


@dataclass(frozen=True)
class Measurement:
    status: Status
    value: float | None
    metrics: dict[str, float]
    duration: float
    output: str
    why: str
    seed: int
    started_at: float = field(default_factory=time.time)
    tampered: tuple[str, ...] = ()  # protected files a remote worker saw change

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:.3g}s"


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, int]]:
    """Every `name: value`, `name=value` and JSON-object line; the last of each wins.

    Also returns how often each name occurred, for strict metrics.
    """
    metrics: dict[str, float] = {}
    seen: dict[str, int] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                data = json.loads(stripped)
            except ValueError:
                continue
            pairs = [
                (k, float(v))
                for k, v in data.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
        else:
            match = _PAIR.match(line)
            if not match:
                continue
            pairs = [(match.group(1), float(match.group(2)))]
        for name, value in pairs:
            metrics[name] = value
            seen[name] = seen.get(name, 0) + 1
    return metrics, seen


def read_metric(
    output: str, spec: MetricSpec, worktree: Path
) -> tuple[float | None, dict[str, float], str]:
    """The metric's value (or None), all metrics found, and why it is missing."""
    metrics, seen = parse_metrics(output)
    value: float | None = metrics.get(spec.name)
    count = seen.get(spec.name, 0)
    if spec.pattern is not None:
        found = re.findall(spec.pattern, output)
        count = len(found)
        value = None
        if found:
            try:
                value = float(found[-1])
            except ValueError:
                return None, metrics, f"the pattern matched {found[-1]!r}, which is not a number"
    if spec.file is not None:
        try:  # the candidate wrote it: a link or a FIFO in its place is not followed
            data = json.loads(read_capped(worktree, spec.file, MAX_METRICS_FILE))
        except FileNotFoundError:
            return None, metrics, f"the metrics file '{spec.file}' was not written"
        except Refused as why:
            return None, metrics, f"the metrics file is refused: {why}"
        except (OSError, ValueError) as exc:
            return None, metrics, f"the metrics file '{spec.file}' is not JSON ({exc})"
        if not isinstance(data, dict):
            return None, metrics, f"the metrics file '{spec.file}' does not hold a JSON object"
        for name, raw in data.items():
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                metrics[name] = float(raw)
        value, count = metrics.get(spec.name), int(spec.name in data)
    if value is None:
        return None, metrics, f"the output has no '{spec.name}'"
    if spec.strict and count > 1:
        return None, metrics, f"'{spec.name}' was reported {count} times and the metric is strict"
    metrics[spec.name] = value
    return value, metrics, ""


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def measure_candidate(
    worktree: Path,
    spec: MetricSpec,
    sandbox: Sandbox,
    env: Mapping[str, str],
    seed: int,
    redact: Callable[[str], str] = lambda text: text,
) -> Measurement:
    """Run the metric command (then the evaluator) once and classify the result."""
    started_at = time.time()
    env = {**env, "RATCHET_SEED": str(seed)}
    steps = [("command", spec.command, spec.budget)]
    if spec.evaluate:
        steps.append(("evaluator", spec.evaluate, spec.evaluate_budget or spec.budget))
    outputs: list[str] = []
    duration = 0.0
    for role, command, budget in steps:
        result = sandbox.run(command, worktree, env, budget, spec.grace, pidfile_for(worktree))
        duration += result.duration
        text = redact(result.output)
        outputs.append(f"$ {command}\n{text}" if spec.evaluate else text)
        output = "\n".join(outputs)
        status: Status = "ok"
        if result.timed_out:
            status, why = "timeout", f"the {role} ran past its {format_seconds(budget)} budget"
            why += " and was killed"
        elif result.returncode != 0:
            status = "crash"
            why = f"the {role} exited with code {result.returncode}: {_last_line(text)}"
        if status != "ok":
            return Measurement(status, None, {}, duration, output, why, seed, started_at)
    value, metrics, missing = read_metric(text, spec, worktree)
    if value is None:
        return Measurement("no-metric", None, metrics, duration, output, missing, seed, started_at)
    if not math.isfinite(value):
        why = f"{spec.name} is {value}, not a finite number"
        return Measurement("not-finite", value, metrics, duration, output, why, seed, started_at)
    return Measurement("ok", value, metrics, duration, output, "", seed, started_at)
