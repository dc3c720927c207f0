"""`results.tsv`: the journal's export, autoresearch's columns first, then ratchet's.

Each decision is appended as it is made; a start brings the file up to date with the
journal. Untrusted text goes in as one line with every control character escaped.

`[run] results_format = "autoresearch"` writes exactly autoresearch's five columns in its
number format instead (the metric `%.6f`, memory_gb `%.1f`, `0.000000` and `0.0` where
nothing was measured), with a commit on every row: a keep's own, and for any other
experiment the incumbent it started from (a candidate that is not kept is never
committed; `ratchet show` has its patch).
"""

from __future__ import annotations

import time
from pathlib import Path

from ratchet.errors import UsageError
from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord
from ratchet.plaintext import one_line
from ratchet.private import open_appending, write_private

TSV_COLUMNS_AFTER_METRIC = ["memory_gb", "status", "description"]
TSV_OWN_COLUMNS = [
    "holdout",
    "experiment",
    "decision",
    "why",
    "parent",
    "proposer",
    "duration_s",
    "cost_usd",
    "files",
    "started_at",
]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    # untrusted text: one line, no tabs, no control characters (each visibly escaped)
    return one_line(str(value).strip())


def memory_gb(metrics: dict[str, float]) -> float | None:
    if "memory_gb" in metrics:
        return metrics["memory_gb"]
    if "peak_vram_mb" in metrics:
        return round(metrics["peak_vram_mb"] / 1024, 1)
    return None


RATCHET, AUTORESEARCH = "ratchet", "autoresearch"


def tsv_header(metric: str, fmt: str = RATCHET) -> str:
    own = TSV_OWN_COLUMNS if fmt == RATCHET else []
    return "\t".join(["commit", metric, *TSV_COLUMNS_AFTER_METRIC, *own]) + "\n"


def _autoresearch_row(record: ExperimentRecord) -> str:
    commit = record.commit if record.decision == "keep" and record.commit else record.parent
    memory = memory_gb(record.metrics)
    cells = [
        commit[:7],
        f"{record.value if record.value is not None else 0.0:.6f}",
        f"{memory if memory is not None else 0.0:.1f}",
        record.decision.tsv_status if record.decision is not None else "crash",
        _cell(record.rationale),
    ]
    return "\t".join(cells) + "\n"


def tsv_row(record: ExperimentRecord, fmt: str = RATCHET) -> str:
    if fmt == AUTORESEARCH:
        return _autoresearch_row(record)
    decision = record.decision or ""
    cells = [
        record.commit[:7] if record.commit and decision == "keep" else "",
        record.value,
        memory_gb(record.metrics),
        record.decision.tsv_status if record.decision is not None else "crash",
        record.rationale,
        record.holdout,
        record.id,
        decision,
        record.why,
        record.parent[:7],
        record.proposer,
        record.duration,
        record.cost_usd,
        ",".join(record.files),
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.started_at)),
    ]
    return "\t".join(_cell(c) for c in cells) + "\n"


def export_tsv(
    journal: Journal,
    run: str,
    metric: str,
    path: Path,
    force: bool = False,
    fmt: str = RATCHET,
    outside_state: bool = False,
) -> None:
    """Bring the run's `results.tsv` up to date with the journal, as a run starts.

    Each decision is appended as it is made, so the file is usually complete: then its
    rows are only counted. Decisions it lacks (a kill between the journal and the file,
    experiments marked interrupted at this start) are appended; a file that is missing,
    of another metric or holding rows the journal does not is written afresh.

    `outside_state`: the file is the user's to see (`[run] results` outside `.ratchet/`),
    so one that holds rows when the run has decided nothing yet (autoresearch's own
    results, another run's) is never overwritten: the start is refused, saying so.
    """
    header = tsv_header(metric, fmt)
    decided = journal.decided_count(run)
    if decided == 0 and outside_state:
        _refuse_foreign(path, header)
    if not force:
        try:
            written = _tsv_rows(path, header)
        except OSError:
            written = None
        if written == decided:
            return
        if written is not None and written < decided and fmt == RATCHET:
            missing = _missing_from_tsv(journal, run, path)
            if missing is not None and len(missing) == decided - written:
                with open_appending(path) as handle:
                    for record in missing:
                        handle.write(tsv_row(record))
                return
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (tsv_row(r, fmt) for r in journal.iter_experiments(run, patches=False) if r.decision)
    write_private(path, header + "".join(rows))


def _refuse_foreign(path: Path, header: str) -> None:
    try:
        with path.open("rb") as handle:
            first, second = handle.readline(), handle.readline()
    except FileNotFoundError:
        return
    if second or first.decode(errors="replace") not in {"", header}:
        raise UsageError(
            f"{path.name} already holds results that are not this run's; move it away "
            "(ratchet never overwrites it), or set [run] results to another file"
        )


def _tsv_rows(path: Path, header: str) -> int | None:
    """How many rows `results.tsv` holds, counted without parsing them; None when its
    header is not `header` (another metric, or not ratchet's file)."""
    with path.open("rb") as handle:
        if handle.readline().decode(errors="replace") != header:
            return None
        rows = 0
        while chunk := handle.read(1 << 20):
            rows += chunk.count(b"\n")
        return rows


def _missing_from_tsv(journal: Journal, run: str, path: Path) -> list[ExperimentRecord] | None:
    """The decided experiments `results.tsv` lacks; None when it has rows the journal
    does not know (then it is written afresh)."""
    column = tsv_header("metric").rstrip("\n").split("\t").index("experiment")
    seen: set[int] = set()
    with path.open(errors="replace") as handle:
        next(handle, None)
        for line in handle:
            cells = line.split("\t")
            if len(cells) <= column or not cells[column].isdigit():
                return None
            seen.add(int(cells[column]))
    missing, known = [], 0
    for experiment in journal.decided_ids(run):
        if experiment in seen:
            known += 1
        else:
            missing.append(experiment)
    if known != len(seen):
        return None
    return [r for r in map(journal.experiment, missing) if r is not None]


def append_tsv(record: ExperimentRecord, path: Path, fmt: str = RATCHET) -> None:
    with open_appending(path) as handle:
        handle.write(tsv_row(record, fmt))
