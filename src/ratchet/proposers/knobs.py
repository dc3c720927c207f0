"""`kind = "knobs"`: Optuna tunes the annotated constants of the editable files.

    LR = 0.02          # ratchet: knob log 1e-4..1e-1
    HIDDEN = 32        # ratchet: knob int 8..256 log
    DROPOUT = 0.1      # ratchet: knob float 0..0.5
    ACT = "tanh"       # ratchet: knob choice relu|gelu|tanh

Only the literal after `=` is rewritten. The incumbent's current values are the first
trial, told with the incumbent's measured value; every outcome is told back (failures
as failed trials), and a resumed run replays the journal's recent and best trials into a
fresh study. The study is bounded (TPE's cost grows with its trials): past
`STUDY_LIMIT` trials it starts again from the `STUDY_RECENT` newest and `STUDY_BEST`
best outcomes, as a resume does. When a
kept change (another portfolio member's) adds, removes or re-annotates a knob, the
study starts again over the new knobs, from the incumbent.
"""

from __future__ import annotations

import ast
import heapq
import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState, create_trial

from ratchet.proposers.base import Outcome, Proposal, ProposalError, ProposerContext
from ratchet.safeio import Refused, read_capped, write_file
from ratchet.spec import SpecError, matches

_KNOB_LINE = re.compile(
    r"^(?P<head>[ \t]*(?P<name>[A-Za-z_]\w*)[ \t]*(?::[^=\n]+)?=[ \t]*)(?P<value>[^#\n]*?)"
    r"(?P<tail>[ \t]*#[ \t]*ratchet:[ \t]*knob[ \t]+(?P<spec>[^\n]*?)[ \t]*)$",
    re.MULTILINE,
)
_RANGE = re.compile(r"^(?P<lo>[-+.\deE]+)\.\.(?P<hi>[-+.\deE]+)$")
KNOB_HELP = "use 'log LO..HI', 'int LO..HI', 'float LO..HI' (optionally 'log') or 'choice a|b|c'"
SIGNIFICANT_DIGITS = 4  # floats are written short, as a person would
MEASURED = {"keep", "discard", "duplicate", "stale"}  # decisions whose value a trial has
STUDY_RECENT = 500  # outcomes a fresh study is told: the newest ones ...
STUDY_BEST = 100  # ... and the best ones
STUDY_LIMIT = 2 * (STUDY_RECENT + STUDY_BEST)  # trials in a study before it starts again


@dataclass(frozen=True)
class Knob:
    file: str
    name: str
    distribution: BaseDistribution
    quote: str  # the quote character of a string literal, or ""

    @property
    def key(self) -> str:
        return f"{self.file}:{self.name}"


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def _number(text: str) -> float:
    return float(text)


def parse_knob_spec(spec: str, current: Any, where: str) -> BaseDistribution:
    words = spec.split()
    if not words:
        raise SpecError(f"{where}: empty knob annotation; {KNOB_HELP}")
    kind, rest = words[0], words[1:]
    if kind == "choice":
        options = " ".join(rest).split("|")
        if len(options) < 2 or not all(o.strip() for o in options):
            raise SpecError(f"{where}: a choice knob needs two or more options like 'a|b'")
        return CategoricalDistribution([_literal(o) for o in options])
    log = "log" in rest or kind == "log"
    ranges = [w for w in rest if w != "log"]
    match = _RANGE.match(ranges[0]) if len(ranges) == 1 else None
    if kind not in {"log", "int", "float"} or match is None:
        raise SpecError(f"{where}: knob annotation '{spec}' not understood; {KNOB_HELP}")
    try:
        lo, hi = _number(match["lo"]), _number(match["hi"])
    except ValueError:
        raise SpecError(f"{where}: knob range '{ranges[0]}' is not two numbers") from None
    if not lo < hi or (log and lo <= 0):
        raise SpecError(f"{where}: knob range '{ranges[0]}' must have 0 < LO < HI for log, LO < HI")
    whole = kind == "int" or (kind == "log" and isinstance(current, int) and lo.is_integer())
    if whole:
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(lo, hi, log=log)


MAX_KNOB_FILE = 4 << 20  # bytes of an editable file searched for knobs


def _text(root: Path, name: str) -> str | None:
    """An editable file's text; None for a link, a non-regular or a too large file."""
    try:
        return read_capped(root, name, MAX_KNOB_FILE).decode(errors="replace")
    except (Refused, FileNotFoundError):
        return None


def find_knobs(root: Path, editable: list[str], files: list[str]) -> dict[str, Knob]:
    knobs: dict[str, Knob] = {}
    for name in files:
        if not matches(name, editable):
            continue
        text = _text(root, name)
        if text is None:
            continue  # no knob is tuned through a link
        read = set()
        for match in _KNOB_LINE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            read.add(line)
            where = f"{name}:{line}"
            value_text = match["value"].strip()
            current = _literal(value_text)
            distribution = parse_knob_spec(match["spec"], current, where)
            if not distribution._contains(distribution.to_internal_repr(current)):
                raise SpecError(
                    f"{where}: {match['name']} = {value_text} is outside its knob range"
                )
            quote = value_text[0] if value_text[:1] in {"'", '"'} else ""
            knob = Knob(name, match["name"], distribution, quote)
            knobs[knob.key] = knob
        _check_unread(name, text, read)
    return knobs


_ANY_KNOB = re.compile(r"#.*\bratchet:[ \t]*knob\b")
_EXAMPLE = "e.g. 'LR = 0.02  # ratchet: knob log 1e-4..1e-1'"


def _check_unread(name: str, text: str, read: set[int]) -> None:
    """Every `ratchet: knob` comment the knob pattern did not read is an error naming
    its line: an annotation silently ignored would tune nothing."""
    for number, line in enumerate(text.splitlines(), start=1):
        if number in read or not _ANY_KNOB.search(line):
            continue
        code = line.split("#", 1)[0].strip()
        if re.match(r"(async\s+)?(def|class)\b", code):
            why = "is on a def or class line; annotate a constant instead"
        elif not code:
            why = "is on a line of its own; put it after the constant it tunes"
        elif line.count("#") > 1:
            why = "follows another comment; make it the line's only comment"
        else:
            why = "is not after 'NAME = literal'"
        raise SpecError(f"{name}:{number}: this knob annotation {why}, {_EXAMPLE}")


def format_value(value: Any, knob: Knob) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        quote = knob.quote or '"'
        return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    if isinstance(value, int):
        return str(value)
    return repr(float(f"{value:.{SIGNIFICANT_DIGITS}g}"))


def read_values(root: Path, knobs: dict[str, Knob]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for file in {k.file for k in knobs.values()}:
        for match in _KNOB_LINE.finditer(_text(root, file) or ""):
            key = f"{file}:{match['name']}"
            if key in knobs:
                values[key] = _literal(match["value"])
    return values


def write_values(root: Path, knobs: dict[str, Knob], values: dict[str, Any]) -> None:
    for file in {k.file for k in knobs.values()}:
        text = _text(root, file)
        if text is None:
            raise ProposalError(f"{file} is no longer a regular file; no knob in it is tuned")

        def rewrite(match: re.Match[str], file: str = file) -> str:
            key = f"{file}:{match['name']}"
            if key not in values:
                return match.group(0)
            return match["head"] + format_value(values[key], knobs[key]) + match["tail"]

        try:
            write_file(root, file, _KNOB_LINE.sub(rewrite, text).encode())
        except Refused as why:
            raise ProposalError(str(why)) from None


class KnobsProposer:
    name = "knobs"

    def __init__(self, context: ProposerContext) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = context.spec
        self.editable, self.files = spec.scope.editable, context.files
        self.seed, self.goal = spec.proposer.seed, spec.metric.goal
        self.knobs = find_knobs(context.worktree, self.editable, self.files)
        if not self.knobs:
            raise SpecError(
                "[proposer] kind = 'knobs' found no knob in the editable files; annotate a "
                "constant like `LR = 0.01  # ratchet: knob log 1e-4..1e-1`"
            )
        self.lock = threading.Lock()  # slots propose at once; the study is one
        self.generation = -1
        # outcomes a new study starts from: (params, value or None for a failure)
        self.recent: deque[tuple[dict[str, Any], float | None]] = deque(maxlen=STUDY_RECENT)
        self.best: list[tuple[dict[str, Any], float]] = []
        self._new_study()
        self._replay(context)

    def _new_study(self) -> None:
        self.generation += 1  # which study asked a trial: outcomes of older ones are dropped
        self.distributions = {key: knob.distribution for key, knob in self.knobs.items()}
        sampler = TPESampler(seed=self.seed, constant_liar=True)
        self.study = optuna.create_study(direction=self.goal, sampler=sampler)

    def _refresh(self, worktree: Path, brief_path: Path) -> None:
        """Start a new study when the incumbent's knobs differ from the study's."""
        try:
            found = find_knobs(worktree, self.editable, self.files)
        except SpecError as error:  # a kept change annotated a knob badly
            raise ProposalError(str(error)) from None
        if {key: knob.distribution for key, knob in found.items()} == self.distributions:
            return
        if not found:
            raise ProposalError("the editable files have no knob left to tune")
        self.knobs = found
        self._new_study()
        value = json.loads(brief_path.read_text())["incumbent"]["value"]
        if value is not None:
            self._add(read_values(worktree, found), value)

    def _replay(self, context: ProposerContext) -> None:
        """Tell the study the incumbent's values and the earlier knobs trials the engine
        passes (a bounded window: the recent and the best ones), in one batch."""
        told: list[tuple[dict[str, Any], float | None]] = []
        incumbent = next((r for r in reversed(context.history) if r.decision == "keep"), None)
        if incumbent is not None and incumbent.value is not None:
            told.append((read_values(context.worktree, self.knobs), incumbent.value))
        for record in context.history:
            params = record.meta.get("params")
            if record.proposer != self.name or not isinstance(params, dict):
                continue
            if record.decision in MEASURED and record.value is not None:
                told.append((params, record.value))
            elif record.decision not in {"no-change", "interrupted", None}:
                told.append((params, None))
        self.recent.extend(told)
        measured = [(params, value) for params, value in told if value is not None]
        self.best = self._best_of([*self.best, *measured])
        self._add_all(told)

    def _remember(self, params: dict[str, Any], value: float | None) -> None:
        """An outcome remembered for a later study (the newest and the best ones)."""
        self.recent.append((params, value))
        if value is not None:
            self.best = self._best_of([*self.best, (params, value)])

    def _best_of(
        self, measured: list[tuple[dict[str, Any], float]]
    ) -> list[tuple[dict[str, Any], float]]:
        best = heapq.nsmallest if self.goal == "minimize" else heapq.nlargest
        return best(STUDY_BEST, measured, key=lambda told: told[1])

    def _restart_if_full(self) -> None:
        """A study past `STUDY_LIMIT` trials starts again from the remembered outcomes;
        trials asked of the old one and still measuring are dropped when told."""
        if len(self.study.get_trials(deepcopy=False)) < STUDY_LIMIT:
            return  # (`study.trials` would copy every trial, at every outcome)
        self._new_study()
        told = {id(params): (params, value) for params, value in [*self.best, *self.recent]}
        self._add_all(list(told.values()))

    def _add_all(self, told: list[tuple[dict[str, Any], float | None]]) -> None:
        """Outcomes (None: a failure) added to the study as finished trials, at once."""
        self.study.add_trials(
            trial for params, value in told if (trial := self._trial(params, value)) is not None
        )

    def _add(self, params: dict[str, Any], value: float | None) -> None:
        self._add_all([(params, value)])

    def _trial(self, params: dict[str, Any], value: float | None) -> FrozenTrial | None:
        """A finished trial of `params`; None when it no longer describes a point of the
        study's space (the knobs changed, or a value is outside a re-annotated range)."""
        if set(params) != set(self.distributions):
            return None
        try:
            return create_trial(
                params=params,
                distributions=self.distributions,
                value=value,
                state=TrialState.FAIL if value is None else TrialState.COMPLETE,
            )
        except ValueError:
            return None

    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        with self.lock:
            return self._propose(worktree, brief_path)

    def _propose(self, worktree: Path, brief_path: Path) -> Proposal:
        self._refresh(worktree, brief_path)
        trial = self.study.ask(self.distributions)
        params = {key: _rounded(value, self.knobs[key]) for key, value in trial.params.items()}
        before = read_values(worktree, self.knobs)
        write_values(worktree, self.knobs, params)
        changes = [
            f"{self.knobs[k].name} {format_value(before.get(k), self.knobs[k])} -> "
            f"{format_value(v, self.knobs[k])}"
            for k, v in params.items()
            if before.get(k) != v
        ]
        rationale = "knobs: " + (", ".join(changes) if changes else "the incumbent's values")
        meta = {"params": params, "trial": trial.number, "study": self.generation}
        return Proposal(rationale=rationale, meta=meta)

    def observe(self, outcome: Outcome) -> None:
        with self.lock:
            self._observe(outcome)

    def _observe(self, outcome: Outcome) -> None:
        number, params = outcome.meta.get("trial"), outcome.meta.get("params")
        value: float | None = None
        if outcome.decision in MEASURED and outcome.value is not None:
            value = outcome.value  # a duplicate: the earlier value
        elif outcome.decision == "no-change" and outcome.parent_value is not None:
            value = outcome.parent_value  # these are the incumbent's values
        if isinstance(params, dict) and outcome.decision != "interrupted":
            self._remember(params, value)
        if not isinstance(number, int) or outcome.meta.get("study", 0) != self.generation:
            return  # not this study's trial: the knobs changed since it was asked
        if value is not None:
            self.study.tell(number, value)
        else:
            self.study.tell(number, state=TrialState.FAIL)
        self._restart_if_full()


def _rounded(value: Any, knob: Knob) -> Any:
    dist = knob.distribution
    if isinstance(value, float) and isinstance(dist, FloatDistribution):
        return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), dist.low), dist.high)
    return value
