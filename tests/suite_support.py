"""Small harness-mode projects for the suite tests: Harbor task folders written by the
tests themselves, a task agent on the real openai SDK, and the journal's trial rows."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from conftest import make_project, write_files

# The task agent: asks its model (the fake server) once, then, in `good` mode, writes the
# reply to answer.txt; in `sleep` mode it outlives the task's timeout. It reports usage.
AGENT = """
import os, time
from openai import OpenAI

MODE = "bad"


def run(instruction, workspace):
    client = OpenAI(base_url=os.environ["TASK_LLM_URL"], api_key="sk-task-0123456789", max_retries=0)
    reply = client.chat.completions.create(
        model="task-model", messages=[{"role": "user", "content": instruction}]
    )
    if MODE == "sleep" or "SLOW" in instruction:
        time.sleep(60)
    if MODE == "good":
        with open(os.path.join(workspace, "answer.txt"), "w") as handle:
            handle.write(reply.choices[0].message.content or "")
    usage = reply.usage
    return {"usage": {"input_tokens": usage.prompt_tokens,
                      "output_tokens": usage.completion_tokens, "cost_usd": 0.25}}
"""

# The same agent, the same request to the same server and the same report, sent with the
# standard library: for the tests of what ratchet decides from many trials, where each
# trial's `import openai` (about 2 s of CPU) would be most of their time. The real SDK
# stays in the runs of test_suite_wiring.py and in the one through bwrap's network.
STDLIB_AGENT = """
import os, time
import json, types, urllib.request

MODE = "bad"


def run(instruction, workspace):
    request = urllib.request.Request(
        os.environ["TASK_LLM_URL"] + "/chat/completions",
        data=json.dumps({"model": "task-model",
                         "messages": [{"role": "user", "content": instruction}]}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer sk-task-0123456789"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response, object_hook=lambda fields: types.SimpleNamespace(**fields))
    if MODE == "sleep" or "SLOW" in instruction:
        time.sleep(60)
    if MODE == "good":
        with open(os.path.join(workspace, "answer.txt"), "w") as handle:
            handle.write(reply.choices[0].message.content or "")
    usage = reply.usage
    return {"usage": {"input_tokens": usage.prompt_tokens,
                      "output_tokens": usage.completion_tokens, "cost_usd": 0.25}}
"""

# the verifier: reward 1 when the agent left answer.txt, else 0 (Harbor's paths via the
# variables the process layer offers)
PASS_IF_ANSWERED = """#!/bin/sh
if [ -s answer.txt ]; then echo 1 > "$RATCHET_LOGS/verifier/reward.txt"; else echo 0 > "$RATCHET_LOGS/verifier/reward.txt"; fi
echo verified
"""
# a holdout verifier that a candidate overfitting the search split fails
PASS_IF_SILENT = """#!/bin/sh
if [ -e answer.txt ]; then echo '{"reward": 0}' > "$RATCHET_LOGS/verifier/reward.json"; else echo '{"reward": 1}' > "$RATCHET_LOGS/verifier/reward.json"; fi
"""
ALWAYS_PASS = """#!/bin/sh
echo 1 > "$RATCHET_LOGS/verifier/reward.txt"
"""
NO_REWARD = """#!/bin/sh
echo "forgot to write the reward"
"""


def task_files(name: str, instruction: str, test: str, agent_timeout: float = 30) -> dict[str, str]:
    return {
        f"tasks/{name}/instruction.md": instruction,
        f"tasks/{name}/task.toml": (
            f'version = "1.0"\n[agent]\ntimeout_sec = {agent_timeout}\n'
            "[verifier]\ntimeout_sec = 30\n"
        ),
        f"tasks/{name}/environment/Dockerfile": "FROM scratch\n",
        f"tasks/{name}/environment/data.txt": f"data of {name}\n",
        f"tasks/{name}/tests/test.sh": test,
    }


def suite_project(
    root: Path,
    tasks: dict[str, str],
    proposer: str,
    *,
    holdout: str = "0.0",
    run: str = "max_experiments = 1",
    extra: str = "",
    sandbox: str = "process",
    sandbox_extra: str = "",
    concurrency: int = 4,
    files: dict[str, str] | None = None,
) -> Path:
    """A project whose agent.py is the harness and whose tasks/ (ignored by git) is the
    suite; `tasks` are the files of task_files."""
    spec = f"""
[sandbox]
kind = "{sandbox}"
{sandbox_extra}
[scope]
editable = ["agent.py"]
[suite]
tasks = "tasks"
agent = "agent.py:run"
concurrency = {concurrency}
holdout = {holdout}
model = "task-model"
{extra}
[policy]
confidence = 0.9
[run]
{run}
[proposer]
{proposer}
"""
    files = {".gitignore": ".ratchet/\ntasks/\n", "agent.py": AGENT, **(files or {})}
    project = make_project(root, files, spec)
    write_files(project, tasks)
    for name in tasks:
        if name.endswith(".sh"):
            (project / name).chmod(0o755)
    return project


def command_proposer(command: str) -> str:
    return f"kind = \"command\"\ncommand = '''{command}'''\nbudget = \"20s\""


def flip_mode(mode: str) -> str:
    """A command proposer that sets the agent's MODE."""
    return command_proposer(
        f"{sys.executable} -c \"import re,pathlib; p=pathlib.Path('agent.py'); "
        f"p.write_text(re.sub('MODE = .*', 'MODE = \\\\'{mode}\\\\'', p.read_text()))\""
    )


def trial_rows(project: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY id")]
    db.close()
    return rows
