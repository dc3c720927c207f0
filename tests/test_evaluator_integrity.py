"""What the evaluator sees is what the spec declares (issue 10, class 2).

A candidate whose program, while it runs, plants a module named like a standard-library
one, a forged `.pyc`, a `sitecustomize.py`, a `usercustomize.py` or `.pth` in the user's
site-packages, or rewrites a file of its own tree, must never get the forged score its
plant would make the protected evaluator print: each case is a real `ratchet run` in a
temporary repository, under `process` and `bwrap`, with `strict = true`, followed by an
honest experiment that is kept (the loop goes on).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import pygit2
import pytest

from conftest import experiments, git, layer_or_skip, make_project, ratchet
from ratchet.measure import METRICS_FILE_CAP, measure_candidate, read_metric
from ratchet.restore import GitPristine, settle, take_snapshot
from ratchet.sandbox import ProcessSandbox
from ratchet.spec import MetricSpec

PY = sys.executable
LAYERS = ["process", "bwrap"]
FORGED = -1000  # what every plant makes the evaluator print; the honest value is 49

PICK = "import json, os\nprint(json.load(open(os.environ['RATCHET_BRIEF']))['experiment'])\n"
SCORING = "def score(x):\n    return (x - 2) ** 2\n"
EVALUATOR = """\
import json, re
from scoring import score
X = int(re.search(r"X = (\\d+)", open("value.py").read()).group(1))
print(json.dumps({"score": score(X)}))
"""
FORGE_JSON = "import json\njson.dumps = lambda obj: '{\"score\": -1000}'\n"

CANDIDATES = {
    "json.py": (
        "X = 9\n"
        "open('json.py', 'w').write(\"def dumps(obj):\\n    return '{\\\"score\\\": -1000}'\\n\")\n"
    ),
    "forged .pyc": (
        "X = 9\n"
        "import importlib.util, os, py_compile, tempfile\n"
        "src = os.path.join(tempfile.mkdtemp(), 'scoring.py')\n"
        "open(src, 'w').write('def score(x):\\n    return -1000\\n')\n"
        "py_compile.compile(src, cfile=importlib.util.cache_from_source('scoring.py'),\n"
        "    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n"
    ),
    "sitecustomize.py": f"X = 9\nopen('sitecustomize.py', 'w').write({FORGE_JSON!r})\n",
    "user site": (
        "X = 9\n"
        "import os, site\n"
        "where = site.getusersitepackages()\n"
        "os.makedirs(where, exist_ok=True)\n"
        f"open(os.path.join(where, 'usercustomize.py'), 'w').write({FORGE_JSON!r})\n"
        "open(os.path.join(where, 'forge.pth'), 'w').write("
        f"{FORGE_JSON.replace(chr(10), '; ').rstrip('; ')!r} + '\\n')\n"
    ),
    "rewrites value.py": "X = 9\nopen('value.py', 'w').write('X = 2\\n')\n",
    "plants in data/": (  # a folder protected whole, which the restore does not walk
        "X = 9\n"
        "try:\n"
        "    open('data/json.py', 'w').write('')\n"
        "except OSError as error:\n"
        "    print('read-only:', error)\n"
    ),
    "rewrites scoring.py": (
        "X = 9\n"
        "try:\n"
        "    open('scoring.py', 'w').write('def score(x):\\n    return -1000\\n')\n"
        "except OSError as error:\n"
        "    print('read-only:', error)\n"
    ),
}


HONEST = "echo 'X = 3' > value.py"


def spec_text(layer: str, metric_extra: str = "", evaluate: str = f"{PY} evaluate.py",
              honest: str = HONEST) -> str:  # fmt: skip
    """Experiment 2 is the candidate in bad.txt, experiment 3 an honest X = 3."""
    propose = f'if [ "$({PY} pick.py)" = 2 ]; then cp bad.txt value.py; else {honest}; fi'
    return f"""
[scope]
editable = ["value.py"]
protected = ["evaluate.py", "scoring.py", "data"]
[metric]
command = "{PY} value.py"
evaluate = "{evaluate}"
name = "score"
strict = true
budget = "20s"
grace = "0.5s"
{metric_extra}
[run]
max_experiments = 2
[proposer]
kind = "command"
command = '''{propose}'''
[sandbox]
kind = "{layer}"
"""


def outputs_of(project: Path, experiment: int) -> str:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    rows = db.execute("SELECT output FROM measurements WHERE experiment = ?", (experiment,))
    text = "\n".join(row[0] for row in rows)
    db.close()
    return text


def run_two(project: Path, home: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The run: baseline, the candidate under test, an honest X = 3 that must be kept."""
    env = {"HOME": str(home), "PYTHONUSERBASE": str(home / "userbase")}
    result = ratchet(project, "run", env=env, timeout=240)
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert len(rows) == 3, [(r["decision"], r["why"]) for r in rows]
    assert rows[0]["value"] == 9  # the baseline: X = 5
    bad, honest = rows[1], rows[2]
    assert honest["decision"] == "keep", honest["why"]  # the loop went on, and works
    assert honest["value"] == 1
    assert git(project, "status", "--porcelain") == ""
    return bad, honest


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("plant", list(CANDIDATES))
def test_a_file_planted_at_run_time_never_forges_the_score(
    tmp_path: Path, layer: str, plant: str
) -> None:
    layer_or_skip(layer)
    evaluate = f"{PY} evaluate.py"
    if plant == "sitecustomize.py":  # an evaluator whose import path holds the worktree
        evaluate = f"PYTHONPATH=. {PY} evaluate.py"
    files = {"value.py": "X = 5\n", "evaluate.py": EVALUATOR, "scoring.py": SCORING,
             "bad.txt": CANDIDATES[plant], "pick.py": PICK, "data/n.txt": "1\n"}  # fmt: skip
    project = make_project(tmp_path / "p", files, spec_text(layer, evaluate=evaluate))
    home = tmp_path / "home"
    home.mkdir()
    bad, _ = run_two(project, home)
    assert bad["value"] != FORGED
    output = outputs_of(project, int(str(bad["id"])))
    if plant in ("rewrites scoring.py", "plants in data/") and layer == "process":
        # writable under the process layer: a protected change is `tampered`
        assert bad["decision"] == "tampered", bad["why"]
        assert (
            "scoring.py changed" if plant.startswith("rewrites") else "data/json.py added"
        ) in str(bad["why"])
        return
    assert bad["decision"] == "discard", (bad["why"], output)
    assert bad["value"] == 49  # the evaluator's honest value for X = 9
    if plant in ("json.py", "sitecustomize.py"):
        assert f"removed (not declared in [metric] outputs): {plant}" in output
    elif plant == "forged .pyc":
        assert "removed (not declared in [metric] outputs): __pycache__" in output
    elif plant == "rewrites value.py":
        assert "restored to the candidate's content: value.py" in output
    site = home / "userbase" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    planted = site / "site-packages" / "usercustomize.py"
    if plant == "user site":
        # outside the worktree: written on the host under the process layer, where the
        # evaluator's Python does not read the user's site-packages; bwrap hid the folder
        assert planted.is_file() == (layer == "process")


@pytest.mark.parametrize("layer", LAYERS)
def test_a_declared_output_reaches_the_evaluator_and_nothing_else(
    tmp_path: Path, layer: str
) -> None:
    layer_or_skip(layer)
    evaluator = (
        "import json, os\n"
        "data = json.load(open('out.json'))\n"
        "print(json.dumps({'score': (data['X'] - 2) ** 2,\n"
        "                  'seen_extra': int(os.path.exists('extra.json'))}))\n"
    )
    program = (
        "import json, os\nX = {x}\n"
        "os.makedirs('results', exist_ok=True)\n"
        "json.dump({{'X': X}}, open('out.json', 'w'))\n"
        "json.dump({{'X': 2}}, open('extra.json', 'w'))\n"
    )
    # the candidate under test hands over a link in place of its output file
    linker = "import os\nX = 9\nos.symlink({target!r}, 'out.json')\n"
    forged = tmp_path / "forged.json"
    forged.write_text('{"X": 2}')
    spec = spec_text(layer, 'outputs = ["out.json"]', honest="cp good.txt value.py")
    files = {"value.py": program.format(x=5), "good.txt": program.format(x=3),
             "bad.txt": linker.format(target=str(forged)), "evaluate.py": evaluator,
             "scoring.py": SCORING, "pick.py": PICK}  # fmt: skip
    project = make_project(tmp_path / "p", files, spec)
    home = tmp_path / "home"
    home.mkdir()
    bad, honest = run_two(project, home)
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    metrics = [json.loads(m) for (m,) in db.execute("SELECT metrics FROM measurements")]
    db.close()
    seen = [m["seen_extra"] for m in metrics if "seen_extra" in m]
    assert seen and set(seen) == {0}  # extra.json was written every time, never seen
    assert bad["decision"] == "crash", bad["why"]  # no out.json reached the evaluator
    assert "evaluator exited" in str(bad["why"])
    assert "not handed over: out.json (a link)" in outputs_of(project, int(str(bad["id"])))
    assert honest["decision"] == "keep"


# ---- the restore itself, on a git worktree, and on a Ray worker's unpacked tree ----


def _repo(tmp_path: Path) -> tuple[Path, str]:
    """A git worktree (its `.git` a pointer file, as a slot's) and its commit."""
    files = {"train.py": "print('loss: 1')\n", "data/a.txt": "a\n", "tool.cfg": "echo hi\n"}
    project = make_project(tmp_path / "repo", files)
    git(project, "worktree", "add", "-q", "--detach", str(tmp_path / "wt"), "HEAD")
    return tmp_path / "wt", git(project, "rev-parse", "HEAD")


def test_settle_undoes_the_command_without_following_links(tmp_path: Path) -> None:
    root, head = _repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host\n")
    pristine = GitPristine(pygit2.Repository(str(root)), head)
    before = take_snapshot(root)
    # what a hostile command does: plants, rewrites, swaps a folder for a link
    (root / "json.py").write_text("x = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"forged")
    (root / "train.py").write_text("print('loss: 0')\n")
    (root / "tool.cfg").chmod(0o755)
    shutil.rmtree(root / "data")
    (root / "data").symlink_to(outside)
    (root / "out.json").write_text("{}")
    (root / "out.py").write_text("")
    (root / "links").mkdir()
    (root / "links" / "l.json").symlink_to(outside / "keep.txt")
    (root / ".git").write_text("gitdir: /elsewhere\n")
    for folder in ("pkg", "pkg.d"):  # "pkg.d" sorts between "pkg" and "pkg/..."
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text("")
    settled = settle(root, before, pristine,
                     outputs=["out.json", "out.py", "links/*"], protected=["data"])  # fmt: skip
    assert sorted(settled.removed) == [
        "__pycache__", "json.py", "links", "out.py", "pkg", "pkg.d"]  # fmt: skip
    assert settled.outputs == ["out.json"]
    assert "out.py (code the evaluator could import)" in settled.refused
    assert "links/l.json (a link)" in settled.refused
    assert (root / "train.py").read_text() == "print('loss: 1')\n"
    assert (root / "tool.cfg").stat().st_mode & 0o111 == 0
    assert (root / "data").is_dir() and not (root / "data").is_symlink()
    assert (root / "data" / "a.txt").read_text() == "a\n"
    assert settled.tampered == ["data/a.txt changed"]  # the protected file, gone and back
    assert sorted(os.listdir(outside)) == ["keep.txt"]  # nothing written through the link
    assert (root / ".git").read_text().startswith("gitdir: ") and git(root, "status", "-s") == (
        "?? out.json")  # fmt: skip


def test_what_a_measurement_leaves_or_finds_is_gone_before_the_next(tmp_path: Path) -> None:
    root, _ = _repo(tmp_path)
    (root / "json.py").write_text("")  # not in the candidate's tree: gone before the command
    metric = MetricSpec(command="test ! -e json.py && echo 'loss: 1' && touch made.txt",
                        name="loss")  # fmt: skip
    m = measure_candidate(root, metric, ProcessSandbox(), dict(os.environ), 0)
    assert m.ok, m.output
    assert not (root / "json.py").exists() and not (root / "made.txt").exists()
    assert git(root, "status", "--porcelain") == ""


def test_a_metrics_file_is_never_read_through_a_link_nor_whole(tmp_path: Path) -> None:
    metric = MetricSpec(command="true", name="loss", file="m.json")
    secret = tmp_path / "secret.json"
    secret.write_text('{"loss": 0.001}')
    work = tmp_path / "w"
    work.mkdir()
    (work / "m.json").symlink_to(secret)
    value, _, why = read_metric("", metric, work)
    assert value is None and why.startswith(
        "the metrics file is refused: m.json is a symbolic link"
    )
    (work / "m.json").unlink()
    (work / "m.json").write_text('{"loss": 1, "pad": "' + "x" * METRICS_FILE_CAP + '"}')
    value, _, why = read_metric("", metric, work)
    assert value is None and "m.json is larger than 1 MiB" in why
    nested = MetricSpec(command="true", name="loss", file="out/m.json")
    (work / "out").symlink_to(tmp_path)
    (tmp_path / "m.json").write_text('{"loss": 0.001}')
    value, _, why = read_metric("", nested, work)
    assert value is None and "out is a symbolic link" in why


def test_the_evaluator_runs_without_the_user_site_and_writes_no_bytecode(tmp_path: Path) -> None:
    root, _ = _repo(tmp_path)
    (root / "helper.py").write_text("X = 1\n")
    git(root, "add", "helper.py")  # in the index: the candidate's tree, by default
    probe = (
        f'{PY} -c \'import helper, sys, os; print("loss:", 1);'
        f' print("nousersite:", int(sys.flags.no_user_site));'
        f' print("dontwrite:", int(sys.dont_write_bytecode))\''
    )
    metric = MetricSpec(command="true", evaluate=probe, name="loss")
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "cache")}
    m = measure_candidate(root, metric, ProcessSandbox(), env, 0)
    assert m.ok, m.why
    assert m.metrics["nousersite"] == 1 and m.metrics["dontwrite"] == 1
    assert not (root / "__pycache__").exists() and not (tmp_path / "cache").exists()


def test_a_ray_worker_restores_from_its_unpacked_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own function, on a shipped base and a patch (no cluster is needed to
    call it: the base is put where the node's cache would hold it)."""
    pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra")
    from ratchet.executors.ray import Job, archive, measure_on_worker

    files = {"value.py": "X = 5\n", "evaluate.py": EVALUATOR, "scoring.py": SCORING}
    root = make_project(tmp_path / "repo", files)
    repo = pygit2.Repository(str(root))
    base = repo.revparse_single("HEAD").peel(pygit2.Tree)
    (root / "value.py").write_text(CANDIDATES["json.py"] + CANDIDATES["rewrites value.py"])
    git(root, "commit", "-qam", "candidate")
    target = repo.revparse_single("HEAD").peel(pygit2.Tree)
    patch = b"".join(p.data for p in base.diff_to_tree(target) if p is not None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node"))
    cache = tmp_path / "node" / "ratchet-ray" / f"base-{base.id}"
    cache.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive(repo, base))) as tar:
        tar.extractall(cache, filter="tar")
    metric = MetricSpec(command=f"{PY} value.py", evaluate=f"{PY} evaluate.py", name="score",
                        strict=True)  # fmt: skip
    job = Job(str(target.id), metric, dict(os.environ), 0, ["evaluate.py", "scoring.py"], None,
              base_id=str(base.id), patch=patch)  # fmt: skip
    m = measure_on_worker(job, [])
    assert not isinstance(m, str)
    assert m.ok and m.value == 49, m.output  # X = 9, honestly scored
    assert "removed (not declared in [metric] outputs): json.py" in m.output
    assert "restored to the candidate's content: value.py" in m.output
    assert (cache / "value.py").read_text() == "X = 5\n"  # the node's base is untouched
    # with a shared repository instead, the clean copies come from its git objects
    m = measure_on_worker(replace(job, shared_path=str(root), base_id="", patch=b""), [])
    assert not isinstance(m, str) and m.value == 49, m.output
