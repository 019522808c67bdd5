"""Help, completion and the never-a-traceback rule of the command line."""

from __future__ import annotations

import pytest

from adapter.cli import build_parser, main

COMMANDS = ["validate", "convert", "push", "pull", "timeline", "serve", "completion"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    assert "example" in capsys.readouterr().out


def test_bash_completion_lists_commands_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o filenames -F _fhir_adapter fhir-adapter" in script
    for command in COMMANDS:
        assert command in script
    assert "--fhir-version" in script and "--out-dir" in script


def test_push_without_server_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FHIR_SERVER_URL", raising=False)
    assert main(["push", "examples/cases/lhes-01.json"]) == 2
    assert "--server" in capsys.readouterr().err


def test_internal_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(_: object) -> int:
        raise RuntimeError("simulated bug")

    parser = build_parser()
    monkeypatch.setattr("adapter.cli.build_parser", lambda: parser)
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            action.choices["validate"].set_defaults(handler=boom)
    assert main(["validate", "x.json"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "simulated bug" in err and "Traceback" not in err
