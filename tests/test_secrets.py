"""Secrets never reach a candidate's environment, its log, the journal, a brief or an export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import experiments, ratchet
from ratchet.environment import Redactor, child_environment, is_secret_name

SECRETS = {
    "OPENAI_API_KEY": "sk-test-0123456789abcdef",
    "GITHUB_TOKEN": "ghp_secretvalue987654",
    "DB_PASSWORD": "hunter2hunter2",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENG",
    "GCP_CREDENTIALS": "credential-blob-42",
    "HF_TOKEN": "hf_allowlisted_value_1",
}
PRINT_ENV = "import os\nfor k, v in sorted(os.environ.items()):\n    print(f'{k}={v}')\nX = 2\n"


def _everything_written(project: Path) -> bytes:
    state = project / ".ratchet"
    blobs = [p.read_bytes() for p in state.rglob("*") if p.is_file() and ".git" not in p.parts]
    return b"\n".join(blobs)


def test_a_candidate_that_prints_its_environment_leaks_nothing(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate.py"
    candidate.write_text(PRINT_ENV)
    # the proposer also prints its environment: what it sees ends up in the rationale
    project = score_project(
        f"cp {candidate} value.py && env | sort",
        sandbox_extra='allow_env = ["HF_TOKEN"]',
    )
    result = ratchet(project, "run", env={**SECRETS, "HARMLESS_SETTING": "visible-value"})
    assert result.returncode == 0, result.stderr
    row = experiments(project)[-1]
    assert row["decision"] == "keep"
    written = _everything_written(project)
    for name, value in SECRETS.items():
        assert value.encode() not in written, f"{name}'s value was written"
        assert value not in result.stdout + result.stderr
    # the candidate never saw the secrets; the allow-listed one it saw is masked in its log
    outputs = written.decode(errors="replace")
    assert "OPENAI_API_KEY=" not in outputs
    assert "HF_TOKEN=***" in outputs
    assert "HARMLESS_SETTING=visible-value" in outputs  # ordinary variables pass through


def test_the_proposer_gets_only_the_secrets_named_for_it(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    seen = tmp_path / "seen.json"
    dump = f"python3 -c \"import os, json; json.dump(sorted(os.environ), open('{seen}', 'w'))\""
    project = score_project(dump, extra='env = ["OPENAI_API_KEY"]\n')
    ratchet(project, "run", env=SECRETS)
    names = set(json.loads(seen.read_text()))
    assert "OPENAI_API_KEY" in names
    assert not names & (set(SECRETS) - {"OPENAI_API_KEY"})
    assert "RATCHET_BRIEF" in names


def test_secret_names_and_masking() -> None:
    assert all(is_secret_name(n) for n in SECRETS)
    assert not is_secret_name("PATH")
    env = child_environment(allow=["HF_TOKEN"], base={**SECRETS, "PATH": "/bin"})
    assert env == {"HF_TOKEN": SECRETS["HF_TOKEN"], "PATH": "/bin"}
    redact = Redactor(base={"A_TOKEN": "abcdefgh", "SHORT_KEY": "1"})
    assert redact("x abcdefgh y 1") == "x *** y 1"  # too-short values are not masked
