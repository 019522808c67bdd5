"""Optional native build of the conversion path (everything else is in pyproject.toml).

With ``FHIR_ADAPTER_COMPILE=1`` in the environment, ``pip install .`` / ``pip wheel .`` compiles
the modules listed in ``COMPILED`` with mypyc, as black and mypy ship themselves: the same
source, type-checked by mypy --strict, turned into C extensions (about 1.3x faster end to end
on ``convert``: README, Performance). Without it, and for every editable install, the package
is pure Python. The wheel carries the .py files as well; a compiled module takes precedence.

``tests/compiled/test_compiled_build.py`` builds this wheel and checks that it writes the same
bytes, errors and exit codes as the pure package.
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "adapter/mapping",
    "adapter/terminology.py",
    "adapter/mappings.py",
    "adapter/record/dates.py",
    "adapter/record/schema.py",
    "adapter/record/validate.py",
    "adapter/pipeline.py",
]
"""The conversion path. Left out: modules that define exception classes (mypyc cannot
compile subclasses of built-in exceptions), I/O edges (CLI, gateway, client), whose time is
spent elsewhere, and anything tests patch at module level."""

ext_modules = []
if os.environ.get("FHIR_ADAPTER_COMPILE", "") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
