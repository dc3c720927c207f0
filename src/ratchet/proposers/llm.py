"""`kind = "llm"`: a small tool-using agent, a fresh context for every experiment.

It gets the directive, the brief and the scope's files, and may call `read_file`,
`list_files`, `grep`, `show_experiment`, `edit` (exact search/replace, inside the scope
only) and `finish`. A tool that fails answers the model with the error, so it can try
again; a reply that is not usable, a model that never finishes, or a spent budget is an
`invalid-proposal`. Transport retries (429, 5xx, timeouts, `Retry-After`) are the
official SDK's own.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError, ProposerContext
from ratchet.spec import matches

SYSTEM = """You improve a program inside a loop that measures every change you make.
Read the brief and the files, make one focused change with the `edit` tool (exact
search and replace, only in the editable files), then call `finish` with a one-line
rationale. Do not repeat an idea the history shows was already tried and discarded."""
MAX_FILE_CHARS = 20_000  # of one file shown to the model
MAX_GREP_LINES = 100

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": name, "description": doc, "parameters": {
        "type": "object", "properties": props, "required": list(props)}}}
    for name, doc, props in [
        ("read_file", "Read a project file.", {"path": {"type": "string"}}),
        ("list_files", "List the project's files.", {}),
        ("grep", "Lines of project files matching a regular expression.",
         {"pattern": {"type": "string"}}),
        ("show_experiment", "The patch, why and output tail of a past experiment.",
         {"id": {"type": "integer"}}),
        ("edit", "Replace an exact, unique piece of text in an editable file.",
         {"path": {"type": "string"}, "search": {"type": "string"},
          "replace": {"type": "string"}}),
        ("finish", "End the proposal with a one-line rationale.",
         {"rationale": {"type": "string"}}),
    ]
]  # fmt: skip


# for models without tool calling: aider's SEARCH/REPLACE blocks, each after its path
_BLOCK = re.compile(
    r"^(?P<path>[^\n`]+?)\s*\n(?:```[^\n]*\n)?<<<<<<< SEARCH\n(?P<search>.*?)\n?=======\n"
    r"(?P<replace>.*?)\n?>>>>>>> REPLACE",
    re.MULTILINE | re.DOTALL,
)


class ToolError(Exception):
    """Told back to the model, which may try again."""


class LLMProposer:
    name = "llm"

    def __init__(self, context: ProposerContext) -> None:
        from openai import OpenAI  # imported only when this proposer is used

        spec = context.spec.proposer
        if not spec.model:
            raise ProposalError("[proposer] kind = 'llm' needs a model")
        self.spec, self.scope = spec, context.spec.scope
        self.files = context.files
        self.journal = context.state_dir / "journal.db"
        key = os.environ.get(spec.key_variable, "") or "not-needed"  # local servers take any
        self.client = OpenAI(base_url=spec.base_url, api_key=key, max_retries=spec.retries,
                             timeout=spec.budget)  # fmt: skip

    # what the model may see and change ------------------------------------------------
    def _visible(self, path: str) -> bool:
        hidden = matches(path, self.scope.protected) and not matches(path, self.scope.context)
        return path in self.files and not hidden

    def _read(self, worktree: Path, path: str) -> str:
        if not self._visible(path):
            raise ToolError(f"{path} is not a readable project file")
        return (worktree / path).read_text(errors="replace")[:MAX_FILE_CHARS]

    def _tool(self, worktree: Path, name: str, args: dict[str, Any]) -> str:
        if name == "read_file":
            return self._read(worktree, str(args.get("path", "")))
        if name == "list_files":
            return "\n".join(f for f in self.files if self._visible(f))
        if name == "grep":
            try:
                pattern = re.compile(str(args.get("pattern", "")))
            except re.error as error:
                raise ToolError(f"not a regular expression: {error}") from None
            hits = [f"{f}:{n}: {line}" for f in self.files if self._visible(f)
                    for n, line in enumerate(self._read(worktree, f).splitlines(), 1)
                    if pattern.search(line)]  # fmt: skip
            return "\n".join(hits[:MAX_GREP_LINES]) or "no match"
        if name == "show_experiment":
            return self._experiment(int(args.get("id", 0)))
        if name == "edit":
            return self._edit(worktree, args)
        raise ToolError(f"no tool named {name!r}")

    def _edit(self, worktree: Path, args: dict[str, Any]) -> str:
        path, search = str(args.get("path", "")), str(args.get("search", ""))
        if not matches(path, self.scope.editable):
            raise ToolError(
                f"{path} is outside the editable scope ({', '.join(self.scope.editable)})"
            )
        target = worktree / path
        text = target.read_text() if target.exists() else ""
        if search == "" and not text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(args.get("replace", "")))
            return f"created {path}"
        if text.count(search) != 1:
            raise ToolError(f"the search text occurs {text.count(search)} times in {path}; "
                            "it must occur exactly once")  # fmt: skip
        target.write_text(text.replace(search, str(args.get("replace", "")), 1))
        return f"edited {path}"

    def _experiment(self, experiment: int) -> str:
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT decision, why, patch FROM experiments WHERE id = ?",
                             (experiment,)).fetchone()  # fmt: skip
            out = db.execute("SELECT output FROM measurements WHERE experiment = ? ORDER BY id"
                             " DESC LIMIT 1", (experiment,)).fetchone()  # fmt: skip
        finally:
            db.close()
        if row is None:
            raise ToolError(f"no experiment #{experiment}")
        tail = (out[0] if out else "")[-2000:]
        return f"decision: {row[0]}\nwhy: {row[1]}\npatch:\n{row[2]}\noutput tail:\n{tail}"

    # the agent loop -------------------------------------------------------------------
    def propose(self, worktree: Path, brief_path: Path) -> Proposal:
        started = time.monotonic()
        brief = json.loads(brief_path.read_text())
        scope_files = [f for f in self.files if matches(f, self.scope.editable)]
        shown = "\n\n".join(f"--- {f}\n{self._read(worktree, f)}" for f in scope_files)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Brief:\n{json.dumps(brief)}\n\nEditable files:\n{shown}"},
        ]
        tokens_in = tokens_out = 0
        for _ in range(self.spec.max_turns):
            if time.monotonic() - started > self.spec.budget:
                raise ProposalError(f"the model used up the proposal's {self.spec.budget:g}s")
            if self.spec.max_tokens and tokens_in + tokens_out > self.spec.max_tokens:
                raise ProposalError(
                    f"the model used up the proposal's {self.spec.max_tokens} tokens"
                )
            try:
                response = self.client.chat.completions.create(
                    model=self.spec.model or "",
                    messages=messages,  # type: ignore[arg-type]
                    tools=TOOLS,  # type: ignore[arg-type]
                )
            except Exception as error:  # the SDK's errors, after its own retries
                raise ProposalError(f"the model's endpoint failed: {type(error).__name__}: "
                                    f"{str(error)[:200]}") from None  # fmt: skip
            if response.usage is not None:
                tokens_in += response.usage.prompt_tokens
                tokens_out += response.usage.completion_tokens
            if not response.choices:
                raise ProposalError("the model's reply had no message")
            message = response.choices[0].message
            calls = message.tool_calls or []
            messages.append(message.model_dump(exclude_none=True))
            if not calls:
                applied = self._apply_blocks(worktree, message.content or "")
                if applied is not None:
                    return Proposal(applied, self._cost(started, tokens_in, tokens_out))
                messages.append({"role": "user", "content": "Use the tools: edit, then finish."})
                continue
            for call in calls:
                name = getattr(getattr(call, "function", None), "name", "")
                try:
                    args = json.loads(call.function.arguments or "{}")  # type: ignore[union-attr]
                    if not isinstance(args, dict):
                        raise ToolError("the arguments must be a JSON object")
                    if name == "finish":
                        rationale = str(args.get("rationale", "")).strip() or "(no rationale)"
                        return Proposal(rationale, self._cost(started, tokens_in, tokens_out))
                    result = self._tool(worktree, name, args)
                except (ToolError, ValueError, OSError) as error:
                    result = f"error: {error}"
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        raise ProposalError(f"the model did not call finish within {self.spec.max_turns} turns")

    def _apply_blocks(self, worktree: Path, content: str) -> str | None:
        """Apply a tool-less reply's SEARCH/REPLACE blocks; its first line is the rationale.

        None when the reply has no block. A block that does not apply ends the proposal:
        half of a change is not the change the model meant.
        """
        blocks = list(_BLOCK.finditer(content))
        if not blocks:
            return None
        for block in blocks:
            args = {"path": block["path"].strip(), "search": block["search"],
                    "replace": block["replace"]}  # fmt: skip
            try:
                self._edit(worktree, args)
            except (ToolError, OSError) as error:
                raise ProposalError(f"a SEARCH/REPLACE block did not apply: {error}") from None
        before = content[: blocks[0].start()].strip().splitlines()
        return before[0].strip()[:200] if before else "(SEARCH/REPLACE blocks)"

    def _cost(self, started: float, tokens_in: int, tokens_out: int) -> Cost:
        price = self.spec.prices.get(self.spec.model or "", {})
        usd = (tokens_in * price.get("input", 0) + tokens_out * price.get("output", 0)) / 1e6
        return Cost(time.monotonic() - started, tokens_in + tokens_out, usd)

    def observe(self, outcome: Outcome) -> None:
        """Every proposal starts fresh: its memory is the brief's history."""
