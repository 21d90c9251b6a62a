"""The public API's names and signatures against tests/api_surface.txt: a change to them is seen as a diff.

A deliberate change rewrites the file (``EVOLVE_UPDATE_API=1``) and, if it would break callers,
raises ``evolve.API_VERSION``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import re
from pathlib import Path

import evolve

SURFACE = Path(__file__).parent / "api_surface.txt"
MOVED = {"evolve.store.records": "evolve.records"}
"""Modules the public types moved out of, new path -> old: the surface names them by their old path, which
still imports (``evolve/records.py`` re-exports), so code written against 0.1.0 reads the same names."""


def surface() -> str:
    lines = [f"API_VERSION = {evolve.API_VERSION}"]
    lines += [f"# {old} is now {new}; the old path still imports, for code written against 0.1.0"
              for new, old in sorted(MOVED.items())]
    for name in sorted(evolve.__all__):
        obj = getattr(evolve, name)
        if inspect.isfunction(obj):
            lines.append(f"evolve.{name}{inspect.signature(obj)}")
        elif inspect.isclass(obj):
            lines.append(f"class evolve.{name}")
            if hasattr(obj, "model_fields"):
                lines += [f"    {field}: {info.annotation}" for field, info in obj.model_fields.items()]
            elif dataclasses.is_dataclass(obj):
                lines += [f"    {f.name}: {f.type}" for f in dataclasses.fields(obj)]
            for member, value in sorted(vars(obj).items()):
                if member.startswith("_") and member != "__init__":
                    continue
                if inspect.isfunction(value):
                    lines.append(f"    def {member}{inspect.signature(value)}")
                elif isinstance(value, property):
                    lines.append(f"    property {member}")
    text = "\n".join(lines) + "\n"
    for new, old in MOVED.items():
        text = re.sub(rf"\b{re.escape(new)}\.(?=[A-Z])", old + ".", text)
    return text


def test_the_public_api_is_the_checked_in_one():
    got = surface()
    if os.environ.get("EVOLVE_UPDATE_API"):
        SURFACE.write_text(got)
    want = SURFACE.read_text()
    assert got == want, "the public API changed (EVOLVE_UPDATE_API=1 rewrites tests/api_surface.txt):\n" + "".join(
        difflib.unified_diff(want.splitlines(True), got.splitlines(True), "api_surface.txt", "now"))


def test_the_old_paths_of_moved_types_still_import_the_same_objects():
    text = SURFACE.read_text()
    for new, old in MOVED.items():
        names = set(re.findall(rf"\b{re.escape(old)}\.([A-Z]\w*)", text))
        assert names, f"{old} no longer appears in api_surface.txt: drop it from MOVED"
        for name in names:
            assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name), name


def test_every_public_name_has_a_docstring_with_an_example_or_a_purpose():
    for name in evolve.__all__:
        obj = getattr(evolve, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    assert "evolve.run(" in (evolve.api.__doc__ or "") and "evolve.open(" in evolve.api.__doc__
