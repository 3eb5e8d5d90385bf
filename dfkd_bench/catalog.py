"""The README's table of methods against the method registry: its presets column is
made here from each method's own presets, so the two cannot drift apart.
``python -m dfkd_bench.catalog [README.md]`` rewrites that column and names what it
cannot write itself (a method's row: its kind and source are prose);
``tests/test_readme.py`` fails while README and registry disagree."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from .registry import METHODS

SECTION = "## Methods"
# | `name` | kind | presets | source |
ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<kind>.*?) \| (?P<presets>.*?) \| (?P<source>.*) \|$")
CPU_TWIN = "-cpu"
# Every method's preset, said once under the table rather than in each row.
SHARED = "smoke"
SHARED_NOTE = f"Every method also has `{SHARED}`"


def builtin_methods() -> dict[str, type]:
    """The methods this package ships (plugins, tests' included, are not the README's)."""
    return {name: cls for name, cls in METHODS.items() if cls.__module__.startswith("dfkd_bench.")}


def presets_cell(cls: type) -> str:
    """Every preset of ``cls`` but the shared one, in its own order, each once: ``p`` or,
    for a preset with a CPU twin, ``p``/``p-cpu``."""
    cells = []
    for name in cls.presets:
        if name == SHARED or name.endswith(CPU_TWIN) and name[:-len(CPU_TWIN)] in cls.presets:
            continue
        twin = f"{name}{CPU_TWIN}"
        cells.append(f"`{name}`/`{twin}`" if twin in cls.presets else f"`{name}`")
    return ", ".join(cells)


def _table_lines(readme: str) -> range:
    """The line numbers of the method table's rows (the first table after ``SECTION``)."""
    lines = readme.splitlines()
    start = lines.index(SECTION)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("| "))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return range(first + 2, end)  # past the header and its |---| line


def table_rows(readme: str) -> dict[str, re.Match]:
    lines = readme.splitlines()
    return {m["name"]: m for i in _table_lines(readme) if (m := ROW.match(lines[i]))}


def mismatches(readme: str) -> list[str]:
    """Where README's method table and the registry disagree, one line each."""
    rows, methods = table_rows(readme), builtin_methods()
    found = [f"{name}: registered but has no row in README's method table" for name in methods if name not in rows]
    found += [f"{name}: a row in README's method table but not a registered method" for name in rows
              if name not in methods]
    found += [f"{name}: README's presets are {rows[name]['presets']}, the registry's {presets_cell(cls)}"
              for name, cls in methods.items() if name in rows and rows[name]["presets"] != presets_cell(cls)]
    found += [f"{name}: has no `{SHARED}` preset, which README says every method has" for name, cls in methods.items()
              if SHARED not in cls.presets]
    if SHARED_NOTE not in readme.split(SECTION, 1)[-1].split("\n## ", 1)[0]:
        found.append(f"README's {SECTION} section does not say '{SHARED_NOTE}'")
    return found


def synced(readme: str) -> str:
    """``readme`` with each registered method's presets cell made from the registry."""
    lines, methods = readme.splitlines(keepends=True), builtin_methods()
    for i in _table_lines(readme):
        m = ROW.match(lines[i].rstrip("\n"))
        if m and m["name"] in methods:
            end = "\n" if lines[i].endswith("\n") else ""
            lines[i] = f"| `{m['name']}` | {m['kind']} | {presets_cell(methods[m['name']])} | {m['source']} |{end}"
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "README.md")
    text = path.read_text()
    new = synced(text)
    if new != text:
        path.write_text(new)
        print(f"{path}: presets column rewritten from the registry")
    left = mismatches(new)
    for line in left:
        print(f"{path}: {line}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
