"""Allows ``python -m adapter`` as an alias of the ``fhir-adapter`` console script."""

from adapter.cli import main

raise SystemExit(main())
