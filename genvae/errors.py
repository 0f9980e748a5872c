"""Errors raised for bad user input; the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import re
import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value or input file is wrong; the message names the key or file."""


def find_config_error(err: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``err``, also when jsonargparse wrapped it during instantiation."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_on_config_error(err: BaseException) -> NoReturn:
    """Print ``genvae: error: <message>`` and exit 2 when a ConfigError is behind ``err``; else re-raise it."""
    config_error = find_config_error(err)
    if config_error is None:
        raise err
    print(f"genvae: error: {config_error}", file=sys.stderr)
    raise SystemExit(2) from None


# the structure lines of jsonargparse's nested messages, which say nothing about the value given
_STRUCTURE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
)
_NONE_ALTERNATIVE = "Expected a <class 'NoneType'>"
_PATH_ALTERNATIVE = re.compile(r"Expected a path but .* either not accessible or invalid")
_ENCLOSING = (
    ("key", re.compile(r'Parser key "([^"]+)":\s*(.*)')),
    ("class", re.compile(r"Problem with given class_path '([^']+)':\s*(.*)")),
)


def _reworded(detail: str, given: str | None) -> str:
    """jsonargparse's ``Expected a <type>. Got value: x`` as ``expected <type>, got 'x'``, and a Literal's
    allowed values spelled out."""
    match = re.fullmatch(r"Expected a (.+?)(?:\. Got value: (.*))?", detail)
    if match is None:
        return detail
    expected, value = match[1], match[2] if match[2] is not None else given
    got = f"got {value!r}" if value is not None else "got another value"
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", expected)
    if literal:
        return f"{got}; allowed values: {literal[1]}"
    expected = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", expected)
    return f"expected {expected}, {got}"


def condense_parser_error(message: str) -> str:
    """jsonargparse's parse error, a nested multi-line explanation, as one line ``<key>: <cause>``.

    The key is the chain of ``Parser key`` entries above the most deeply nested cause, with ``init_args``
    where a ``class_path``'s arguments were being parsed (``model.init_args.likelihood``); the cause says
    what was given and what is allowed (a Literal's values, an expected type, an unknown option). The
    alternatives jsonargparse also tried and that a user did not mean (``None`` for an optional section, a
    config file path) are left out."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) == 1:
        return re.sub(r'^Parser key "([^"]+)":\s*', r"\1: ", lines[0].strip())
    stack: list[tuple[int, str, str]] = []  # (indent, kind, name) of the enclosing keys and class paths
    best: tuple[int, list[tuple[int, str, str]], str] | None = None
    given = None
    for line in lines:
        indent = len(line) - len(line.lstrip(" -"))
        text = line.strip().removeprefix("- ").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        for kind, pattern in _ENCLOSING:  # a key or class path, and what follows it on the line
            match = pattern.fullmatch(text)
            if match:
                stack.append((indent, kind, match[1]))
                text, indent = match[2], indent + 1
        if not text:
            continue
        if text.startswith("Given value:"):
            given = text.split(":", 1)[1].strip()
            continue
        if text.startswith(_STRUCTURE) or text == _NONE_ALTERNATIVE or _PATH_ALTERNATIVE.fullmatch(text):
            continue
        if best is None or indent > best[0]:
            best = (indent, list(stack), text)
    if best is None:
        return " ".join(line.strip() for line in lines)
    _, path, detail = best
    names: list[str] = []
    for _, kind, name in path:
        names.append("init_args" if kind == "class" else name)
    option = re.fullmatch(r"Option '([^']+)' is not accepted", detail)
    classes = [name for _, kind, name in path if kind == "class"]
    if option:
        names.append(option[1])
        detail = f"not an argument of {classes[-1]}" if classes else "not an accepted option"
    elif names and names[-1] == "init_args" and path[-1][1] == "class":
        names.pop()  # the class path itself is wrong
        detail = f"class_path {classes[-1]!r}: {detail}"
    return f"{'.'.join(names) or 'arguments'}: {_reworded(detail, given)}"
