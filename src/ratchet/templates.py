"""The commented `ratchet.toml` that `ratchet init` writes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TEMPLATE = """\
# ratchet.toml: what ratchet may change, how it measures, when it stops.
# Every key is described in docs/spec.md.

[scope]
editable = [{editable}]        # globs: the only files a proposal may change
context = []                   # shown to proposers, never editable
# directive = "program.md"     # your instructions to proposers
protected = []                 # e.g. ["prepare.py", "data/**"]: never written
# editable = ["initial_program.py#EVOLVE-BLOCK"]  # only between a region's markers
# outputs = ["run.log"]        # run-time files that are never part of a proposal

[metric]
command = "python3 train.py"   # run in the candidate's worktree
# evaluate = "python3 prepare.py --evaluate"  # when set, only its output is parsed
# outputs = ["model.npz"]    # files the command hands to the evaluator; it sees nothing else the command wrote
name = "val_loss"              # printed as `val_loss: 1.234`, `val_loss=1.234` or JSON
goal = "minimize"              # or "maximize"
budget = "5m"                  # hard wall-clock limit of one measurement, start-up included
# derive = {{ memory_gb = "peak_vram_mb / 1024" }}  # metrics computed from reported ones

[run]
# name = "default"             # the branch is ratchet/<name>
max_experiments = 100
max_time = "8h"
# patience = 30                # stop after this many experiments without a keep
# target = 0.95                # stop once the metric reaches this
# results = "results.tsv"      # where results.tsv goes (default .ratchet/results.tsv)
# results_format = "autoresearch"  # exactly autoresearch's five columns and number format

[policy]
kind = "noise-aware"           # keep only improvements beyond the measured noise; or "greedy"
# confidence = 0.99
# min_delta = 0.0              # an improvement must also be larger than this

[proposer]
kind = "knobs"                 # tune constants annotated `# ratchet: knob log 1e-4..1e-1`
# kind = "command"             # or run any program that edits the scope
# command = "./propose.sh"
# kind = "llm"                 # or a model: see docs/proposers.md
# model = "qwen2.5-coder:32b"
# base_url = "http://127.0.0.1:11434/v1"

[executor]
parallel = 1                   # experiments at once, each in its own worktree
# gpus = [0, 1]                # one GPU per slot
# kind = "ray"                 # measurements as Ray tasks: see docs/scaling.md
"""


# never the editable guess: what measures, tests or feeds a program, not the program
_NOT_EDITABLE = re.compile(
    r"(^|/)(evaluat\w*|eval|prepare|setup|conftest|test_\w+|\w+_test|tests?|data\w*|"
    r"dataset\w*|__init__|__main__|noxfile|tasks|fabfile)\.py$|(^|/)(tests?|data|docs?)/"
)
_PREFERRED = ("train.py", "initial_program.py", "main.py", "model.py", "solution.py")


@dataclass
class EditableGuess:
    """The file `ratchet init` proposes as editable, and the others it could have been."""

    chosen: str
    candidates: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


def guess_editable(files: list[str]) -> EditableGuess:
    """A Python file that is neither an evaluator, a test nor data; said when assumed."""
    python = [f for f in files if f.endswith(".py")]
    candidates = [f for f in python if not _NOT_EDITABLE.search(f)]
    preferred = [f for name in _PREFERRED for f in candidates if f.rsplit("/", 1)[-1] == name]
    ordered = preferred + [f for f in candidates if f not in preferred]
    if not ordered:
        return EditableGuess("train.py", [], "no program file found: editable = train.py; edit it")
    chosen = ordered[0]
    skipped = [f for f in python if f not in candidates]
    note = f"editable = {chosen}"
    if len(ordered) > 1:
        note += f" (of {', '.join(ordered[:5])})"
    if skipped:
        note += f"; not {', '.join(skipped[:5])} (evaluators, tests and data are never the guess)"
    return EditableGuess(chosen, ordered, note)


def spec_template(editable: str) -> str:
    return TEMPLATE.format(editable=f'"{editable}"')
