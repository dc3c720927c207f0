"""A small task agent: a model with one shell tool, run until it stops calling tools.

This is the harness ratchet improves (`[scope] editable = ["agent.py"]`). It is
deliberately plain: a short system prompt, one tool, a step limit. Everything in it
(prompt, tools, how output is shown to the model, when to stop) is fair game.

Entry points:
- `run(instruction, workspace)`: what ratchet's local runner calls, with the
  working directory set to `workspace`.
- `python agent.py INSTRUCTION_FILE WORKSPACE`: the same, from a shell.

The model is reached through any OpenAI-compatible endpoint: `OPENAI_BASE_URL` and
`OPENAI_API_KEY` (under ratchet, the base URL is its metering proxy). The model name
comes from `RATCHET_TASK_MODEL`, else `OPENAI_MODEL`, else DEFAULT_MODEL. When
`RATCHET_TRAJECTORY` names a file, the agent writes its trajectory there in the Agent
Trajectory Interchange Format (ATIF): every message, tool call, tool output and the
tokens of each model call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from openai import OpenAI

DEFAULT_MODEL = "gpt-4.1-mini"
MAX_STEPS = 20  # model calls per task; the agent stops after this many
COMMAND_TIMEOUT = 60  # seconds one shell command may run
OUTPUT_LIMIT = 8000  # characters of a command's output shown to the model

SYSTEM_PROMPT = "You are a helpful assistant. You can run shell commands with the shell tool."

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "shell",
            "description": "Run a bash command and return its exit code and output.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The command."}},
                "required": ["command"],
            },
        },
    }
]


# Each command runs in a process group of its own, which a timeout kills whole. A group
# of its own also escapes the kill a runner sends to the agent's group, so the agent
# passes that on (SIGTERM comes first, then SIGKILL after a grace).
_LIVE_GROUPS: set[int] = set()


def _stop(signum: int, frame: Any) -> None:
    for group in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    raise SystemExit(128 + signum)


def run(instruction: str, workspace: Path) -> dict[str, Any]:
    """Work on `instruction` inside `workspace`; return whether the model said it was
    done and its usage (`input_tokens`, `output_tokens`, `calls`), which the runner
    records unless its metering proxy saw the calls itself."""
    workspace = Path(workspace).resolve()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    model = os.environ.get("RATCHET_TASK_MODEL") or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
    client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
    trajectory = Trajectory(model, os.environ.get("RATCHET_TRAJECTORY"))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instruction},
    ]
    trajectory.add("system", SYSTEM_PROMPT)
    trajectory.add("user", instruction)
    finished = False
    try:
        for _ in range(MAX_STEPS):
            response = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
            reply = response.choices[0].message
            calls = reply.tool_calls or []
            said: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if calls:
                said["tool_calls"] = [call.model_dump(exclude_none=True) for call in calls]
            messages.append(said)
            step = trajectory.add_agent_step(reply.content or "", calls, response.usage)
            for call in calls:
                output = call_tool(call.function.name, call.function.arguments, workspace)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
                trajectory.observe(step, call.id, output)
            if not calls:  # the model answered without a tool: it is done
                finished = True
                break
    finally:
        trajectory.save()
        totals = trajectory.totals()
        print(
            f"tokens: input={totals['total_prompt_tokens']} "
            f"output={totals['total_completion_tokens']} calls={trajectory.calls}",
            flush=True,
        )
    usage = {
        "input_tokens": totals["total_prompt_tokens"],
        "output_tokens": totals["total_completion_tokens"],
        "calls": trajectory.calls,
    }
    return {"finished": finished, "usage": usage}


def call_tool(name: str, arguments: str, workspace: Path) -> str:
    if name != "shell":
        return f"error: there is no tool named {name!r}; the only tool is 'shell'"
    try:
        command = json.loads(arguments or "{}")["command"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return 'error: the arguments must be JSON like {"command": "ls"}'
    if not isinstance(command, str) or not command.strip():
        return "error: command must be a non-empty string"
    return run_shell(command, workspace)


def run_shell(command: str, workspace: Path) -> str:
    """Run `command` with bash in `workspace`; its output (stdout and stderr, capped)."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout ends all of it
    )
    _LIVE_GROUPS.add(process.pid)
    try:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        status = f"exit code {process.returncode}"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = f"timed out after {COMMAND_TIMEOUT}s and was killed"
    finally:
        _LIVE_GROUPS.discard(process.pid)
    text = output.decode("utf-8", errors="replace")
    if len(text) > OUTPUT_LIMIT:
        half = OUTPUT_LIMIT // 2
        text = f"{text[:half]}\n[... {len(text) - OUTPUT_LIMIT} characters cut ...]\n{text[-half:]}"
    return f"{status}\n{text}"


class Trajectory:
    """The run as an ATIF document: steps with messages, tool calls, observations, tokens."""

    def __init__(self, model: str, path: str | None) -> None:
        self.model = model
        self.path = Path(path) if path else None
        self.session_id = str(uuid.uuid4())
        self.steps: list[dict[str, Any]] = []
        self.calls = 0

    def add(self, source: str, message: str) -> None:
        self.steps.append(
            {
                "step_id": len(self.steps) + 1,
                "timestamp": _now(),
                "source": source,
                "message": message,
            }
        )

    def add_agent_step(self, message: str, calls: list[Any], usage: Any) -> dict[str, Any]:
        """Record a model call (its tokens, the tools it asked for) before the tools run,
        so that an agent stopped in the middle of a command leaves what it was doing."""
        self.calls += 1
        details = getattr(usage, "prompt_tokens_details", None)
        step: dict[str, Any] = {
            "step_id": len(self.steps) + 1,
            "timestamp": _now(),
            "source": "agent",
            "model_name": self.model,
            "message": message,
            "metrics": {
                "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
                "cached_tokens": getattr(details, "cached_tokens", 0) or 0,
            },
        }
        if calls:
            step["tool_calls"] = [
                {
                    "tool_call_id": call.id,
                    "function_name": call.function.name,
                    "arguments": _arguments(call.function.arguments),
                }
                for call in calls
            ]
            step["observation"] = {"results": []}
        self.steps.append(step)
        self.save()  # after every change: a trial stopped by its timeout still leaves a trace
        return step

    def observe(self, step: dict[str, Any], call_id: str, output: str) -> None:
        step["observation"]["results"].append({"source_call_id": call_id, "content": output})
        self.save()

    def totals(self) -> dict[str, int]:
        metrics = [s["metrics"] for s in self.steps if "metrics" in s]
        return {
            "total_prompt_tokens": sum(m["prompt_tokens"] for m in metrics),
            "total_completion_tokens": sum(m["completion_tokens"] for m in metrics),
            "total_cached_tokens": sum(m["cached_tokens"] for m in metrics),
            "total_steps": len(self.steps),
        }

    def save(self) -> None:
        if self.path is None:
            return
        document = {
            "schema_version": "ATIF-v1.4",
            "session_id": self.session_id,
            "agent": {"name": "ratchet-example-agent", "version": "1", "model_name": self.model},
            "steps": self.steps,
            "final_metrics": self.totals(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(document, indent=1))
        partial.replace(self.path)  # whole or absent, never half written


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {"unparsed": text}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python agent.py INSTRUCTION_FILE WORKSPACE", file=sys.stderr)
        return 2
    instruction = Path(argv[0]).read_text()
    workspace = Path(argv[1]).resolve()
    os.chdir(workspace)
    run(instruction, workspace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
