"""`ratchet report`: a run's progress plot (`progress.png`) and its report (`report.md`),
from the journal alone, read-only, so during a run too.

The plot shows every decided experiment by its index: discards faint, failures apart
on a band of their own (they have no value), keeps bold and labelled with a short
rationale, the running best as a step line, the baseline and, where recorded, the
holdout. matplotlib is imported where the plot is drawn (it takes half a second), with
its non-interactive Agg canvas, so that drawing works in any thread and on no display.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ratchet import runview
from ratchet.decisions import Category, by_category, user_counts
from ratchet.journal import Journal, RunCounts
from ratchet.journalrecords import ExperimentRecord, RunRecord
from ratchet.runview import NoiseFigures, Point, short_label

if TYPE_CHECKING:
    from ratchet.events import Event
    from ratchet.specmodel import Spec

REPORTS_DIR = "reports"  # under .ratchet/: one folder per run
PROGRESS_FILE = "progress.png"
REPORT_FILE = "report.md"
TASKS_FILE = "tasks.png"  # harness mode: pass/fail per task across the keeps
MAX_LABELS = 12  # keeps labelled on the plot (the newest ones): more would not be read
REFRESH_EVERY = 5.0  # seconds between two redraws of progress.png during a run


@dataclass(frozen=True)
class KeepLine:
    record: ExperimentRecord
    previous: float | None  # the value it improved on (the keep before it, or the baseline)
    confirmations: int  # confirming measurements taken after it was judged a keep
    review: str  # approved | rejected | pending
    note: str

    @property
    def delta(self) -> float | None:
        if self.record.value is None or self.previous is None:
            return None
        return self.record.value - self.previous


@dataclass(frozen=True)
class RunReport:
    run: RunRecord
    baseline: ExperimentRecord | None
    incumbent: ExperimentRecord | None
    noise: NoiseFigures
    confidence: float
    max_repeats: int
    keeps: list[KeepLine]
    decisions: dict[str, int]  # by decision, the baseline's attempts left out
    counts: RunCounts
    tokens: int
    proposer_seconds: float
    in_flight: int
    points: list[Point] = field(default_factory=list)

    @property
    def holdout_gap(self) -> float | None:
        """How far the incumbent's holdout lies from its search value (metric units)."""
        best = self.incumbent
        if best is None or best.holdout is None or best.value is None:
            return None
        return best.holdout - best.value


def collect(journal: Journal, run: str, spec: Spec) -> RunReport:
    """Everything the report and the plot show, read from the journal."""
    record = journal.run(run)
    assert record is not None
    policy = spec.policy
    noise = runview.noise(journal, run, policy.confidence, policy.min_delta,
                          policy.max_repeats, policy.paired_seeds)  # fmt: skip
    baseline = journal.baseline(run)
    keep_records = runview.keeps(journal, run)
    confirmed = runview.confirmations(journal, [k.id for k in keep_records])
    reviews = runview.review_states(journal, run)
    lines, previous = [], baseline.value if baseline is not None else None
    for keep in keep_records:
        verdict, note = reviews.get(keep.id, ("pending", ""))
        lines.append(KeepLine(keep, previous, confirmed.get(keep.id, 0), verdict, note))
        previous = keep.value if keep.value is not None else previous
    decisions, _ = user_counts(journal.decision_counts(run), journal.baseline_decision_counts(run))
    tokens, seconds = runview.costs(journal, run)
    all_points: list[Point] = []
    while True:  # in pages: each answer stays bounded
        more = runview.points(journal, run, all_points[-1].id if all_points else 0)
        all_points += more
        if len(more) < runview.POINTS_MAX:
            break
    return RunReport(record, baseline, journal.incumbent(run), noise, policy.confidence,
                     policy.max_repeats, lines, decisions, journal.counts(run), tokens, seconds,
                     len(runview.in_flight(journal, run)), all_points)  # fmt: skip


# the plot ------------------------------------------------------------------------------
def plot_label(text: str) -> str:
    """Untrusted text as a plot label: one short printable line, with nothing that
    matplotlib's mathtext would interpret (`$`)."""
    return short_label(text).replace("$", r"\$")


def plot_progress(report: RunReport, path: Path) -> Path:
    """Draw `progress.png`: readable at phone size (large type, few labels)."""
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot, no global state

    run = report.run
    figure = Figure(figsize=(9, 5.5), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    measured = [(i, p, p.value) for i, p in enumerate(report.points) if p.value is not None]
    rejected = [(i, v) for i, p, v in measured if p.category != Category.KEPT]
    kept = [(i, p, v) for i, p, v in measured if p.category == Category.KEPT]
    failed = [i for i, p in enumerate(report.points)
              if p.value is None and p.category == Category.FAILED]  # fmt: skip
    if rejected:
        axes.scatter([i for i, _ in rejected], [v for _, v in rejected], s=14, color="#8a8a8a",
                     alpha=0.45, linewidths=0, label=f"not kept ({len(rejected)})")  # fmt: skip
    if kept:
        xs = [i for i, _, _ in kept]
        ys = [v for _, _, v in kept]
        axes.scatter(xs, ys, s=70, color="#1a9850", edgecolors="black", linewidths=0.8,
                     zorder=4, label=f"kept ({sum(not p.baseline for _, p, _ in kept)})")  # fmt: skip
        # the running best: the incumbent after each keep, until the last experiment
        last = len(report.points) - 1
        axes.step([*xs, max(last, xs[-1])], [*ys, ys[-1]], where="post", color="#1a9850",
                  linewidth=2.5, zorder=3, label="running best")  # fmt: skip
        labels = {r.record.id: r.record.rationale for r in report.keeps[-MAX_LABELS:]}
        for i, p, v in kept:
            if p.id in labels:
                axes.annotate(plot_label(labels[p.id]), (i, v), xytext=(6, 6),
                              textcoords="offset points", fontsize=9, rotation=20,
                              color="#0b4f2a", zorder=5)  # fmt: skip
    if report.baseline is not None and report.baseline.value is not None:
        axes.axhline(report.baseline.value, color="#4575b4", linestyle="--", linewidth=1.5,
                     label=f"baseline {report.baseline.value:.6g}")  # fmt: skip
    best = report.incumbent
    if best is not None and best.holdout is not None:
        axes.axhline(best.holdout, color="#7b3294", linestyle=":", linewidth=1.8,
                     label=f"holdout of the best {best.holdout:.6g}")  # fmt: skip
    if failed:  # no value to place them by: a band at the bottom of the plot
        axes.scatter(failed, [0.02] * len(failed), transform=axes.get_xaxis_transform(),
                     marker="x", s=30, color="#d73027", linewidths=1.2,
                     label=f"failed to measure ({len(failed)})")  # fmt: skip
    axes.set_xlabel("experiment (in the order decided)", fontsize=12)
    axes.set_ylabel(f"{plot_label(run.metric)} ({run.goal})", fontsize=12)
    title = f"ratchet run {plot_label(run.name)}"
    if report.baseline is not None and best is not None and best.value is not None:
        title += f": {report.baseline.value:.6g} → {best.value:.6g}"
    axes.set_title(title, fontsize=14, fontweight="bold")
    axes.tick_params(labelsize=11)
    axes.grid(alpha=0.25)
    if report.points:
        axes.legend(fontsize=10, loc="best", framealpha=0.85)
    else:
        axes.text(0.5, 0.5, "no experiment decided yet", transform=axes.transAxes,
                  ha="center", fontsize=14)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial)
    partial.replace(path)  # a viewer never reads a half-written file
    return path


def plot_task_results(
    tasks: Mapping[str, Sequence[bool | None]], keeps: Sequence[int], path: Path
) -> Path:
    """Harness mode's figure: pass (True), fail (False) or not run (None) per task
    (rows) across the keeps (columns, by experiment id), from `task_results`."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    names = sorted(tasks)
    grid = [[{True: 2, False: 1, None: 0}[v] for v in tasks[name]] for name in names]
    figure = Figure(figsize=(max(6, len(keeps) * 0.5 + 3), max(3, len(names) * 0.35 + 1.5)),
                    dpi=150, layout="constrained")  # fmt: skip
    axes = figure.add_subplot()
    axes.imshow(grid, cmap=ListedColormap(["#eeeeee", "#d73027", "#1a9850"]), vmin=0, vmax=2,
                aspect="auto")  # fmt: skip
    axes.set_yticks(range(len(names)), [plot_label(n) for n in names], fontsize=10)
    axes.set_xticks(range(len(keeps)), [f"#{k}" for k in keeps], fontsize=10, rotation=45)
    axes.set_title("tasks passed (green) and failed (red) across the keeps", fontsize=12)
    figure.savefig(path)
    return path


def task_results(
    journal: Journal, run: str
) -> tuple[dict[str, list[bool | None]], list[int]] | None:
    """Per-task results on the search split across the run's keeps (the baseline first),
    and those keeps' ids; None for a run that recorded no trials (a metric's run). A task
    passed at a keep when every attempt the keep's trials settled passed; a task left
    without a reward there (errors, timeouts only) is None, as is one not run."""
    has_trials = journal.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trials'"
    ).fetchone()
    if has_trials is None:
        return None
    keeps = [int(r[0]) for r in journal.db.execute(
        "SELECT id FROM experiments WHERE run = ? AND decision = 'keep' ORDER BY id", (run,))]  # fmt: skip
    if not keeps:
        return None
    marks = ",".join("?" * len(keeps))
    settled: dict[tuple[int, str], dict[int, bool]] = {}
    for experiment, task, attempt, status in journal.db.execute(
        "SELECT experiment, task, attempt, status FROM trials WHERE run = ? AND split = 'search'"
        f" AND experiment IN ({marks}) ORDER BY id",
        (run, *keeps),
    ):
        if status in ("passed", "failed"):  # a later trial of an attempt replaces an earlier
            settled.setdefault((int(experiment), str(task)), {})[int(attempt)] = status == "passed"
    if not settled:
        return None
    names = sorted({task for _, task in settled})
    tasks: dict[str, list[bool | None]] = {}
    for name in names:
        row: list[bool | None] = []
        for keep in keeps:
            attempts = settled.get((keep, name))
            row.append(None if not attempts else all(attempts.values()))
        tasks[name] = row
    return tasks, keeps


# the report ----------------------------------------------------------------------------
def md(text: str | None, limit: int = 200) -> str:
    """Untrusted text in a Markdown table cell: one line, HTML and Markdown escaped."""
    line = short_label(text or "", limit)
    for char in "\\`*_[]()#|<>!~":
        line = line.replace(char, "\\" + char)
    return line.replace("&", "&amp;") or "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4g}"


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def render_markdown(report: RunReport) -> str:
    run, base, best = report.run, report.baseline, report.incumbent
    counts = report.counts
    out = [f"# ratchet report: run {md(run.name)}", ""]
    out.append(f"Metric **{md(run.metric)}** ({run.goal}), branch `{md(run.branch)}`, "
               f"base commit `{run.base_commit[:7]}`.")  # fmt: skip
    if report.in_flight:
        out.append(f"The run is going on: {report.in_flight} experiment(s) in flight when "
                   f"this report was written ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}).")  # fmt: skip
    out += ["", "## Baseline to best", ""]
    if base is None or base.value is None:
        out.append("No baseline measured yet.")
    else:
        line = f"- baseline: {_num(base.value)} (experiment #{base.id})"
        out.append(line)
        if best is not None and best.value is not None:
            delta = best.value - base.value
            pct = f" ({delta / abs(base.value):+.2%})" if base.value else ""
            out.append(f"- best: {_num(best.value)} (experiment #{best.id}, commit "
                       f"`{(best.commit or '-')[:7]}`), {_signed(delta)}{pct} from the baseline")  # fmt: skip
    noise = report.noise
    if noise.sd is None:
        out.append("- noise: not estimated yet (the baseline has fewer than two measurements)")
    else:
        out.append(f"- noise: sd {noise.sd:.4g} of one measurement ({noise.df} degrees of "
                   "freedom, from the baseline's and the confirmed keeps' repeats)")  # fmt: skip
        smallest = _num(noise.smallest_detectable)
        out.append(f"- smallest detectable improvement: {smallest} (confidence "
                   f"{report.confidence:g}, up to {report.max_repeats} measurements)")  # fmt: skip
    if report.holdout_gap is not None and best is not None:
        out.append(f"- holdout: {_num(best.holdout)} for the best (search {_num(best.value)}), "
                   f"gap {_signed(report.holdout_gap)}")  # fmt: skip
    out += ["", f"![progress]({PROGRESS_FILE})", "", "## Keeps", ""]
    if not report.keeps:
        out.append("No keep after the baseline yet.")
    else:
        out.append("| # | commit | value | delta | confirmation | holdout | review | rationale |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in report.keeps:
            r = k.record
            confirm = f"{k.confirmations} repeat(s)" if k.confirmations else "-"
            review = k.review + (f": {md(k.note, 80)}" if k.note else "")
            out.append(f"| {r.id} | `{(r.commit or '-')[:7]}` | {_num(r.value)} | "
                       f"{_signed(k.delta)} | {confirm} | {_num(r.holdout)} | {review} | "
                       f"{md(r.rationale)} |")  # fmt: skip
    out += ["", "## Decisions", ""]
    if report.decisions:
        out += ["| decision | category | count |", "| --- | --- | --- |"]
        from ratchet.decisions import Decision

        for name, n in sorted(report.decisions.items(), key=lambda item: -item[1]):
            out.append(f"| {name} | {Decision(name).category.value} | {n} |")
        cats = by_category(report.decisions.items())
        out += ["", "By category: " + ", ".join(f"{k} {v}" for k, v in cats.items()) + "."]
    else:
        out.append("No experiment decided yet.")
    out += ["", "## Cost and time", ""]
    out.append(f"- experiments: {counts.experiments} decided, {counts.keeps} kept, "
               f"{counts.since_keep} since the last keep")  # fmt: skip
    out.append(f"- wall time in experiments: {_duration(counts.elapsed)}")
    out.append(f"- proposer cost: ${counts.cost_usd:.4f}, {report.tokens} tokens, "
               f"{report.proposer_seconds:.1f} s proposing")  # fmt: skip
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Written:
    run: str
    folder: Path
    files: list[Path]


def report_folder(root: Path, run: str) -> Path:
    return root / runview.STATE_DIR / REPORTS_DIR / run


def write_report(root: Path, spec: Spec, run: str | None = None, out: Path | None = None,
                 plot_only: bool = False) -> Written:  # fmt: skip
    """Write `progress.png` and `report.md` (with `plot_only`, the plot alone) for the
    run (default: the newest) into `out` (default: `.ratchet/reports/<run>/`)."""
    with runview.reading(root) as journal:
        name = runview.run_name(journal, run)
        report = collect(journal, name, spec)
        tasks = task_results(journal, name)
    folder = out if out is not None else report_folder(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    files = [plot_progress(report, folder / PROGRESS_FILE)]
    if tasks is not None:
        files.append(plot_task_results(tasks[0], tasks[1], folder / TASKS_FILE))
    if not plot_only:
        target = folder / REPORT_FILE
        target.write_text(render_markdown(report))
        files.append(target)
    return Written(name, folder, files)


class ProgressRefresher:
    """An observer for `ratchet run --report`: redraws `progress.png` after decisions,
    in a thread of its own, at most every `every` seconds (decisions that come closer
    together are drawn together, and the last one always is). Drawing reads the
    journal read-only; a failure is told once on `warn` and never reaches the loop."""

    def __init__(self, root: Path, spec: Spec, run: str, out: Path | None = None,
                 warn: TextIO = sys.stderr, every: float = REFRESH_EVERY) -> None:  # fmt: skip
        self.root, self.spec, self.run, self.out = root, spec, run, out
        self.warn, self.every = warn, every
        self.wanted = threading.Event()
        self.closing = threading.Event()
        self.drawn = 0  # redraws done: tests and the end of a run wait on it
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._loop, name="ratchet-report", daemon=True)
        self.thread.start()

    def __call__(self, event: Event) -> None:
        from ratchet.events import ExperimentDecided

        if isinstance(event, ExperimentDecided):
            self.wanted.set()

    def close(self) -> None:
        """Stop the thread, after drawing the decisions not drawn yet."""
        self.closing.set()
        self.thread.join(timeout=60)
        if self.wanted.is_set():
            self._draw()

    def _loop(self) -> None:
        while not self.closing.is_set():
            if not self.wanted.wait(timeout=0.5):
                continue
            self.wanted.clear()
            started = time.monotonic()
            self._draw()
            self.closing.wait(max(0.0, self.every - (time.monotonic() - started)))

    def _draw(self) -> None:
        try:
            write_report(self.root, self.spec, self.run, self.out, plot_only=True)
            self.drawn += 1
        except Exception as error:  # a plot is never worth a stopped run
            if self.failure is None:
                self.failure = f"{type(error).__name__}: {error}"
                with contextlib.suppress(Exception):
                    print(f"ratchet: warning: progress.png not drawn ({self.failure}); "
                          "the run goes on", file=self.warn, flush=True)  # fmt: skip
