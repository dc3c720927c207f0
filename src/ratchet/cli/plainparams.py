"""Plain coercion of plain options, so a reading command does not import pydantic.

typer (0.29 and later) turns every option's text into its value through a pydantic
`TypeAdapter`, built when the command first parses: importing pydantic for it costs a
reading command like `status` about a third of its time. An option whose type is a
plain `str`, `int`, `float` or `bool` (or one of those or None), with no range, choices,
file or list, needs none of that: `PlainCommand` gives such options a coercion of its
own before typer would build its adapter. Every other option keeps typer's. This leans on
typer's `_runtime_param` (typer's own lazy slot for it); where a typer lacks it, nothing
changes but the speed (`tests/test_cli_startup.py` says so).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

F = TypeVar("F", bound=Callable[..., Any])
# a boolean option's text, as typer (through pydantic) reads it; empty is false
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no", ""}
PLAIN_TYPES: tuple[type, ...] = (str, int, float, bool)

try:  # typer's private coercion contract: absent, options keep typer's own coercion
    from typer._coercion import RuntimeParam
except ImportError:  # pragma: no cover  (another typer)
    RuntimeParam = None  # type: ignore[assignment,misc]


def plain_type(annotation: Any) -> type | None:
    """`str`, `int`, `float` or `bool` for such an annotation, or one of them or None."""
    if annotation in PLAIN_TYPES:
        return typing.cast(type, annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and members[0] in PLAIN_TYPES:
            return typing.cast(type, members[0])
    return None


def _plain_kind(param: Any) -> type | None:
    """The plain type of a typer parameter that needs no more than it, or None."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", "absent") is not None:
        return None  # not typer's lazily coerced parameter, or coerced already
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or param.multiple or param.nargs != 1:
        return None
    constrained = ("min", "max", "clamp", "parser", "click_type", "formats")
    if any(getattr(info, name, None) for name in constrained):
        return None
    return plain_type(descriptor.annotation)


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainValue(RuntimeParam):
        """An option's text as its plain type; a bad number is the usage error typer's
        own coercion gives, in its words."""

        kind: type

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, self.kind):
                return value
            if isinstance(value, bytes):  # argv that was not text: as typer decodes it
                value = value.decode("utf-8", "replace")
            if self.kind is str:
                return str(value)
            if self.kind is bool:  # flags arrive as bools; a text value in pydantic's words
                word = str(value).strip().lower()
                if word in _TRUE or word in _FALSE:
                    return word in _TRUE
                raise typer.BadParameter("Input should be a valid boolean", ctx, param)
            try:
                return self.kind(value)
            except (TypeError, ValueError):
                label = {int: "an integer", float: "a number"}.get(self.kind, "a value")
                kind = label.split()[-1]  # typer's own (pydantic's) words for the same error
                message = f"Input should be a valid {kind}, unable to parse string as {label}"
                raise typer.BadParameter(message, ctx, param) from None


def make_plain(params: list[Any]) -> None:
    """Give each plain one of `params` the plain coercion (before typer builds its own)."""
    if RuntimeParam is None:  # pragma: no cover  (another typer)
        return
    for param in params:
        kind = _plain_kind(param)
        if kind is not None:
            descriptor = param.type_descriptor
            param._runtime_param = PlainValue(
                descriptor.parameter_info, descriptor.annotation, kind
            )


class PlainCommand(TyperCommand):
    """A typer command whose plain options are coerced without pydantic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        make_plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:  # typer's --help: a bool, coerced too
        option = super().get_help_option(ctx)
        make_plain([option])
        return option


class PlainGroup(TyperGroup):
    """A command group (its callback's options and `--help`) coerced as `PlainCommand`'s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        make_plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        make_plain([option])
        return option


class PlainTyper(typer.Typer):
    """`typer.Typer` whose commands are `PlainCommand`s unless one asks for another class;
    commands are added exactly as with typer (`@app.command()`)."""

    def __init__(self, *args: Any, cls: type[TyperGroup] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, cls=cls or PlainGroup, **kwargs)

    def command(
        self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[F], F]:
        return super().command(*args, cls=cls or PlainCommand, **kwargs)
