"""autoresearch (Karpathy's): `train.py` editable, `prepare.py` fixed, `program.md` the
directive, `val_bpb` minimized, and `results.tsv` at the root in its own format."""

from __future__ import annotations

import re
from pathlib import Path

from ratchet.errors import UsageError
from ratchet.importers import Imported, python_command, relative, toml_list, toml_string

DEFAULT_TIME_BUDGET = 300.0  # prepare.py's, when it cannot be read
_TIME_BUDGET = re.compile(r"^TIME_BUDGET\s*=\s*([0-9_.]+)", re.MULTILINE)


def measurement_budget(time_budget: float) -> int:
    """Seconds for one measurement: the training budget, plus start-up (compilation)
    and the final evaluation. Its own sample run takes 325.9 s for a 300 s budget, and
    its directive kills a run past 10 minutes: twice the budget, at least 2 minutes more."""
    return int(max(2 * time_budget, time_budget + 120))


def read_time_budget(prepare: Path) -> float | None:
    try:
        match = _TIME_BUDGET.search(prepare.read_text(errors="replace"))
    except OSError:
        return None
    return float(match.group(1).replace("_", "")) if match else None


def import_autoresearch(project: Path, where: Path) -> Imported:
    folder = where if where.is_dir() else where.parent
    train, prepare, program = folder / "train.py", folder / "prepare.py", folder / "program.md"
    if not train.is_file():
        raise UsageError(f"{folder} has no train.py: not an autoresearch checkout")
    notes: list[str] = []
    seconds = read_time_budget(prepare)
    if seconds is None:
        seconds = DEFAULT_TIME_BUDGET
        notes.append(f"no TIME_BUDGET in prepare.py; assumed autoresearch's {seconds:g} s")
    budget = measurement_budget(seconds)
    notes.append(
        f"budget {budget} s: TIME_BUDGET {seconds:g} s plus start-up and evaluation headroom"
    )
    python = python_command(project)
    rel = relative(project, folder)
    cd = "" if rel == "." else f"cd {rel} && "
    prefix = "" if rel == "." else f"{rel}/"
    protected = [f"{prefix}prepare.py"] if prepare.is_file() else []
    directive = f"directive = {toml_string(prefix + 'program.md')}" if program.is_file() else ""
    if not program.is_file():
        notes.append("no program.md: the proposers get no directive")
    notes.append(
        f"the measurement runs {python} train.py (not 'uv run', which needs the network "
        "in a fresh worktree)"
    )
    text = f"""\
# ratchet.toml, imported from an autoresearch checkout (ratchet init --from autoresearch).
# Every key is described in docs/spec.md; this import in docs/importers.md.

[scope]
editable = [{toml_string(prefix + "train.py")}]
context = {toml_list(protected)}
{directive}
protected = {toml_list(protected)}            # data preparation and evaluation: never written
outputs = ["{prefix}run.log"]          # the log the directive asks for is no part of a proposal

[metric]
command = {toml_string(f"{cd}{python} train.py")}
name = "val_bpb"
goal = "minimize"
budget = "{budget}s"                   # TIME_BUDGET {seconds:g} s + start-up + evaluation
derive = {{ memory_gb = "round(peak_vram_mb / 1024, 1)" }}
# gates = {{ memory_gb = "<= 80" }}    # refuse candidates that need more memory

[run]
results = {toml_string(prefix + "results.tsv")}   # where its analysis notebook reads it
results_format = "autoresearch"        # commit val_bpb memory_gb status description

[sandbox]
expose = ["~/.cache/autoresearch"]     # prepare.py's data and tokenizer, read-only under bwrap

[proposer]
kind = "claude-code"                   # autoresearch is driven by a coding agent
# kind = "llm"                         # or a model on any OpenAI-compatible endpoint
# model = "gpt-5"
"""
    return Imported(text, notes)
