"""`ratchet init --from autoresearch|openevolve|harbor`: fixtures shaped like each source
(written here, not copied), and each imported spec driving a real `ratchet run`."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import experiments, git, make_project, ratchet
from ratchet.importers.autoresearch import measurement_budget
from ratchet.importers.openevolve_eval import numeric_metrics
from ratchet.spec import Spec, parse_spec

PY = sys.executable

# --- autoresearch ------------------------------------------------------------------
PREPARE = """\
# fixed: data, tokenizer, evaluation
TIME_BUDGET = 2  # seconds of training


def evaluate_bpb(lr, vram):
    return 1.0 + (lr - 0.02) ** 2 * 100 - (vram - 45060.2) / 1e6  # a bigger batch helps
"""
TRAIN = """\
import prepare

LR = 0.04
VRAM = 45060.2

val_bpb = prepare.evaluate_bpb(LR, VRAM)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {prepare.TIME_BUDGET:.1f}")
print(f"total_seconds:    {prepare.TIME_BUDGET + 0.4:.1f}")
print(f"peak_vram_mb:     {VRAM:.1f}")
print("num_steps:        953")
"""
PROGRAM_MD = "# autoresearch\nRun `uv run train.py > run.log 2>&1`, then read val_bpb.\n"
AUTORESEARCH_STEPS = """\
import json, os, pathlib
step = json.loads(pathlib.Path(os.environ["RATCHET_BRIEF"]).read_text())["experiment"]
train = pathlib.Path("train.py")
text = train.read_text()
edits = {
    2: ("LR = 0.04", "LR = 0.02", "lower the learning rate"),
    3: ("LR = 0.02", "LR = 0.05", "raise the learning rate"),
    4: ("import prepare", "import prepare\\nraise SystemExit('CUDA out of memory')", "double width"),
    5: ("VRAM = 45060.2", "VRAM = 60000.0", "a bigger batch"),
}
old, new, why = edits[step]
train.write_text(text.replace(old, new))
pathlib.Path("run.log").write_text("the directive's log\\n")
print(why)
"""

ROW = re.compile(r"^[0-9a-f]{7}\t\d+\.\d{6}\t\d+\.\d\t(keep|discard|crash)\t[^\t]*$")


def read_autoresearch_results(path: Path) -> list[dict[str, str]]:
    """A reader written to autoresearch's documented columns, as its analysis reads them."""
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    rows = []
    for line in lines[1:]:
        assert ROW.match(line), line
        commit, val_bpb, memory_gb, status, description = line.split("\t")
        rows.append({"commit": commit, "val_bpb": val_bpb, "memory_gb": memory_gb,
                     "status": status, "description": description})  # fmt: skip
    return rows


def _with_command_proposer(text: str, script: Path) -> str:
    head = text.split("[proposer]")[0]
    sandbox = '[sandbox]\nkind = "process"\n'
    head = head.replace("[sandbox]\n", sandbox) if "[sandbox]" in head else head + sandbox
    return f'{head}\n[proposer]\nkind = "command"\ncommand = "{PY} {script}"\n'


def test_autoresearch_import_runs_and_writes_its_results_tsv(tmp_path: Path) -> None:
    files = {"prepare.py": PREPARE, "train.py": TRAIN, "program.md": PROGRAM_MD,
             "analysis.ipynb": "{}\n"}  # fmt: skip
    project = make_project(tmp_path / "autoresearch", files)
    result = ratchet(project, "init", "--from", "autoresearch")
    assert result.returncode == 0, result.stderr
    assert "TIME_BUDGET 2 s plus start-up and evaluation headroom" in result.stdout
    text = (project / "ratchet.toml").read_text()
    spec = Spec.model_validate(tomllib.loads(text))
    assert spec.scope.editable == ["train.py"] and spec.scope.protected == ["prepare.py"]
    assert spec.scope.directive == "program.md" and spec.scope.outputs == ["run.log"]
    assert (spec.metric.name, spec.metric.goal, spec.metric.budget) == ("val_bpb", "minimize", 122)
    assert spec.run.results == "results.tsv" and spec.run.results_format == "autoresearch"
    assert spec.sandbox.expose == ["~/.cache/autoresearch"]  # its data, outside the project
    script = tmp_path / "steps.py"
    script.write_text(AUTORESEARCH_STEPS)
    text = text.replace('# gates = { memory_gb = "<= 80" }', 'gates = { memory_gb = "<= 50" }')
    (project / "ratchet.toml").write_text(
        _with_command_proposer(text.replace("[run]\n", "[run]\nmax_experiments = 4\n"), script)
    )
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ratchet spec")
    (project / "run.log").write_text("from a manual run\n")  # untracked: does not block
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["id"]: r for r in experiments(project)}
    assert [rows[i]["decision"] for i in (1, 2, 3, 4, 5)] == [
        "keep", "keep", "discard", "crash", "discard"]  # fmt: skip
    assert "memory_gb 58.6 is not <= 50" in rows[5]["why"]  # derived from peak_vram_mb
    results = read_autoresearch_results(project / "results.tsv")
    assert [r["status"] for r in results] == ["keep", "keep", "discard", "crash", "discard"]
    assert results[1]["val_bpb"] == "1.000000" and results[1]["memory_gb"] == "44.0"
    assert results[3]["val_bpb"] == "0.000000" and results[3]["memory_gb"] == "0.0"
    assert results[1]["commit"] == rows[2]["commit_sha"][:7]
    assert results[2]["commit"] == rows[2]["commit_sha"][:7]  # the incumbent it started from
    assert results[1]["description"] == "lower the learning rate"
    # the results file and run.log, untracked at the root, do not block the next start
    result = ratchet(project, "run", "--max-experiments", "1")
    assert "uncommitted" not in result.stderr


def test_autoresearch_budget_leaves_headroom() -> None:
    assert measurement_budget(300) == 600  # its directive kills a run past 10 minutes
    assert measurement_budget(30) == 150  # start-up and evaluation take minutes


# --- OpenEvolve --------------------------------------------------------------------
INITIAL_PROGRAM = """\
# EVOLVE-BLOCK-START
def search():
    return 0.0
# EVOLVE-BLOCK-END


def run_search():
    return search()
"""
EVALUATOR = """\
import importlib.util


class EvaluationResult:
    def __init__(self, metrics, artifacts):
        self.metrics, self.artifacts = metrics, artifacts


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    x = program.run_search()
    score = 1.0 / (1.0 + abs(x - 3.0))
    return EvaluationResult({"value_score": score, "combined_score": score}, {"note": "text"})
"""
CONFIG = """\
max_iterations: 5
llm:
  api_base: "http://127.0.0.1:9/v1"
  models:
    - name: "small-model"
      weight: 0.2
    - name: "big-model"
      weight: 0.8
prompt:
  system_message: "Find the minimum of the function."
evaluator:
  timeout: 20
"""
OPENEVOLVE_STEPS = """\
import json, os, pathlib
step = json.loads(pathlib.Path(os.environ["RATCHET_BRIEF"]).read_text())["experiment"]
program = pathlib.Path("example/initial_program.py")
text = program.read_text()
if step == 2:  # inside the block
    program.write_text(text.replace("return 0.0", "return 2.5"))
elif step == 3:  # outside: return the known optimum
    program.write_text(text.replace("return search()", "return 3.0"))
elif step == 4:  # the evaluator
    pathlib.Path("example/evaluator.py").write_text("def evaluate(p):\\n    return {'combined_score': 1.0}\\n")
elif step == 5:  # inside the block, a score printed by the program itself
    program.write_text(text.replace("return 2.5", "return 2.5\\nprint('{\\"combined_score\\": 99.0}')"))
else:  # the same, then an exit before the evaluator can answer
    fake = "import os\\nprint('combined_score: 99.0', flush=True)\\nos._exit(0)"
    program.write_text(text.replace("return 2.5", "return 2.5\\n" + fake))
"""


def test_openevolve_import_runs_with_regions_and_config(tmp_path: Path) -> None:
    files = {"example/initial_program.py": INITIAL_PROGRAM, "example/evaluator.py": EVALUATOR,
             "example/config.yaml": CONFIG}  # fmt: skip
    project = make_project(tmp_path / "oe", files)
    result = ratchet(project, "init", "--from", "openevolve", "example")
    assert result.returncode == 0, result.stderr
    assert "wrote example/directive.md" in result.stdout
    text = (project / "ratchet.toml").read_text()
    spec = Spec.model_validate(tomllib.loads(text))
    assert spec.scope.editable == ["example/initial_program.py#EVOLVE-BLOCK"]
    assert spec.scope.protected == ["example/evaluator.py"]
    assert spec.scope.directive == "example/directive.md"
    assert (spec.metric.name, spec.metric.goal, spec.metric.budget) == (
        "combined_score",
        "maximize",
        60,
    )
    assert spec.run.max_experiments == 5 and spec.metric.strict
    assert (spec.proposer.kind, spec.proposer.model) == ("llm", "big-model")
    assert spec.proposer.base_url == "http://127.0.0.1:9/v1"
    script = tmp_path / "steps.py"
    script.write_text(OPENEVOLVE_STEPS)
    (project / "ratchet.toml").write_text(
        _with_command_proposer(text, script) + '[policy]\nkind = "greedy"\n'
    )
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ratchet spec")
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["id"]: r for r in experiments(project)}
    assert rows[1]["value"] == pytest.approx(0.25)
    assert rows[2]["decision"] == "keep" and rows[2]["value"] == pytest.approx(1 / 1.5)
    assert rows[3]["decision"] == "out-of-scope"
    assert (
        "example/initial_program.py at line 8, outside its EVOLVE-BLOCK (lines 2-3)"
        in rows[3]["why"]
    )
    assert rows[4]["decision"] == "out-of-scope" and "example/evaluator.py" in rows[4]["why"]
    # what the program prints cannot pass for the evaluator's answer
    assert rows[5]["decision"] == "no-metric" and "reported 2 times" in rows[5]["why"]
    assert rows[6]["decision"] == "crash" and rows[6]["value"] is None


def test_openevolve_runner_reads_results_as_openevolve_does() -> None:
    class Result:
        def __init__(self) -> None:
            self.metrics = {"a": 1, "b": 3.0, "label": "x", "ok": True}

    assert numeric_metrics(Result()) == {"a": 1.0, "b": 3.0, "combined_score": 2.0}
    assert numeric_metrics({"combined_score": 0.5, "a": 9}) == {"combined_score": 0.5, "a": 9.0}
    with pytest.raises(TypeError):
        numeric_metrics(0.5)


# --- Harbor ------------------------------------------------------------------------
def _harbor_task(name: str) -> dict[str, str]:
    return {
        f"tasks/{name}/instruction.md": f"Write {name}.txt containing ok.\n",
        f"tasks/{name}/task.toml": "[agent]\ntimeout_sec = 60\n[verifier]\ntimeout_sec = 30\n",
        f"tasks/{name}/environment/Dockerfile": "FROM python:3.12-slim\n",
        f"tasks/{name}/tests/test.sh": f"test -f {name}.txt && echo 1 > /logs/verifier/reward.txt\n",
    }


def test_harbor_import_writes_a_harness_spec(tmp_path: Path) -> None:
    files = {"agent.py": "def run(instruction):\n    return None\n"}
    for name in ("alpha", "beta", "gamma"):
        files.update(_harbor_task(name))
    files["tasks/notes/README.md"] = "not a task\n"
    project = make_project(tmp_path / "h", files)
    result = ratchet(project, "init", "--from", "harbor", "tasks")
    assert result.returncode == 0, result.stderr
    assert "3 tasks in tasks" in result.stdout
    data = tomllib.loads((project / "ratchet.toml").read_text())
    assert data["suite"]["tasks"] == "tasks/" and data["suite"]["agent"] == "agent.py:run"
    assert data["suite"]["runner"] in {"local", "harbor"} and data["suite"]["holdout"] == 0.0
    assert data["scope"]["editable"] == ["agent.py"] and data["scope"]["protected"] == ["tasks"]
    assert (data["metric"]["name"], data["metric"]["goal"]) == ("reward", "maximize")
    assert data["suite"]["model"] == "gpt-5-mini" and data["proposer"]["kind"] == "llm"
    if "suite" in Spec.model_fields:  # harness mode's model, from its own branch
        parse_spec(data, "ratchet.toml")


def test_a_harbor_import_runs(tmp_path: Path) -> None:
    """The imported spec drives a real `ratchet run`: the local runner, the suite's
    verifiers (written for both layers), the llm proposer against a loopback server."""
    from fake_llm import FakeLLM, tool_call

    agent = (
        "import os, re\n"
        "def run(instruction, workspace):\n"
        "    name = re.search(r'Write (\\S+) containing', instruction).group(1)\n"
        "    open(os.path.join(workspace, name), 'w').write('ok')\n"
    )
    files = {"agent.py": agent}
    for name in ("alpha", "beta", "gamma"):
        files.update(_harbor_task(name))
        files[f"tasks/{name}/tests/test.sh"] = (
            f'if test -f {name}.txt; then echo 1; else echo 0; fi > "$RATCHET_LOGS/verifier/reward.txt"\n'
        )
    project = make_project(tmp_path / "h", files)
    assert ratchet(project, "init", "--from", "harbor", "tasks").returncode == 0
    script = [tool_call("finish", rationale="nothing to change")]
    with FakeLLM(script) as meta:
        spec = project / "ratchet.toml"
        text = spec.read_text().replace('runner = "harbor"', 'runner = "local"')  # harbor on PATH
        spec.write_text(text + f'base_url = "{meta.base_url}"\n'
                        'api_key_env = "META_KEY"\nretries = 0\n[run]\nmax_experiments = 1\n')  # fmt: skip
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "imported")
        result = ratchet(project, "run", env={"META_KEY": "sk-meta-0123456789"})
    assert result.returncode == 0, result.stderr
    baseline = experiments(project)[0]
    assert baseline["decision"] == "keep" and baseline["value"] == 1.0, baseline["why"]
    assert "3 trials of 3 search tasks" in baseline["why"]
    assert meta.requests and meta.requests[0]["model"] == "gpt-5-mini"


def test_a_tracked_suite_gets_no_holdout_and_says_how_to_seal_one(tmp_path: Path) -> None:
    """Eight tasks would hold a quarter out, but tracked tasks sit in every proposer's
    worktree: the import holds none out and says how to get a sealed holdout; the same
    tasks ignored by git get theirs."""
    names = [f"t{i}" for i in range(8)]
    tracked = {"agent.py": "x = 1\n"}
    for name in names:
        tracked.update(_harbor_task(name))
    project = make_project(tmp_path / "tracked", tracked)
    result = ratchet(project, "init", "--from", "harbor", "tasks")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((project / "ratchet.toml").read_text())["suite"]["holdout"] == 0.0
    assert (
        "tasks is tracked by git" in result.stdout and "git rm -r --cached tasks" in result.stdout
    )

    ignored = make_project(tmp_path / "ignored", {"agent.py": "x = 1\n", ".gitignore": "tasks/\n"})
    for path, text in tracked.items():
        if path.startswith("tasks/"):
            (ignored / path).parent.mkdir(parents=True, exist_ok=True)
            (ignored / path).write_text(text)
    result = ratchet(ignored, "init", "--from", "harbor", "tasks")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((ignored / "ratchet.toml").read_text())["suite"]["holdout"] == 0.25
    assert "tracked by git" not in result.stdout


def test_harbor_import_without_tasks_is_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "h", {"agent.py": "x = 1\n"})
    result = ratchet(project, "init", "--from", "harbor")
    assert result.returncode == 2
    assert "holds no Harbor task" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- the plain guess ---------------------------------------------------------------
def test_init_never_guesses_an_evaluator_test_or_data_file(tmp_path: Path) -> None:
    files = {"evaluator.py": "x = 1\n", "initial_program.py": "y = 2\n",
             "test_program.py": "z = 3\n", "data_loader.py": "w = 4\n"}  # fmt: skip
    project = make_project(tmp_path / "g", files)
    result = ratchet(project, "init")
    assert result.returncode == 0, result.stderr
    assert "assumed: editable = initial_program.py" in result.stdout
    assert "; not data_loader.py, evaluator.py, test_program.py" in result.stdout
    spec = Spec.model_validate(tomllib.loads((project / "ratchet.toml").read_text()))
    assert spec.scope.editable == ["initial_program.py"]


def test_init_on_a_terminal_asks_which_file_when_the_guess_is_ambiguous(tmp_path: Path) -> None:
    """On a terminal, two candidates are a question, not an assumption: the answer typed
    at the prompt is the editable file."""
    import os
    import pty
    import select
    import subprocess
    import time

    project = make_project(tmp_path / "ask", {"model.py": "a = 1\n", "solver.py": "b = 2\n"})
    main, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "ratchet", "init"], cwd=project,
                               stdin=child, stdout=child, stderr=child, env=env)  # fmt: skip
    os.close(child)
    seen, answered = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"Which file may proposals change?" in seen:
            os.write(main, b"solver.py\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    os.close(main)
    assert process.wait(timeout=30) == 0, seen.decode(errors="replace")
    assert answered, seen.decode(errors="replace")
    assert b"model.py, solver.py" in seen
    spec = Spec.model_validate(tomllib.loads((project / "ratchet.toml").read_text()))
    assert spec.scope.editable == ["solver.py"]
