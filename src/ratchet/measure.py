"""One measurement: run the metric command in a candidate's worktree and read its number.

With `[metric] evaluate` set, the candidate's `command` runs first and only the
protected evaluator's output is parsed, so nothing the candidate prints can become
the metric. Between the two, the worktree is brought back to the candidate's tree plus
the declared `[metric] outputs` (see ratchet.restore), so that nothing the command
planted (a `json.py`, a forged `.pyc`, a `sitecustomize.py`) reaches the evaluator.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ratchet.derived import add_derived
from ratchet.restore import (
    GitPristine,
    Pristine,
    Snapshot,
    name_paths,
    prune,
    settle,
    take_snapshot,
    whole_folders,
)
from ratchet.safeio import Refused, read_capped
from ratchet.sandbox import Sandbox, pidfile_for
from ratchet.specmodel import MetricSpec

Status = Literal["ok", "crash", "timeout", "no-metric", "not-finite"]
METRICS_FILE_CAP = 1 << 20  # bytes of `[metric] file` read at most
# the evaluate step's Python: no user site-packages (a candidate under the process layer
# can write to ~/.local), no bytecode written into the tree, and bytecode read only from
# `__pycache__` folders, which the restore empties, not from a cache folder elsewhere
EVALUATOR_ENV = {"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
EVALUATOR_UNSET = ("PYTHONPYCACHEPREFIX",)

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
_PAIR = re.compile(rf"^\s*([A-Za-z_][\w./-]*)\s*[:=]\s*({_NUMBER})\s*$", re.IGNORECASE)


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


BUDGET_HEADROOM = 1.25  # a candidate may take a quarter longer than the baseline


def budget_warning(budget: float, baseline: float) -> str | None:
    """A sentence when `[metric] budget` leaves the baseline's own duration too little
    headroom: a candidate slightly slower than the base commit would be killed."""
    if baseline * BUDGET_HEADROOM <= budget:
        return None
    return (
        f"the baseline took {format_seconds(round(baseline, 1))} of the "
        f"{format_seconds(budget)} budget; a candidate a little slower will be killed: "
        f"raise [metric] budget to at least {format_seconds(math.ceil(baseline * BUDGET_HEADROOM))}"
    )


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
            data = json.loads(read_capped(worktree, spec.file, METRICS_FILE_CAP))
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
    if spec.derive:
        add_derived(metrics, spec.derive)
        if spec.name in spec.derive and value is None:
            value, count = metrics.get(spec.name), 1
    if value is None:
        return None, metrics, f"the output has no '{spec.name}'"
    if spec.strict and count > 1:
        return None, metrics, f"'{spec.name}' was reported {count} times and the metric is strict"
    metrics[spec.name] = value
    return value, metrics, ""


def evaluator_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The evaluate step's environment: the command's, hardened for Python."""
    return {**{k: v for k, v in env.items() if k not in EVALUATOR_UNSET}, **EVALUATOR_ENV}


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
    *,
    pristine: Pristine | None = None,
    protected: Sequence[str] = (),
) -> Measurement:
    """Run the metric command (then the evaluator) once and classify the result.

    `pristine` is where the candidate's files are read back from when the command
    changed them (by default the git index of `worktree`, if it is a git worktree);
    `protected` are the spec's protected globs: a protected file the command changed is
    restored and reported in `tampered`. The worktree is left as the measurement found
    it: what the command or the evaluator created is removed afterwards.
    """
    source = pristine if pristine is not None else GitPristine.of_worktree(worktree)
    before = take_snapshot(worktree, whole_folders(protected))
    if source is not None:  # the starting point is the candidate's tree, nothing else
        before = prune(worktree, before, source)
    tampered: list[str] = []
    try:
        m = _run_steps(worktree, spec, sandbox, env, seed, redact, before, source, protected,
                       tampered)  # fmt: skip
    except BaseException:
        with contextlib.suppress(OSError):  # the error that stopped the measurement matters
            settle(worktree, before, source, (), protected)
        raise
    try:
        after = settle(worktree, before, source, (), protected)
    except OSError as error:
        why = f"the worktree could not be brought back after the measurement: {error}"
        return Measurement("crash", None, {}, m.duration, m.output, why, seed, m.started_at)
    tampered += [t for t in after.tampered if t not in tampered]
    notes = after.notes("after the measurement") if after.restored else ""
    output = f"{m.output}\n{notes}" if notes else m.output
    return replace(m, output=output, tampered=(*m.tampered, *tampered))


def _run_steps(
    worktree: Path,
    spec: MetricSpec,
    sandbox: Sandbox,
    env: Mapping[str, str],
    seed: int,
    redact: Callable[[str], str],
    before: Snapshot,
    source: Pristine | None,
    protected: Sequence[str],
    tampered: list[str],
) -> Measurement:
    started_at = time.time()
    env = {**env, "RATCHET_SEED": str(seed)}
    steps = [("command", spec.command, spec.budget)]
    if spec.evaluate:
        steps.append(("evaluator", spec.evaluate, spec.evaluate_budget or spec.budget))
    outputs: list[str] = []
    duration = 0.0
    hint = ""  # what the evaluator did not get, for a why when it then fails
    for role, command, budget in steps:
        step_env = env
        if role == "evaluator":
            try:
                settled = settle(worktree, before, source, spec.outputs, protected)
            except OSError as error:
                why = f"the worktree could not be brought back for the evaluator: {error}"
                return Measurement("crash", None, {}, duration, "\n".join(outputs), why, seed,
                                   started_at)  # fmt: skip
            tampered += settled.tampered
            if notes := settled.notes("before the evaluator"):
                outputs.append(notes)
            if settled.removed:
                hint = (f"; the command's files {name_paths(settled.removed)} were removed before "
                        "the evaluator ran: declare the ones it needs in [metric] outputs")  # fmt: skip
            if settled.lost:
                why = (f"the command changed {', '.join(sorted(settled.lost)[:5])} and there is "
                       "no clean copy to restore, so the evaluator was not run")  # fmt: skip
                return Measurement("crash", None, {}, duration, "\n".join(outputs), why, seed,
                                   started_at)  # fmt: skip
            step_env = evaluator_environment(env)
        result = sandbox.run(command, worktree, step_env, budget, spec.grace, pidfile_for(worktree))
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
            why += hint if role == "evaluator" else ""
            return Measurement(status, None, {}, duration, output, why, seed, started_at)
    value, metrics, missing = read_metric(text, spec, worktree)
    if value is None:
        missing += hint
        return Measurement("no-metric", None, metrics, duration, output, missing, seed, started_at)
    if not math.isfinite(value):
        why = f"{spec.name} is {value}, not a finite number"
        return Measurement("not-finite", value, metrics, duration, output, why, seed, started_at)
    return Measurement("ok", value, metrics, duration, output, "", seed, started_at)
