"""The public API's names and signatures against tests/api_surface.txt: a change to them is seen as a diff.

A deliberate change rewrites the file (``EVOLVE_UPDATE_API=1``) and, if it would break callers,
raises ``evolve.API_VERSION``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from pathlib import Path

import evolve

SURFACE = Path(__file__).parent / "api_surface.txt"


def surface() -> str:
    lines = [f"API_VERSION = {evolve.API_VERSION}"]
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
    return "\n".join(lines) + "\n"


def test_the_public_api_is_the_checked_in_one():
    got = surface()
    if os.environ.get("EVOLVE_UPDATE_API"):
        SURFACE.write_text(got)
    want = SURFACE.read_text()
    assert got == want, "the public API changed (EVOLVE_UPDATE_API=1 rewrites tests/api_surface.txt):\n" + "".join(
        difflib.unified_diff(want.splitlines(True), got.splitlines(True), "api_surface.txt", "now"))


def test_every_public_name_has_a_docstring_with_an_example_or_a_purpose():
    for name in evolve.__all__:
        obj = getattr(evolve, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    assert "evolve.run(" in (evolve.api.__doc__ or "") and "evolve.open(" in evolve.api.__doc__
