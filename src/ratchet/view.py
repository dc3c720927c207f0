"""What `ratchet run` shows: a live rich view on a terminal, plain lines elsewhere.

Whys, rationales and file names come from proposers and candidates: they reach the
terminal only through `plain` and `one_line` (never as rich markup, never with a
control character left in), here and in every command.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ratchet.decisions import style_of
from ratchet.events import Event, ExperimentDecided, RunStarted, RunStopped, StageStarted
from ratchet.journalrecords import ExperimentRecord
from ratchet.plaintext import one_line, plural, visible

RECENT = 8


def decision_style(decision: str | None) -> str:
    """The style of its category (one for all views); an undecided experiment's own."""
    return style_of(decision)


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def short(commit: str | None) -> str:
    return commit[:7] if commit else "-"


def plain(text: str | None, style: str = "", lines: bool = True) -> Text:
    """Untrusted text as a rich renderable: never parsed as markup, each control
    character visibly escaped; with `lines=False`, on one line."""
    text = text or ""
    return Text(visible(text) if lines else one_line(text), style=style)


class PlainView:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        line = plain_line(event)
        if line:
            print(one_line(line), file=self.stream, flush=True)

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def plain_line(event: Event) -> str | None:
    if isinstance(event, RunStarted):
        verb = "resumed" if event.resumed else "started"
        line = (
            f"run {event.run.name} {verb} on branch {event.run.branch} "
            f"(proposer {event.proposer}, sandbox {event.sandbox})"
        )
        if event.interrupted:
            line += f"; marked interrupted: {', '.join(f'#{i}' for i in event.interrupted)}"
        if event.recovered:
            line += f"; removed stale git lock files: {', '.join(event.recovered)}"
        return line
    if isinstance(event, ExperimentDecided):
        r = event.record
        metric = f" {format_value(r.value)}" if r.value is not None else ""
        tried = f" [{r.rationale.splitlines()[0][:120]}]" if r.rationale and r.patch else ""
        return f"#{r.id} {r.decision}{metric}: {r.why}{tried}"
    if isinstance(event, RunStopped):
        return f"stopped: {event.reason}"
    return None


class LiveView:
    """The current experiment with its budget bar, recent decisions, the incumbent."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.header = Text("starting…")
        self.stages: dict[int, StageStarted] = {}  # by slot
        self.recent: deque[ExperimentRecord] = deque(maxlen=RECENT)
        self.incumbent: ExperimentRecord | None = None
        self.baseline: ExperimentRecord | None = None
        self.counts = {"experiments": 0, "keeps": 0}
        self.stopped: str | None = None
        from rich.live import Live  # only a run on a terminal needs it

        self.live = Live(
            console=console, get_renderable=self.render, refresh_per_second=4, transient=False
        )

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.header = Text.assemble(
                ("ratchet ", "bold"),
                (event.run.name, "bold cyan"),
                one_line(
                    f"  branch {event.run.branch}  proposer {event.proposer}  "
                    f"sandbox {event.sandbox}"
                ),
            )
            self.incumbent = event.incumbent
        elif isinstance(event, StageStarted):
            self.stages[event.slot] = event
        elif isinstance(event, ExperimentDecided):
            record = event.record
            self.recent.appendleft(record)
            if record.is_baseline:
                self.baseline = record
            else:
                self.counts["experiments"] += 1
                self.counts["keeps"] += record.decision == "keep"
            self.incumbent = event.incumbent
            self.stages.pop(record.slot, None)
        elif isinstance(event, RunStopped):
            self.stages.clear()
            self.stopped = event.reason

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [self.header]
        stages = sorted(self.stages.items())  # a copy: slots report from their own threads
        for slot, stage in stages:
            elapsed = time.time() - stage.at
            bar = ProgressBar(total=stage.budget, completed=min(elapsed, stage.budget), width=40)
            line = Table.grid(padding=(0, 1))
            where = f"slot {slot}: " if len(stages) > 1 or slot else ""
            line.add_row(
                Text(f"{where}experiment #{stage.experiment} {stage.stage}"),
                bar,
                Text(f"{elapsed:.1f}s / {stage.budget:g}s budget"),
            )
            parts.append(line)
        table = Table(box=None, header_style="bold", pad_edge=False, expand=True)
        for column in ("#", "decision", "value", "why"):
            table.add_column(column, no_wrap=column != "why", overflow="ellipsis")
        for r in self.recent:
            table.add_row(
                Text(str(r.id)),
                plain(r.decision, decision_style(r.decision), lines=False),
                Text(format_value(r.value)),
                plain(r.why, lines=False),
            )
        parts.append(table)
        if self.incumbent is not None:
            parts.append(
                Text(
                    f"incumbent {format_value(self.incumbent.value)} (#{self.incumbent.id}, "
                    f"{short(self.incumbent.commit)})  baseline "
                    f"{format_value(self.baseline.value if self.baseline else None)}  "
                    f"{plural(self.counts['experiments'], 'experiment')}, "
                    f"{plural(self.counts['keeps'], 'keep')}",
                    style="bold",
                )
            )
        if self.stopped is not None:
            parts.append(plain(f"stopped: {self.stopped}"))
        return Group(*parts)
