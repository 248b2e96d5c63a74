"""Edits of TOML text that change only the bytes they must: a top-level array of strings gains or loses one
element, or a new top-level key line goes after an existing one.

A TOML library that re-renders the document decides where a new key goes and which blank lines survive, and
that decision has changed between releases of the same library. containerd's main file belongs to the user, so
ccgpu edits its text directly: every byte outside the edited statement stays where it was, whichever library
version is installed. Parsing (to know where statements start and what an element means) is `tomllib`'s, and
every edit is checked by parsing the result: an edit that would change anything but the one element is refused
with `TomlEditError` instead of being written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class TomlEditError(ValueError):
    """The text cannot be edited in place without changing more than the requested element."""


@dataclass(frozen=True)
class _Line:
    start: int
    end: int  # after the line's newline, if any
    text: str

    @property
    def content(self) -> str:
        return self.text.strip()


def _lines(text: str) -> Iterator[_Line]:
    """TOML's lines: split on LF only (a CR belongs to the CRLF before it), newline kept."""
    pos = 0
    for match in re.finditer(r"[^\n]*\n|[^\n]+$", text):
        yield _Line(pos, match.end(), match.group())
        pos = match.end()


def _load(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TomlEditError(f"not valid TOML ({e})") from e


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _statement_lines(text: str) -> Iterator[_Line]:
    """The lines before the first table header on which a statement may start (not inside a multi-line
    value). A line that starts with `[` where the text before it is a complete document is a table header."""
    for line in _lines(text):
        if line.content.startswith("[") and _parses(text[: line.start]):
            return
        yield line


def _key_pattern(key: str) -> re.Pattern[str]:
    quoted = re.escape(key)
    return re.compile(rf"[ \t]*(?:{quoted}|\"{quoted}\"|'{quoted}')[ \t]*=[ \t]*")


def _top_level_statement(text: str, key: str) -> tuple[_Line, int] | None:
    """The line where top-level `key = ...` starts, and the offset of its value."""
    pattern = _key_pattern(key)
    for line in _statement_lines(text):
        match = pattern.match(line.text)
        if match and _parses(text[: line.start]):
            return line, line.start + match.end()
    return None


# --- scanning an array of strings ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Array:
    open: int  # offset of '['
    close: int  # offset of ']'
    elements: tuple[tuple[int, int], ...]  # (start, end) of each element's text


_STRING_DELIMITERS = ('"""', "'''", '"', "'")


def _string_end(text: str, pos: int) -> int:
    """The offset after the TOML string starting at `pos`."""
    delimiter = next(d for d in _STRING_DELIMITERS if text.startswith(d, pos))
    i = pos + len(delimiter)
    escapes = delimiter.startswith('"')
    while i < len(text):
        if escapes and text[i] == "\\":
            i += 2
            continue
        if text.startswith(delimiter, i):
            end = i + len(delimiter)
            # a multi-line string may end with up to two extra quotes (`""""` closes after one quote)
            while len(delimiter) == 3 and end < len(text) and text[end] == delimiter[0] and end - i < 5:
                end += 1
            return end
        if len(delimiter) == 1 and text[i] == "\n":
            break
        i += 1
    raise TomlEditError(f"unterminated string at offset {pos}")


def _scan_array(text: str, pos: int) -> _Array:
    """The array of strings whose `[` is at `pos`: where each element and the closing `]` are."""
    if not text.startswith("[", pos):
        raise TomlEditError(f"expected an array at offset {pos}")
    elements: list[tuple[int, int]] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch in " \t\r\n,":
            i += 1
        elif ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
        elif ch == "]":
            return _Array(pos, i, tuple(elements))
        elif ch in "\"'":
            end = _string_end(text, i)
            elements.append((i, end))
            i = end
        else:
            raise TomlEditError(f"only an array of strings can be edited in place; found {ch!r} at offset {i}")
    raise TomlEditError(f"unterminated array at offset {pos}")


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    """Start of the line holding `pos`, and the offset after its newline."""
    start = text.rfind("\n", 0, pos) + 1
    newline = text.find("\n", pos)
    return start, len(text) if newline < 0 else newline + 1


def toml_string(value: str) -> str:
    """`value` as a TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def _newline_of(line: str) -> str:
    return "\r\n" if line.endswith("\r\n") else "\n"


# --- the edits -------------------------------------------------------------------------------------------
def _checked(after: str, expected: dict[str, Any], what: str) -> str:
    """`after` if it parses to exactly `expected`, else the edit is refused (nothing is written)."""
    try:
        parsed = tomllib.loads(after)
    except tomllib.TOMLDecodeError as e:
        raise TomlEditError(f"{what} would make the file invalid TOML ({e})") from e
    if parsed != expected:
        raise TomlEditError(f"{what} would change more than that one entry")
    return after


def add_key_after(text: str, anchor: str, key: str, value: list[str]) -> str:
    """A new line `key = [...]` right after the top-level statement `anchor = ...` (a one-line value such as
    `version = 2`), with that line's newline style; nothing else moves."""
    doc = _load(text)
    if key in doc:
        raise TomlEditError(f"`{key}` is already set")
    found = _top_level_statement(text, anchor)
    if found is None:
        raise TomlEditError(f"no top-level `{anchor}` line to put `{key}` after")
    line, _ = found
    newline = _newline_of(line.text)
    new_line = f"{key} = [{', '.join(toml_string(v) for v in value)}]"
    if line.text.endswith("\n"):
        edited = text[: line.end] + new_line + newline + text[line.end :]
    else:
        edited = text + newline + new_line + newline
    return _checked(edited, {**doc, key: list(value)}, f"adding `{key}`")


def append_element(text: str, key: str, value: str) -> str:
    """The top-level array `key` with `value` appended: on one line `, "value"` before `]`; in an array laid
    out one element per line, a new line indented like the last element."""
    doc = _load(text)
    found = _top_level_statement(text, key)
    if found is None or not isinstance(doc.get(key), list):
        raise TomlEditError(f"no top-level array `{key}`")
    _, value_at = found
    array = _scan_array(text, value_at)
    quoted = toml_string(value)
    if not array.elements:
        edited = text[: array.open + 1] + quoted + text[array.open + 1 :]
    else:
        last_start, last_end = array.elements[-1]
        if "\n" not in text[last_end : array.close]:
            edited = text[:last_end] + ", " + quoted + text[last_end:]
        else:
            line_start, line_end = _line_bounds(text, last_end)
            last_line = text[line_start:line_end]
            indent = last_line[: len(last_line) - len(last_line.lstrip(" \t"))]
            comma = "" if text[last_end:line_end].lstrip(" \t").startswith(",") else ","
            newline = _newline_of(last_line)
            edited = (
                text[:last_end] + comma + text[last_end:line_end]
                + f"{indent}{quoted},{newline}" + text[line_end:]
            )
    return _checked(edited, {**doc, key: [*doc[key], value]}, f"adding {quoted} to `{key}`")


def remove_element(text: str, key: str, value: str, drop_empty: bool) -> str:
    """The top-level array `key` without its last element equal to `value` (the inverse of `append_element`
    and `add_key_after`); the whole `key` line goes when `drop_empty` and nothing else is left."""
    doc = _load(text)
    found = _top_level_statement(text, key)
    values = doc.get(key)
    if found is None or not isinstance(values, list) or value not in values:
        raise TomlEditError(f"`{key}` has no element {value!r}")
    line, value_at = found
    array = _scan_array(text, value_at)
    decoded = [tomllib.loads(f"v = {text[s:e]}")["v"] for s, e in array.elements]
    index = len(decoded) - 1 - decoded[::-1].index(value)
    start, end = array.elements[index]
    remaining = [*values[:index], *values[index + 1 :]]
    if not remaining and drop_empty:
        _, statement_end = _line_bounds(text, array.close)
        edited = text[: line.start] + text[statement_end:]
        expected = {k: v for k, v in doc.items() if k != key}
    else:
        expected = {**doc, key: remaining}
        line_start, line_end = _line_bounds(text, start)
        rest = text[end:line_end].strip()
        rest = rest[1:].lstrip() if rest.startswith(",") else rest
        alone_on_its_line = (
            not text[line_start:start].strip()
            and (not rest or rest.startswith("#"))
            and array.open < line_start
            and line_end <= array.close
        )
        if alone_on_its_line:
            edited = text[:line_start] + text[line_end:]
        elif not remaining:  # `["x"]` or `["x",]` back to `[]`
            comma = re.match(r"[ \t]*,", text[end:])
            edited = text[:start] + text[end + (comma.end() if comma else 0) :]
        elif index > 0:
            edited = text[: array.elements[index - 1][1]] + text[end:]
        else:
            edited = text[:start] + text[array.elements[1][0] :]
    return _checked(edited, expected, f"removing {value!r} from `{key}`")
