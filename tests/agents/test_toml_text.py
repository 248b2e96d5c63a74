"""In-place TOML edits (`agents/toml_text.py`): one element or one line changes, every other byte stays, and an
edit that cannot be made that way is refused. These hold whichever tomlkit release is installed: the module does
not use it (CI runs this file again with the oldest and the newest tomlkit)."""

from __future__ import annotations

import difflib
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccgpu.agents.toml_text import (
    TomlEditError,
    add_key_after,
    append_element,
    remove_element,
    toml_string,
)


def _changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True))
        if line[:1] in "+-"
    ]


def test_a_new_key_goes_on_its_own_line_right_after_the_anchor() -> None:
    text = "# head\nversion = 2  # schema\nroot = \"/r\"\n\n# CRI\n[plugins.x]\n  a = 1\n"
    edited = add_key_after(text, "version", "imports", ["conf.d/a.toml"])
    assert edited == text.replace("# schema\n", '# schema\nimports = ["conf.d/a.toml"]\n')
    assert remove_element(edited, "imports", "conf.d/a.toml", drop_empty=True) == text


def test_crlf_files_get_a_crlf_line() -> None:
    text = "version = 3\r\n[x]\r\ny = 1\r\n"
    edited = add_key_after(text, "version", "imports", ["a.toml"])
    assert edited == 'version = 3\r\nimports = ["a.toml"]\r\n[x]\r\ny = 1\r\n'
    assert remove_element(edited, "imports", "a.toml", drop_empty=True) == text


def test_an_anchor_on_the_last_line_without_newline() -> None:
    edited = add_key_after("version = 3", "version", "imports", ["a.toml"])
    assert tomllib.loads(edited) == {"version": 3, "imports": ["a.toml"]}


def test_a_quoted_anchor_key_is_found() -> None:
    edited = add_key_after('"version" = 2\n', "version", "imports", ["a.toml"])
    assert edited == '"version" = 2\nimports = ["a.toml"]\n'


def test_look_alike_lines_inside_a_multiline_string_are_not_statements() -> None:
    text = 'note = """\nversion = 9\n[fake]\nimports = ["x"]\n"""\nversion = 2\n[real]\nk = 1\n'
    edited = add_key_after(text, "version", "imports", ["a.toml"])
    assert edited == text.replace('"""\nversion = 2\n', '"""\nversion = 2\nimports = ["a.toml"]\n')


def test_a_table_key_of_the_same_name_is_not_the_top_level_one() -> None:
    text = 'version = 2\n[plugins.x]\nimports = ["inner"]\n'
    edited = add_key_after(text, "version", "imports", ["a.toml"])
    assert tomllib.loads(edited)["imports"] == ["a.toml"]
    assert tomllib.loads(edited)["plugins"]["x"]["imports"] == ["inner"]
    with pytest.raises(TomlEditError, match="no top-level array `imports`"):
        append_element(text, "imports", "a.toml")


def test_appending_to_a_one_line_array_inserts_only_the_element() -> None:
    text = "version = 2\nimports = ['/etc/a.toml', \"b.toml\",] # site\n"
    edited = append_element(text, "imports", "c.toml")
    assert edited == "version = 2\nimports = ['/etc/a.toml', \"b.toml\", \"c.toml\",] # site\n"
    assert remove_element(edited, "imports", "c.toml", drop_empty=False) == text


def test_appending_to_an_empty_array() -> None:
    edited = append_element("version = 2\nimports = []\n", "imports", "c.toml")
    assert edited == 'version = 2\nimports = ["c.toml"]\n'
    assert remove_element(edited, "imports", "c.toml", drop_empty=False) == "version = 2\nimports = []\n"


def test_a_one_element_per_line_array_gains_a_line_indented_like_the_others() -> None:
    text = 'version = 2\nimports = [\n    "/etc/a.toml", # a\n    "/etc/b.toml",\n]\n'
    edited = append_element(text, "imports", "c.toml")
    assert _changed_lines(text, edited) == ['+     "c.toml",\n']
    assert remove_element(edited, "imports", "c.toml", drop_empty=False) == text


def test_a_multiline_array_without_trailing_comma_gets_one() -> None:
    text = 'version = 2\nimports = [\n  "/etc/a.toml"\n]\n'
    edited = append_element(text, "imports", "c.toml")
    assert edited == 'version = 2\nimports = [\n  "/etc/a.toml",\n  "c.toml",\n]\n'
    assert tomllib.loads(remove_element(edited, "imports", "c.toml", drop_empty=False))["imports"] == [
        "/etc/a.toml"
    ]


def test_removing_the_first_of_several_keeps_the_rest() -> None:
    text = 'version = 2\nimports = ["c.toml", "/etc/a.toml"]\n'
    assert remove_element(text, "imports", "c.toml", drop_empty=True) == 'version = 2\nimports = ["/etc/a.toml"]\n'


def test_removing_an_absent_element_is_refused() -> None:
    with pytest.raises(TomlEditError, match="has no element 'x'"):
        remove_element('version = 2\nimports = ["a"]\n', "imports", "x", drop_empty=True)


def test_a_key_that_exists_is_not_added_twice() -> None:
    with pytest.raises(TomlEditError, match="`imports` is already set"):
        add_key_after('version = 2\nimports = ["a"]\n', "version", "imports", ["b"])


def test_an_anchor_spelled_with_escapes_is_refused_not_guessed() -> None:
    with pytest.raises(TomlEditError, match="no top-level `version` line"):
        add_key_after('"vers\\u0069on" = 2\n', "version", "imports", ["a.toml"])


def test_an_array_of_non_strings_is_refused() -> None:
    with pytest.raises(TomlEditError, match="only an array of strings"):
        append_element("version = 2\nimports = [1]\n", "imports", "a.toml")


def test_invalid_toml_is_refused() -> None:
    with pytest.raises(TomlEditError, match="not valid TOML"):
        add_key_after("version = \n", "version", "imports", ["a.toml"])


@pytest.mark.parametrize(
    "value", ["plain.toml", 'quo"te.toml', "back\\slash.toml", "tab\there.toml", "ünïcode.toml", "del\x7f.toml"]
)
def test_toml_string_round_trips(value: str) -> None:
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


# --- property: add then remove gives back the exact text --------------------------------------------------
_comment = st.from_regex(r"# [a-z \[\]=\"]{0,12}", fullmatch=True)
_key = st.sampled_from(["root", "state", "oom_score", "temp", "plugin_dir"])
_value = st.sampled_from(['"/var/lib/x"', "0", "'lit'", '"""\n[x]\nimports = 1\n"""', "[1, 2]"])
_path = st.from_regex(r"/etc/[a-z]{1,6}/[a-z*]{1,6}\.toml", fullmatch=True)


@st.composite
def _main_files(draw: st.DrawFn) -> tuple[str, list[str] | None]:
    lines: list[str] = []
    keys = draw(st.lists(_key, unique=True, max_size=3))
    imports = draw(st.none() | st.lists(_path, unique=True, max_size=3))
    version_at = draw(st.integers(0, len(keys)))
    statements = [f"{k} = {draw(_value)}" for k in keys]
    statements.insert(version_at, "version = 2" + draw(st.sampled_from(["", "  # v"])))
    if imports is not None:
        statements.insert(draw(st.integers(0, len(statements))), f"imports = {_array(imports, draw)}")
    for statement in statements:
        lines += draw(st.lists(st.one_of(_comment, st.just("")), max_size=2))
        lines.append(statement)
    lines += draw(st.lists(st.one_of(_comment, st.just("")), max_size=2))
    lines += ['[plugins."io.containerd.grpc.v1.cri"]', '  sandbox_image = "pause:3.9"   # pinned']
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + newline, imports


def _array(items: list[str], draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return "[" + ", ".join(toml_string(i) for i in items) + "]"
    return "[\n" + "".join(f"  {toml_string(i)},\n" for i in items) + "]"


@settings(max_examples=200, deadline=None)
@given(case=_main_files(), entry=st.sampled_from(["conf.d/ccgpu-kata.toml", "/etc/containerd/conf.d/ccgpu.toml"]))
def test_add_then_remove_is_byte_exact_and_touches_only_the_entry(
    case: tuple[str, list[str] | None], entry: str
) -> None:
    text, imports = case
    before = tomllib.loads(text)
    if imports is None:
        edited = add_key_after(text, "version", "imports", [entry])
        assert len(_changed_lines(text, edited)) == 1  # one added line, nothing removed
    else:
        edited = append_element(text, "imports", entry)
    after = tomllib.loads(edited)
    assert after.pop("imports") == [*(imports or []), entry]
    assert after == {k: v for k, v in before.items() if k != "imports"}
    assert remove_element(edited, "imports", entry, drop_empty=imports is None) == text


def test_an_edit_whose_result_parses_to_anything_else_is_refused() -> None:
    """The last guard of every edit: the result must parse to exactly the expected document."""
    from ccgpu.agents import toml_text

    with pytest.raises(TomlEditError, match="would change more than that one entry"):
        toml_text._checked('version = 2\nimports = ["a", "b"]\n', {"version": 2, "imports": ["a"]}, "adding 'a'")
    with pytest.raises(TomlEditError, match="would make the file invalid TOML"):
        toml_text._checked('version = 2\nimports = ["a"\n', {"version": 2, "imports": ["a"]}, "adding 'a'")
