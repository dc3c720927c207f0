"""A resumed `knobs` run: its study holds a bounded window of the history (the newest and
the best trials), and telling an outcome copies nothing that grows with the study."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from optuna.samplers import TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from test_knobs import _proposer, _record

from conftest import GIT_ENV, make_project, ratchet
from ratchet import engine as engine_module
from ratchet.engine import Engine, open_journal
from ratchet.journal import Journal
from ratchet.limits import Limits
from ratchet.project import Project
from ratchet.proposers import Outcome

SPEC = f"""
[sandbox]
kind = "process"
[scope]
editable = ["value.py"]
[metric]
command = "{sys.executable} score.py"
name = "score"
goal = "minimize"
budget = "20s"
[proposer]
kind = "knobs"
seed = 3
"""
FILES = {
    "value.py": "X = 5.0  # ratchet: knob float 0..10\nY = 20  # ratchet: knob int 1..50\n",
    "score.py": "from value import X, Y\nprint(f'score: {(X - 2) ** 2 + (Y - 7) ** 2 / 100}')\n",
}
RECENT, BEST = 40, 6  # the window, made small: the history below is ten times longer


Filled = dict[int, tuple[tuple[float, int], float | None]]


def _append_history(root: Path, count: int) -> Filled:
    """`count` decided knobs experiments after the ones the real run made, as a long
    night leaves them: every 7th a crash, the rest discards; the six best values come
    early, far outside the newest `RECENT`. Returns each one's (X, Y) and value."""
    journal = Journal(root / ".ratchet" / "journal.db")
    parent = journal.incumbent("default")
    assert parent is not None and parent.commit is not None
    filled: Filled = {}
    for i in range(count):
        x, y = round(i % 97 / 10, 3), 1 + i % 50  # no two experiments alike
        best = 10 <= i < 10 + BEST
        crash = i % 7 == 3 and not best
        value = None if crash else (-1.0 - i / 100 if best else 50.0 + i / 100)
        experiment = journal.begin_experiment("default", 0, parent.commit, "knobs")
        params = {"value.py:X": x, "value.py:Y": y}
        journal.record_proposal(experiment, f"knobs: X -> {x}, Y -> {y}", "", ["value.py"],
                                {"params": params, "trial": i, "study": 0}, 0.01)  # fmt: skip
        journal.decide(experiment, "crash" if crash else "discard", "filled", value)
        filled[experiment] = ((x, y), value)
    journal.close()
    return filled


def _params(trial: FrozenTrial) -> tuple[float, int]:
    return trial.params["value.py:X"], trial.params["value.py:Y"]


def test_a_resumed_run_replays_the_newest_and_the_best_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project", FILES, SPEC)
    first = ratchet(root, "run", "--max-experiments", "2")
    assert first.returncode == 0, first.stderr
    filled = _append_history(root, 400)
    monkeypatch.setattr(engine_module, "TRIALS_RECENT", RECENT)
    monkeypatch.setattr(engine_module, "TRIALS_BEST", BEST)
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)

    spec = Project(root).spec
    journal = open_journal(root, verify=True)
    try:
        one_more = Limits.of(spec, max_experiments=journal.counts("default").experiments + 1)
        incumbent = journal.incumbent("default")  # at the start
        engine = Engine(root, spec, journal, limits=one_more)
        engine.run()
        new = journal.experiments("default")[-1]
    finally:
        journal.close()
    assert incumbent is not None and incumbent.value is not None
    assert new.id not in filled and new.decision is not None  # a new experiment, decided

    study = engine.proposer.study  # type: ignore[attr-defined]
    assert isinstance(study.sampler, TPESampler)  # the same kind of study as a fresh run's
    trials = study.get_trials(deepcopy=False)
    assert trials[-1].number == new.meta["trial"]  # the new experiment's own trial
    replayed = trials[:-1]
    # first the incumbent's values, told with its value
    assert _params(replayed[0]) == (5.0, 20) or incumbent.proposer == "knobs"
    assert replayed[0].value == incumbent.value
    # then the window: the newest and the best, not the 400 experiments of the history
    ids = sorted(filled)
    newest = ids[-RECENT:]
    best = sorted((i for i in ids if filled[i][1] is not None), key=lambda i: filled[i][1] or 0)
    best = best[:BEST]
    assert set(best).isdisjoint(newest)  # the best ones are old: only the window finds them
    window = set(newest) | set(best)
    own = 1 if incumbent.proposer == "knobs" else 0  # a kept knobs trial is in it too
    assert len(replayed) == 1 + own + len(window)
    told = {(_params(t), t.value, t.state) for t in replayed[1:]}
    for experiment in window:
        params, value = filled[experiment]
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
        assert (params, value, state) in told, experiment
    assert all(t.state == TrialState.FAIL for t in replayed if t.value is None)


def test_telling_an_outcome_copies_no_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`study.trials` copies every trial: at each outcome, that cost grew with the study
    (a fifth of a second of CPU per experiment near its bound)."""
    proposer = _proposer(tmp_path, [_record(1, "keep", 5.0, {})])
    copies = []
    every_trial = Study.trials

    def counted(study: Study) -> list[FrozenTrial]:
        copies.append(len(study.get_trials(deepcopy=False)))
        return every_trial.fget(study)  # type: ignore[no-any-return, attr-defined]

    monkeypatch.setattr(Study, "trials", property(counted))
    for i in range(5):
        proposal = proposer.propose(tmp_path, tmp_path / "brief.json")
        proposer.observe(Outcome(i + 2, "discard", 6.0 + i, 5.0, proposal.meta))
    assert copies == []
    told = proposer.study.get_trials(deepcopy=False)
    assert [t.value for t in told] == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
