"""Shell completion scripts generated from the argument parser, so they never drift from it."""

from __future__ import annotations

import argparse

from adapter.cli.common import EXIT_OK, add_command


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse exposes subparsers only this way
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings)


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``fhir-adapter``: subcommands, then their options."""
    commands = _subcommands(parser)
    cases = "\n".join(
        f'        {name}) opts="{" ".join(_options(sub))}" ;;' for name, sub in commands.items()
    )
    return f"""# bash completion for fhir-adapter; load with: source <(fhir-adapter completion bash)
_fhir_adapter() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="${{COMP_WORDS[1]}}" opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{" ".join(commands)} --help --version" -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _fhir_adapter fhir-adapter
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """zsh uses the bash function through bashcompinit."""
    return "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser)


def run(args: argparse.Namespace) -> int:
    """Print a shell completion script generated from this parser."""
    from adapter.cli import build_parser

    parser = build_parser()
    print(bash_script(parser) if args.shell == "bash" else zsh_script(parser), end="")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "completion",
        help="print a shell completion script",
        epilog="example: source <(fhir-adapter completion bash)",
    )
    parser.add_argument("shell", choices=["bash", "zsh"])
    parser.set_defaults(handler=run)
