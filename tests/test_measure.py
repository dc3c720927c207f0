"""Reading the metric from what a command prints or writes, and capping what it prints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ratchet.measure import measure_candidate, parse_metrics, read_metric
from ratchet.sandbox import ProcessSandbox, run_process
from ratchet.spec import MetricSpec


def spec(**fields: object) -> MetricSpec:
    return MetricSpec.model_validate({"command": "true", "name": "loss", **fields})


@pytest.mark.parametrize(
    ("output", "value"),
    [
        ("loss: 1.5", 1.5),
        ("loss=2e-3", 0.002),
        ('{"loss": 0.25, "acc": 0.9}', 0.25),
        ("step 1\nloss: 3\nstep 2\nloss: 2.5\n", 2.5),  # the last occurrence wins
        ("  loss :  -4  ", -4.0),
        ("loss: nan", float("nan")),
    ],
)
def test_metric_formats(output: str, value: float) -> None:
    found, _, _ = read_metric(output, spec(), Path("."))
    assert found is not None
    assert found == value or (found != found and value != value)


def test_other_numbers_become_secondary_metrics() -> None:
    metrics, seen = parse_metrics("peak_vram_mb: 2048\nloss: 1\nloss: 2\nnot a metric: x\n")
    assert metrics == {"peak_vram_mb": 2048.0, "loss": 2.0}
    assert seen["loss"] == 2


def test_a_strict_metric_printed_twice_is_missing() -> None:
    value, _, why = read_metric("loss: 1\nloss: 0.1\n", spec(strict=True), Path("."))
    assert value is None
    assert why == "'loss' was reported 2 times and the metric is strict"


def test_a_pattern_reads_the_number_from_its_group() -> None:
    value, _, _ = read_metric("final -> 0.42 <-\n", spec(pattern=r"-> ([0-9.]+) <-"), Path("."))
    assert value == 0.42


def test_a_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "out.json").write_text('{"loss": 0.7, "memory_gb": 3}')
    value, metrics, _ = read_metric("loss: 99", spec(file="out.json"), tmp_path)
    assert value == 0.7  # the file, not the output
    assert metrics["memory_gb"] == 3
    value, _, why = read_metric("", spec(file="missing.json"), tmp_path)
    assert value is None and "was not written" in why


def test_with_an_evaluator_only_its_output_counts(tmp_path: Path) -> None:
    (tmp_path / "eval.py").write_text("print('loss: 0.5')\n")
    forged = spec(command="echo 'loss: 0.0001'", evaluate=f"{sys.executable} eval.py")
    result = measure_candidate(tmp_path, forged, ProcessSandbox(), dict(os.environ), seed=0)
    assert result.ok and result.value == 0.5
    silent = spec(command="echo 'loss: 0.0001'", evaluate="true")
    result = measure_candidate(tmp_path, silent, ProcessSandbox(), dict(os.environ), seed=0)
    assert result.status == "no-metric"


def test_the_seed_is_in_the_environment(tmp_path: Path) -> None:
    seeded = spec(command='echo "loss: $RATCHET_SEED"')
    result = measure_candidate(tmp_path, seeded, ProcessSandbox(), dict(os.environ), seed=7)
    assert result.value == 7


def test_a_flood_of_output_keeps_head_and_tail(tmp_path: Path) -> None:
    command = "echo first; head -c 50000000 /dev/zero | tr '\\0' x; echo; echo 'loss: 1.25'"
    result = run_process(command, tmp_path, dict(os.environ), budget=60)
    assert result.output_bytes > 50_000_000
    assert len(result.output) < 30_000
    assert result.output.startswith("first")
    assert "bytes of output dropped" in result.output
    assert result.output.rstrip().endswith("loss: 1.25")


def test_the_budget_kills_the_group_on_time(tmp_path: Path) -> None:
    result = run_process("sleep 30 & sleep 30", tmp_path, dict(os.environ), budget=0.5, grace=0.2)
    assert result.timed_out and result.returncode is None
    assert result.duration < 5
