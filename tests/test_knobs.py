"""The knobs proposer: annotated constants found, rewritten in place, tuned by Optuna."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ratchet.journal import ExperimentRecord
from ratchet.proposers import Outcome, ProposerContext
from ratchet.proposers.knobs import (
    KnobsProposer,
    find_knobs,
    parse_knob_spec,
    read_values,
    write_values,
)
from ratchet.sandbox import ProcessSandbox
from ratchet.spec import SpecError, parse_spec

SOURCE = """\
import numpy as np

LR = 0.02  # ratchet: knob log 1e-4..1e-1
HIDDEN: int = 32  # ratchet: knob int 8..256 log
DROPOUT = 0.1  # ratchet: knob float 0..0.5
ACT = 'tanh'  # ratchet: knob choice relu|gelu|tanh
EPOCHS = 10
lr_note = "LR = 5 is not a knob"
"""


def test_knob_grammar() -> None:
    assert parse_knob_spec("log 1e-4..1e-1", 0.02, "f") == FloatDistribution(1e-4, 0.1, log=True)
    assert parse_knob_spec("int 8..256 log", 32, "f") == IntDistribution(8, 256, log=True)
    assert parse_knob_spec("log 16..512", 64, "f") == IntDistribution(16, 512, log=True)
    assert parse_knob_spec("float 0..1", 0.5, "f") == FloatDistribution(0, 1)
    assert parse_knob_spec("choice relu|gelu", "relu", "f") == CategoricalDistribution(
        ["relu", "gelu"]
    )
    for bad in ["lgo 1..2", "int 5", "float 2..1", "log 0..1", "choice onlyone", ""]:
        with pytest.raises(SpecError):
            parse_knob_spec(bad, 1, "train.py:3")


def test_knobs_are_found_and_rewritten_without_touching_anything_else(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SOURCE)
    knobs = find_knobs(tmp_path, ["train.py"], ["train.py"])
    assert sorted(k.name for k in knobs.values()) == ["ACT", "DROPOUT", "HIDDEN", "LR"]
    assert read_values(tmp_path, knobs) == {
        "train.py:LR": 0.02,
        "train.py:HIDDEN": 32,
        "train.py:DROPOUT": 0.1,
        "train.py:ACT": "tanh",
    }
    write_values(
        tmp_path, knobs, {"train.py:LR": 0.0031, "train.py:ACT": "gelu", "train.py:HIDDEN": 128}
    )
    text = (tmp_path / "train.py").read_text()
    assert "LR = 0.0031  # ratchet: knob log 1e-4..1e-1\n" in text
    assert "HIDDEN: int = 128  # ratchet: knob int 8..256 log\n" in text
    assert "ACT = 'gelu'  # ratchet: knob choice relu|gelu|tanh\n" in text  # quotes kept
    assert "DROPOUT = 0.1  #" in text
    assert text.endswith('EPOCHS = 10\nlr_note = "LR = 5 is not a knob"\n')


def test_a_value_outside_its_range_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("\n\nLR = 5.0  # ratchet: knob log 1e-4..1e-1\n")
    with pytest.raises(SpecError, match=r"train.py:3: LR = 5.0 is outside its knob range"):
        find_knobs(tmp_path, ["train.py"], ["train.py"])


def test_files_outside_the_scope_are_not_searched(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SOURCE)
    (tmp_path / "prepare.py").write_text("SEED = 1  # ratchet: knob int 0..9\n")
    knobs = find_knobs(tmp_path, ["train.py"], ["prepare.py", "train.py"])
    assert all(k.file == "train.py" for k in knobs.values())


def _proposer(tmp_path: Path, history: list[ExperimentRecord]) -> KnobsProposer:
    (tmp_path / "train.py").write_text(SOURCE)
    spec = parse_spec(
        {"scope": {"editable": ["train.py"]}, "metric": {"command": "x", "name": "loss"},
         "proposer": {"seed": 1}},
        "t",
    )  # fmt: skip
    context = ProposerContext(spec, tmp_path, tmp_path, ["train.py"], history,
                              ProcessSandbox(), tmp_path)  # fmt: skip
    return KnobsProposer(context)


def _record(id: int, decision: str, value: float | None, meta: dict[str, Any]) -> ExperimentRecord:
    return ExperimentRecord(
        id=id, run="r", slot=0, parent="p", commit="c" if decision == "keep" else None,
        proposer="baseline" if id == 1 else "knobs", rationale="", patch="", files=[],
        meta=meta, cost_seconds=0, cost_tokens=0, cost_usd=0, stage="done",
        decision=decision, why="", value=value, metrics={}, duration=0, started_at=0,
        ended_at=0,
    )  # fmt: skip


def test_the_first_trial_is_the_files_values_told_with_the_incumbents_value(
    tmp_path: Path,
) -> None:
    proposer = _proposer(tmp_path, [_record(1, "keep", 2.5, {})])
    first = proposer.study.trials[0]
    assert first.params == {"train.py:LR": 0.02, "train.py:HIDDEN": 32,
                            "train.py:DROPOUT": 0.1, "train.py:ACT": "tanh"}  # fmt: skip
    assert first.value == 2.5
    proposal = proposer.propose(tmp_path, tmp_path / "brief.json")
    assert proposal.rationale.startswith("knobs: ")
    assert read_values(tmp_path, proposer.knobs) == proposal.meta["params"]
    proposer.observe(Outcome(2, "crash", None, 2.5, proposal.meta))
    assert proposer.study.trials[1].state == TrialState.FAIL
    second = proposer.propose(tmp_path, tmp_path / "brief.json")
    proposer.observe(Outcome(3, "discard", 3.0, 2.5, second.meta))
    assert proposer.study.trials[2].value == 3.0


def test_a_resumed_study_replays_the_journal(tmp_path: Path) -> None:
    params = {"train.py:LR": 0.05, "train.py:HIDDEN": 64, "train.py:DROPOUT": 0.2,
              "train.py:ACT": "relu"}  # fmt: skip
    history = [
        _record(1, "keep", 2.5, {}),
        _record(2, "discard", 4.0, {"params": params, "trial": 1}),
        _record(3, "timeout", None, {"params": {**params, "train.py:HIDDEN": 8}, "trial": 2}),
        _record(4, "interrupted", None, {"params": params, "trial": 3}),
    ]
    study = _proposer(tmp_path, history).study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                               TrialState.FAIL]  # fmt: skip
    assert study.trials[1].params == params and study.trials[1].value == 4.0
