"""`kind = "llm"`: a small tool-using agent, a fresh context for every experiment.

It gets the directive, the brief and the scope's files, and may call `read_file`,
`list_files`, `grep`, `show_experiment`, `edit` (exact search/replace, inside the scope
only) and `finish`; in harness mode, when the brief names a `traces` folder (the
incumbent's search-split trials), also `list_trials` and `read_trace`. Every path goes through `ratchet.safeio`: no link is followed, and
hidden, protected, ignored and `.git` paths are refused. A tool that fails answers the
model with the error, so it can try again; a reply that is not usable, a model that never finishes, or a spent budget is an
`invalid-proposal`. Transport retries (429, 5xx, timeouts, `Retry-After`) are the
official SDK's own.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from ratchet.brief import fit_brief
from ratchet.errors import RunError
from ratchet.proposers.base import Cost, Outcome, Proposal, ProposalError, ProposerContext
from ratchet.proposers.providers import (
    BACKOFF,
    Tool,
    endpoint_url,
    is_connection_failure,
    open_chat,
    unreachable,
)
from ratchet.regions import region_violation
from ratchet.safeio import ProposerTree, Refused, split_relative
from ratchet.specmodel import matches, matching
from ratchet.suite.traces import SealedTrial, list_trials, read_trace

SYSTEM = """You improve a program inside a loop that measures every change you make.
Read the brief and the files, make one focused change with the `edit` tool (exact
search and replace, only in the editable files), then call `finish` with a one-line
rationale. Do not repeat an idea the history shows was already tried and discarded."""
MAX_FILE_CHARS = 20_000  # of one file shown to the model
MAX_EDIT_BYTES = 4 << 20  # a file larger than this is not edited (it is read whole)
MAX_GREP_LINES = 100
MAX_BRIEF = 60_000  # characters of the brief in the prompt; older entries give way first

TOOLS = [
    Tool(name, doc, {"type": "object", "properties": props, "required": list(props)})
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

TRACE_TOOLS = [
    Tool(
        "list_trials",
        "The incumbent's trials on the search tasks: id, task, attempt, status, reward, error.",
        {"type": "object", "properties": {}, "required": []},
    ),
    Tool(
        "read_trace",
        "One trial: part 'summary' (start here), 'messages' (the agent's "
        "steps and tool calls) or 'verifier' (the tests' output); long parts page by "
        "offset.",
        {
            "type": "object",
            "properties": {
                "trial": {"type": "string"},
                "part": {"type": "string", "enum": ["summary", "messages", "verifier"]},
                "offset": {"type": "integer"},
            },
            "required": ["trial"],
        },
    ),
]
TRACES_NOTE = (
    "The incumbent's trials on the suite's search tasks can be read with "
    "list_trials and read_trace: look at failing trials' summaries and messages "
    "before you change the agent."
)


# for models without tool calling: aider's SEARCH/REPLACE blocks, each after its path
_INTERRUPTED = "stopped while waiting out the back-off of the model's endpoint {url}"
_BLOCK = re.compile(
    r"^(?P<path>[^\n`]+?)\s*\n(?:```[^\n]*\n)?<<<<<<< SEARCH\n(?P<search>.*?)\n?=======\n"
    r"(?P<replace>.*?)\n?>>>>>>> REPLACE",
    re.MULTILINE | re.DOTALL,
)
# or a whole file: its path on a line of its own, then the new content in one fence
_WHOLE = re.compile(r"^(?P<path>[^\n`]+?)\s*\n```[^\n]*\n(?P<content>.*?\n)```[ \t]*$",
                    re.MULTILINE | re.DOTALL)  # fmt: skip


class ToolError(Exception):
    """Told back to the model, which may try again."""


class LLMProposer:
    name = "llm"

    def __init__(self, context: ProposerContext) -> None:
        self.spec, self.scope = context.spec.proposer, context.spec.scope
        self.files = context.files
        self.tracked = set(context.files)
        self.journal = context.state_dir / "journal.db"
        if self.spec.provider == "anthropic":
            open_chat(self.spec, "", "", [])  # a missing SDK is a spec error, said at start
        self.url = endpoint_url(self.spec)
        why = unreachable(self.spec)  # before the baseline: a night of invalid proposals
        if why is not None:
            raise RunError(f"the llm proposer cannot reach its endpoint {self.url} ({why}); "
                           "start the model's server or fix [proposer] base_url")  # fmt: skip

    # what the model may see and change ------------------------------------------------
    def _read(self, tree: ProposerTree, path: str) -> str:
        try:
            clean = tree.check(path)
            if clean not in self.tracked:
                raise Refused(f"{clean} is not tracked by git")
            text = tree.read_text(clean, MAX_FILE_CHARS * 4)  # UTF-8: up to 4 bytes a char
        except Refused as why:
            raise ToolError(f"not a readable project file: {why}") from None
        return text[:MAX_FILE_CHARS]

    def _readable(self, tree: ProposerTree) -> tuple[list[str], list[str]]:
        """The files the model may read, and why each other visible one is not readable."""
        readable, skipped = [], []
        for path in self.files:
            try:
                tree.check(path)
            except Refused:
                continue  # hidden from the model: not even its name is shown
            why = tree.kind(path)
            if why is None:
                readable.append(path)
            else:
                skipped.append(why)
        return readable, skipped

    def _tool(
        self, tree: ProposerTree, name: str, args: dict[str, Any], traces: Path | None = None
    ) -> str:
        if traces is not None and name in ("list_trials", "read_trace"):
            return self._trace_tool(traces, name, args)
        if name == "read_file":
            return self._read(tree, str(args.get("path", "")))
        if name == "list_files":
            readable, skipped = self._readable(tree)
            return "\n".join(readable + [f"(not readable: {why})" for why in skipped])
        if name == "grep":
            try:
                pattern = re.compile(str(args.get("pattern", "")))
            except re.error as error:
                raise ToolError(f"not a regular expression: {error}") from None
            readable, skipped = self._readable(tree)
            hits = []
            for path in readable:
                try:
                    text = self._read(tree, path)
                except ToolError as error:  # changed since it was listed
                    skipped.append(str(error))
                    continue
                hits += [f"{path}:{n}: {line}" for n, line in enumerate(text.splitlines(), 1)
                         if pattern.search(line)]  # fmt: skip
            found = "\n".join(hits[:MAX_GREP_LINES]) or "no match"
            return "\n".join([found] + [f"(not searched: {why})" for why in skipped])
        if name == "show_experiment":
            return self._experiment(int(args.get("id", 0)))
        if name == "edit":
            return self._edit(tree, args)
        raise ToolError(f"no tool named {name!r}")

    @staticmethod
    def _trace_tool(traces: Path, name: str, args: dict[str, Any]) -> str:
        if name == "list_trials":
            return json.dumps(list_trials(traces)) if traces.is_dir() else "[]"
        try:
            return read_trace(traces, str(args.get("trial", "")),
                              str(args.get("part") or "summary"), int(args.get("offset") or 0))  # fmt: skip
        except SealedTrial as why:
            raise ToolError(str(why)) from None

    def _edit(self, tree: ProposerTree, args: dict[str, Any]) -> str:
        search = str(args.get("search", ""))
        path = self._editable(str(args.get("path", "")))
        try:
            text = tree.read_whole(path, MAX_EDIT_BYTES)
            if search == "" and not text:
                tree.write_text(path, str(args.get("replace", "")))
                return f"created {path}"
            text = text or ""
            if text.count(search) != 1:
                raise ToolError(f"the search text occurs {text.count(search)} times in {path}; "
                                "it must occur exactly once")  # fmt: skip
            edited = text.replace(search, str(args.get("replace", "")), 1)
            region = self.scope.region_of(path)
            outside = region and region_violation(path, text or None, edited, *region)
            if outside:  # refused here, so the model can retry inside the region
                raise ToolError(f"edit refused: {outside}")
            tree.write_text(path, edited)
        except Refused as why:
            raise ToolError(f"cannot edit: {why}") from None
        return f"edited {path}"

    def _editable(self, path: str) -> str:
        """`path`, normalized, if it is in the editable scope."""
        try:
            clean = "/".join(split_relative(path))
        except Refused as why:
            raise ToolError(str(why)) from None
        if not matches(clean, self.scope.editable):
            raise ToolError(
                f"{clean} is outside the editable scope ({', '.join(self.scope.editable)})"
            )
        return clean

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
        tree = ProposerTree(worktree, self.scope, self.files)
        shown = "\n\n".join(f"--- {f}\n{self._shown(tree, f)}"
                             for f in matching(self.files, self.scope.editable))  # fmt: skip
        regions = "".join(
            f"\nIn {path}, {rule}." for path, rule in self.scope.describe_regions().items()
        )
        user = f"Brief:\n{fit_brief(brief, MAX_BRIEF)}\n\nEditable files:{regions}\n{shown}"
        traces = brief.get("traces")
        traces = Path(traces) if isinstance(traces, str) and traces else None
        if traces is not None:
            user += f"\n\n{TRACES_NOTE}"
        self._wait_for_endpoint(started)
        chat = open_chat(self.spec, SYSTEM, user, TOOLS + TRACE_TOOLS if traces else TOOLS)
        tokens_in = tokens_out = 0
        for _ in range(self.spec.max_turns):
            remaining = self.spec.budget - (time.monotonic() - started)
            if remaining <= 0:
                raise ProposalError(f"the model used up the proposal's {self.spec.budget:g}s")
            if self.spec.max_tokens and tokens_in + tokens_out > self.spec.max_tokens:
                raise ProposalError(
                    f"the model used up the proposal's {self.spec.max_tokens} tokens"
                )
            try:
                turn = chat.ask(timeout=min(remaining, self.spec.request_timeout))
            except Exception as error:  # the SDK's errors, after its own retries
                if is_connection_failure(error):
                    delay = BACKOFF.failed(self.url)
                    raise ProposalError(f"the model's endpoint {self.url} cannot be reached "
                                        f"({type(error).__name__}: {str(error)[:200]}); the "
                                        f"next proposal tries it in {delay:.0f}s") from None  # fmt: skip
                raise ProposalError(f"the model's endpoint failed ({self.url}): "
                                    f"{type(error).__name__}: {str(error)[:200]}") from None  # fmt: skip
            BACKOFF.reached(self.url)
            tokens_in, tokens_out = tokens_in + turn.tokens_in, tokens_out + turn.tokens_out
            if not turn.calls:
                applied = self._apply_reply(tree, turn.text)
                if applied is not None:
                    return Proposal(applied, self._cost(started, tokens_in, tokens_out))
                chat.say("Use the tools: edit, then finish.")
                continue
            results = []
            for call in turn.calls:
                try:
                    args = json.loads(call.arguments)
                    if not isinstance(args, dict):
                        raise ToolError("the arguments must be a JSON object")
                    if call.name == "finish":
                        rationale = str(args.get("rationale", "")).strip() or "(no rationale)"
                        return Proposal(rationale, self._cost(started, tokens_in, tokens_out))
                    result = self._tool(tree, call.name, args, traces)
                except (ToolError, ValueError, OSError) as error:
                    result = f"error: {error}"
                results.append((call.id, result))
            chat.answer(results)
        raise ProposalError(f"the model did not call finish within {self.spec.max_turns} turns")

    def _wait_for_endpoint(self, started: float) -> None:
        """Wait out the endpoint's back-off, within the proposal's budget; past it, the
        proposal is not tried (an `invalid-proposal` whose why says when it will be)."""
        wait = BACKOFF.wait(self.url)
        left = self.spec.budget - (time.monotonic() - started)
        if wait <= 0:
            return
        if wait < left:
            if not BACKOFF.pause(wait):
                raise ProposalError(_INTERRUPTED.format(url=self.url))
            return
        if not BACKOFF.pause(max(0.0, left)):
            raise ProposalError(_INTERRUPTED.format(url=self.url))
        raise ProposalError(f"the model's endpoint {self.url} could not be reached; not tried "
                            f"again for another {BACKOFF.wait(self.url):.0f}s (back-off)")  # fmt: skip

    def _shown(self, tree: ProposerTree, path: str) -> str:
        try:
            return self._read(tree, path)
        except ToolError as error:  # a link or a folder in the scope: said, not fatal
            return f"({error})"

    def _apply_reply(self, tree: ProposerTree, content: str) -> str | None:
        """Apply a tool-less reply: SEARCH/REPLACE blocks, or else whole files.

        Its first line is the rationale. None when the reply holds neither. A block
        that does not apply ends the proposal: half of a change is not the change the
        model meant.
        """
        blocks = list(_BLOCK.finditer(content))
        wholes = [] if blocks else list(_WHOLE.finditer(content))
        if not blocks and not wholes:
            return None
        for block in blocks:
            args = {"path": block["path"].strip(), "search": block["search"],
                    "replace": block["replace"]}  # fmt: skip
            try:
                self._edit(tree, args)
            except (ToolError, OSError, ValueError) as error:
                raise ProposalError(f"a SEARCH/REPLACE block did not apply: {error}") from None
        for whole in wholes:
            path = whole["path"].strip().strip("*`'\":")
            if not matches(path, self.scope.editable):
                raise ProposalError(f"the reply rewrites {path}, outside the editable scope "
                                    f"({', '.join(self.scope.editable)})")  # fmt: skip
            try:
                tree.write_text(path, whole["content"])
            except (Refused, OSError) as error:
                raise ProposalError(f"the reply's new {path} was not written: {error}") from None
        first = (blocks or wholes)[0]
        before = content[: first.start()].strip().splitlines()
        return before[0].strip()[:200] if before else "(the model's reply, without a rationale)"

    def _cost(self, started: float, tokens_in: int, tokens_out: int) -> Cost:
        price = self.spec.prices.get(self.spec.model or "", {})
        usd = (tokens_in * price.get("input", 0) + tokens_out * price.get("output", 0)) / 1e6
        return Cost(time.monotonic() - started, tokens_in + tokens_out, usd)

    def observe(self, outcome: Outcome) -> None:
        """Every proposal starts fresh: its memory is the brief's history."""
