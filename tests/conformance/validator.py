"""Python side of the offline profile validator (tests/validator): start it once, ask it often.

The validator is a JVM (HAPI's FhirInstanceValidator over the npm IG packages) that reads one
JSON request per line and answers one JSON line each. Starting it costs tens of seconds
(loading R4 core and the packages); validating a resource after that costs milliseconds, so a
test session or a report run starts one and sends it everything.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR_DIR = ROOT / "tests" / "validator"
LOG_FILE = VALIDATOR_DIR / "validator.log"
START_TIMEOUT = 900.0
"""Seconds for fetch + build + start (a cold Maven build on a loaded 2-core machine is slow)."""
ANSWER_TIMEOUT = 600.0
"""Seconds for one answer; a Bundle of a hundred resources takes a few seconds at most."""


class ValidatorError(RuntimeError):
    """The validator could not be started, died, or could not handle a request."""


@dataclass(frozen=True)
class Message:
    """One issue the validator reported."""

    severity: str
    location: str
    message: str
    message_id: str | None = None

    @property
    def is_error(self) -> bool:
        """Errors and fatal errors fail validation; warnings and information do not."""
        return self.severity in ("error", "fatal")


class ProfileValidator:
    """A running validator process; use as a context manager, or call :meth:`close`."""

    def __init__(self, extension_domains: Iterable[str] = ()) -> None:
        args = ["bash", str(VALIDATOR_DIR / "validator.sh"), "serve"]
        for domain in extension_domains:
            args += ["--extension-domain", domain]
        self._log = LOG_FILE.open("w", encoding="utf-8")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        assert self._process.stdout is not None
        self._answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        self._next_id = 0
        self.startup = self.status(timeout=START_TIMEOUT)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._answers.put(line)
        self._answers.put(None)

    def _ask(self, request: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        stdin = self._process.stdin
        if stdin is None or self._process.poll() is not None:
            raise ValidatorError(self._died())
        try:
            stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
            stdin.flush()
        except BrokenPipeError as exc:
            raise ValidatorError(self._died()) from exc
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty as exc:
            raise ValidatorError(f"no answer from the validator within {timeout:.0f} s") from exc
        if line is None:
            raise ValidatorError(self._died())
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise ValidatorError(f"validator could not handle the request: {answer['error']}")
        return answer

    def _died(self) -> str:
        self._log.flush()
        tail = LOG_FILE.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        return "the profile validator is not running; last lines of its log:\n" + "\n".join(tail)

    def validate(self, resource: dict[str, Any], profiles: Iterable[str] = ()) -> list[Message]:
        """Issues for ``resource`` against base R4, its own meta.profile, and ``profiles``."""
        self._next_id += 1
        answer = self._ask(
            {"id": str(self._next_id), "resource": resource, "profiles": list(profiles)}
        )
        return [
            Message(m["severity"], m.get("location") or "", m["message"], m.get("messageId"))
            for m in answer["messages"]
        ]

    def status(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        """Counters and facts: network attempts, the guard, the interfaces, the packages."""
        return self._ask({"op": "status"}, timeout=timeout)

    def probe_network(self, port: int = 9) -> dict[str, Any]:
        """Makes the validator try a DNS lookup and a loopback connection, to show both fail."""
        return self._ask({"op": "probe-network", "port": port})

    @property
    def pid(self) -> int:
        """Process id of the validator (the JVM: validator.sh execs it)."""
        return self._process.pid

    def close(self) -> None:
        """Ends the validator: closing its input makes it exit; killed if it does not."""
        if self._process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()

    def __enter__(self) -> ProfileValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
