"""Reading trials for the meta proposer: summaries, failures by task, `read_trace`.

A trial folder (see `trials.py`) is readable here only when its `trial.json` says
`"split": "search"`: a folder marked `"holdout"`, or not marked at all, is refused
(`SealedTrial`), so a holdout task's instruction, trace or output cannot reach a
brief, a tool result or a proposer's `traces/` folder by mistake. Runners write the
marker with `write_trial_record`.

Everything here is a pure function of folders on disk. Paths a proposer names are
resolved inside the traces root; no link is followed. Trajectories are ATIF
(Harbor's Agent Trajectory Interchange Format): `steps[]`, each with `source`
(system, user, agent), `message`, `tool_calls[]` (`function_name`, `arguments`),
`observation.results[]` (`content`) and `metrics` (`prompt_tokens`,
`completion_tokens`), and `final_metrics` totals.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ratchet.suite.trials import (
    AGENT_LOG,
    TRAJECTORY,
    TRIAL_RECORD,
    VERIFIER_LOG,
    TrialResult,
    TrialStatus,
    trial_from_dict,
    trial_to_dict,
)

SPLIT = "split"  # the field of trial.json that says which split the trial belongs to
SEARCH, HOLDOUT = "search", "holdout"
MODEL_CALLS = "model_calls.jsonl"  # the metering proxy's record (suite/proxy.py)
COPIED = (TRIAL_RECORD, TRAJECTORY, AGENT_LOG, VERIFIER_LOG, MODEL_CALLS)
INDEX = "index.json"  # list_trials of a materialized traces/ folder
ERROR_LINES = 5  # last lines of the agent's output shown with a failure
TAIL_CHARS = 1500  # of a verifier's output in a summary or the brief
READ_LIMIT = 8000  # characters read_trace returns at most at once
ARGUMENT_CHARS = 500  # of one tool call's arguments, in the messages view
BRIEF_TASKS = 40  # failing tasks the brief carries at most


class SealedTrial(ValueError):
    """A holdout (or unmarked) trial was about to be shown to a proposer."""


def write_trial_record(folder: Path, trial: TrialResult, split: str) -> None:
    """`trial.json` in `folder`, marked with its split (search or holdout)."""
    if split not in (SEARCH, HOLDOUT):
        raise ValueError(f"a split is {SEARCH!r} or {HOLDOUT!r}, not {split!r}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRIAL_RECORD).write_text(json.dumps({**trial_to_dict(trial), SPLIT: split}))


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read(path: Path, limit: int = 4 << 20) -> str:
    """A regular file's text (never through a link), or "" when there is none."""
    if not _regular(path):
        return ""
    with path.open("rb") as handle:
        return handle.read(limit).decode(errors="replace")


def open_trial(folder: Path) -> TrialResult:
    """The trial recorded in `folder`, or SealedTrial unless it is a search trial."""
    try:
        data = json.loads(_read(folder / TRIAL_RECORD) or "null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SealedTrial(f"{folder.name}: no readable {TRIAL_RECORD}")
    if data.get(SPLIT) != SEARCH:
        raise SealedTrial(f"{folder.name}: not a search-split trial ({SPLIT}="
                          f"{data.get(SPLIT)!r}); holdout trials are never shown")  # fmt: skip
    return trial_from_dict(data)


def _text(message: object) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, list):  # ContentPart list: text parts, others named
        return "".join(str(p.get("text", f"[{p.get('type')}]")) for p in message
                       if isinstance(p, dict))  # fmt: skip
    return ""


def _steps(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        data = json.loads(_read(folder / TRAJECTORY) or "{}")
    except ValueError:
        return [], {}
    if not isinstance(data, dict):
        return [], {}
    steps = [s for s in data.get("steps") or [] if isinstance(s, dict)]
    final = data.get("final_metrics")
    return steps, final if isinstance(final, dict) else {}


def trajectory_stats(folder: Path) -> dict[str, int]:
    """Counts from the ATIF trajectory: steps, messages, tool calls, tokens."""
    steps, final = _steps(folder)
    metrics = [s.get("metrics") or {} for s in steps]

    def total(final_key: str, step_key: str) -> int:
        value = final.get(final_key)
        return int(value if value is not None else sum(m.get(step_key) or 0 for m in metrics))

    return {
        "steps": len(steps),
        "messages": sum(1 for s in steps if _text(s.get("message")).strip()),
        "tool_calls": sum(len(s.get("tool_calls") or []) for s in steps),
        "prompt_tokens": total("total_prompt_tokens", "prompt_tokens"),
        "completion_tokens": total("total_completion_tokens", "completion_tokens"),
    }


def _last_lines(text: str, count: int = ERROR_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def summarize(folder: Path) -> dict[str, Any]:
    """What a meta proposer looks at first: outcome, errors, verifier tail, counts."""
    trial = open_trial(folder)
    verifier = _read(folder / VERIFIER_LOG) or trial.verifier_tail
    return {
        "task": trial.task,
        "attempt": trial.attempt,
        "status": trial.status.value,
        "reward": trial.reward,
        "rewards": trial.rewards,
        "duration_s": round(trial.duration_s, 2),
        "error": trial.error,
        "last_error_lines": _last_lines(_read(folder / AGENT_LOG)),
        "verifier_tail": verifier[-TAIL_CHARS:],
        "tokens": {"input": trial.usage.input_tokens, "output": trial.usage.output_tokens},
        "cost_usd": trial.usage.cost_usd,
        "model_calls": trial.usage.calls,
        "trajectory": trajectory_stats(folder),
    }


def _trial_folders(root: Path) -> list[Path]:
    """Folders under `root` (two levels at most: task/attempt) holding a trial.json,
    reached without following a link."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk follows no link by default
        depth = len(Path(dirpath).relative_to(root).parts)
        if TRIAL_RECORD in filenames:
            found.append(Path(dirpath))
        if depth >= 2:
            dirnames.clear()
    return sorted(found)


def list_trials(root: Path) -> list[dict[str, Any]]:
    """Every search trial under `root`: its id (for read_trace), task, attempt, status,
    reward and one line of error. Holdout and unmarked folders are left out."""
    listed = []
    for folder in _trial_folders(root):
        try:
            trial = open_trial(folder)
        except SealedTrial:
            continue
        listed.append({"id": folder.relative_to(root).as_posix(), "task": trial.task,
                       "attempt": trial.attempt, "status": trial.status.value,
                       "reward": trial.reward, "error": trial.error[:200]})  # fmt: skip
    return listed


def _folder(root: Path, trial: str) -> Path:
    """The trial folder `trial` names, inside `root`, with no link on the way."""
    parts = Path(trial).parts
    if not parts or Path(trial).is_absolute() or any(p in ("..", ".") for p in parts):
        raise SealedTrial(f"not a trial id: {trial!r} (ids come from list_trials)")
    folder = root
    for part in parts:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            raise SealedTrial(f"no trial {trial!r} (ids come from list_trials)")
    return folder


def render_messages(folder: Path) -> str:
    """The trajectory as text: each step's source and message, its tool calls and what
    they returned."""
    steps, _ = _steps(folder)
    lines = []
    for step in steps:
        lines.append(f"[{step.get('step_id', '?')}] {step.get('source', '?')}: "
                     f"{_text(step.get('message')).strip()}")  # fmt: skip
        for call in step.get("tool_calls") or []:
            arguments = json.dumps(call.get("arguments"))[:ARGUMENT_CHARS]
            lines.append(f"    call {call.get('function_name')}({arguments})")
        for result in (step.get("observation") or {}).get("results") or []:
            lines.append(f"    -> {_text(result.get('content')).strip()}")
    return "\n".join(lines) if lines else "(no trajectory was recorded for this trial)"


def read_trace(
    root: Path, trial: str, part: str = "summary", offset: int = 0, limit: int = READ_LIMIT
) -> str:
    """One part of a search trial: its summary (JSON), its messages (the ATIF steps as
    text) or its verifier output; long parts come `limit` characters at a time."""
    folder = _folder(root, trial)
    open_trial(folder)  # refuses holdout and unmarked folders
    if part == "summary":
        return json.dumps(summarize(folder), indent=1)
    if part == "messages":
        text = render_messages(folder)
    elif part == "verifier":
        text = _read(folder / VERIFIER_LOG) or "(the verifier printed nothing)"
    else:
        raise ValueError(f"part is summary, messages or verifier, not {part!r}")
    offset, limit = max(0, offset), max(1, min(limit, READ_LIMIT))
    piece = text[offset : offset + limit]
    end = offset + len(piece)
    more = f"; offset={end} for more" if end < len(text) else ""
    return f"{piece}\n(characters {offset}-{end} of {len(text)}{more})"


def failures_by_task(trials: Sequence[tuple[TrialResult, Path]]) -> list[dict[str, Any]]:
    """The incumbent's failing search trials, grouped by task, for the brief: rewards,
    statuses, the last error lines and the verifier's tail of the latest failure.
    A holdout (or unmarked) trial folder raises SealedTrial."""
    grouped: dict[str, list[tuple[TrialResult, Path]]] = {}
    for trial, folder in trials:
        open_trial(folder)
        grouped.setdefault(trial.task, []).append((trial, folder))
    failing = []
    for task, runs in sorted(grouped.items()):
        bad = [(t, f) for t, f in runs if t.status is not TrialStatus.PASSED]
        if not bad:
            continue
        last, folder = bad[-1]
        agent_lines = _last_lines(_read(folder / AGENT_LOG))
        verifier = _read(folder / VERIFIER_LOG) or last.verifier_tail
        failing.append({
            "task": task,
            "trials": len(runs),
            "failed": len(bad),
            "rewards": [t.reward for t, _ in runs],
            "statuses": [t.status.value for t, _ in runs],
            "last_error": "\n".join(x for x in (last.error, agent_lines) if x)[-TAIL_CHARS:],
            "verifier_tail": verifier[-TAIL_CHARS:],
        })  # fmt: skip
    return failing[:BRIEF_TASKS]


def materialize_traces(trials: Sequence[tuple[TrialResult, Path]], dest: Path) -> Path:
    """A read-only `traces/` folder for CLI proposers: each search trial's files under
    `TASK/attempt-N/`, and `index.json` (list_trials of it). Only regular files are
    copied, never a link; a holdout trial raises SealedTrial before anything is written."""
    for _, folder in trials:
        open_trial(folder)
    if dest.exists():
        for path in [dest, *dest.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for trial, folder in trials:
        target = dest / trial.task / f"attempt-{trial.attempt}"
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED[1:]:
            if _regular(folder / name):
                shutil.copyfile(folder / name, target / name)
        # the record names its trajectory inside traces/, not in ratchet's state
        copy = replace(
            trial, trace_path=Path(TRAJECTORY) if _regular(target / TRAJECTORY) else None
        )
        write_trial_record(target, copy, SEARCH)
    (dest / INDEX).write_text(json.dumps(list_trials(dest), indent=1))
    for path in sorted(dest.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    dest.chmod(0o555)
    return dest
