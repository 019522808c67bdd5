"""The build backend: setuptools, plus mypy as a build requirement when compiling.

``FHIR_ADAPTER_COMPILE=1 pip install .`` (or ``pip wheel .``) compiles the conversion path
with mypyc (see setup.py); pip builds in an isolated environment, so the compiler has to be
asked for here, and only then: an ordinary or editable install stays pure Python and needs
neither mypy nor a C compiler.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the PEP 517 hooks this module extends)

COMPILE_VARIABLE = "FHIR_ADAPTER_COMPILE"
MYPYC_REQUIREMENT = "mypy>=1.10"


def _compiling() -> bool:
    return os.environ.get(COMPILE_VARIABLE, "") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' own requirements, plus mypy (which carries mypyc) when compiling."""
    if not _compiling():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to answer, and setup.py imports mypyc when compiling: ask it
    # as for a pure build, before mypy is installed, then add mypy.
    os.environ[COMPILE_VARIABLE] = "0"
    try:
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ[COMPILE_VARIABLE] = "1"
    return [*requires, MYPYC_REQUIREMENT]
