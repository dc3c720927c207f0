"""OpenEvolve: `initial_program.*` with EVOLVE-BLOCK markers, `evaluator.py` with
`evaluate(program_path)`, and `config.yaml`'s settings that map onto a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ratchet.errors import UsageError
from ratchet.importers import Imported, python_command, relative, toml_list, toml_string
from ratchet.regions import BUILTIN_MARKERS, RegionError, find_regions

REGION = "EVOLVE-BLOCK"
DEFAULT_TIMEOUT = 300.0  # OpenEvolve's evaluator timeout, when config.yaml says none
DIRECTIVE = "directive.md"


def read_config(path: Path) -> dict[str, Any]:
    """config.yaml as a dict; {} when absent. PyYAML is imported only here."""
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UsageError(f"{path.name}: not valid YAML ({error})") from None
    return data if isinstance(data, dict) else {}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def model_settings(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """The model and its endpoint: `llm.models[0].name` (the heaviest weighted first) or
    `llm.primary_model`, and `llm.api_base`."""
    llm = _section(config, "llm")
    model = llm.get("primary_model")
    models = [m for m in llm.get("models") or [] if isinstance(m, dict) and m.get("name")]
    if models:
        model = max(models, key=lambda m: float(m.get("weight", 1.0)))["name"]
    base = llm.get("api_base")
    return (str(model) if model else None), (str(base) if base else None)


def _find_program(folder: Path) -> Path:
    found = sorted(p for p in folder.glob("initial_program.*") if p.is_file())
    if not found:
        raise UsageError(f"{folder} has no initial_program.*: not an OpenEvolve example")
    return found[0]


def import_openevolve(project: Path, where: Path) -> Imported:
    folder = where if where.is_dir() else where.parent
    program = where if where.is_file() else _find_program(folder)
    evaluator = folder / "evaluator.py"
    if not evaluator.is_file():
        raise UsageError(f"{folder} has no evaluator.py with evaluate(program_path)")
    notes: list[str] = []
    program_rel, evaluator_rel = relative(project, program), relative(project, evaluator)
    try:
        regions = find_regions(program.read_text(errors="replace"), REGION, BUILTIN_MARKERS[REGION])
    except RegionError as error:
        raise UsageError(f"{program_rel}: the EVOLVE-BLOCK markers are broken ({error})") from None
    if regions:
        editable = f"{program_rel}#{REGION}"
        notes.append(f"editable: only the EVOLVE-BLOCK regions of {program_rel} ({len(regions)})")
    else:
        editable = program_rel
        notes.append(f"{program_rel} has no EVOLVE-BLOCK markers: the whole file is editable")
    config = read_config(folder / "config.yaml")
    iterations = config.get("max_iterations")
    timeout = _section(config, "evaluator").get("timeout", DEFAULT_TIMEOUT)
    budget = int(float(timeout) * 1.5 + 30)  # the evaluator's own limit, plus start-up
    model, base_url = model_settings(config)
    directive_line = ""
    message = _section(config, "prompt").get("system_message")
    if isinstance(message, str) and message.strip():
        directive = folder / DIRECTIVE
        if not directive.exists():
            directive.write_text(message.strip() + "\n")
            written = [relative(project, directive)]
        else:
            written = []
        directive_line = f"directive = {toml_string(relative(project, directive))}"
        notes.append(f"config.yaml's prompt.system_message is the directive, {DIRECTIVE}")
    else:
        written = []
    python = python_command(project)
    command = f"{python} -m ratchet.importers.openevolve_eval {evaluator_rel} {program_rel}"
    if model:
        proposer = f'kind = "llm"\nmodel = {toml_string(model)}'
        if base_url:
            proposer += f"\nbase_url = {toml_string(base_url)}"
        notes.append(
            f"proposer: {model} from config.yaml" + (f" at {base_url}" if base_url else "")
        )
    else:
        proposer = 'kind = "llm"\nmodel = "gpt-5-mini"              # config.yaml names no model'
        notes.append("config.yaml names no model: assumed gpt-5-mini; edit [proposer] model")
    run = f"max_experiments = {int(iterations)}" if isinstance(iterations, int) else ""
    text = f"""\
# ratchet.toml, imported from an OpenEvolve example (ratchet init --from openevolve).
# Every key is described in docs/spec.md; this import in docs/importers.md.

[scope]
editable = {toml_list([editable])}   # only between the markers
{directive_line}
protected = {toml_list([evaluator_rel])}       # the evaluator is never written

[metric]
command = {toml_string(command)}
name = "combined_score"
goal = "maximize"
strict = true                        # a program printing its own combined_score is no-metric
budget = "{budget}s"                 # config.yaml's evaluator timeout, plus start-up

[run]
{run}

[proposer]
{proposer}
"""
    return Imported(text, notes, written)
