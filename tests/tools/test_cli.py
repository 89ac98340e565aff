import pytest

from recfx.tools.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name


def test_resolve_model_errors():
    from recfx.tools.common import resolve_model

    with pytest.raises(ValueError, match="unknown model 'nope'"):
        resolve_model("nope")
    with pytest.raises(ValueError, match="cannot load"):
        resolve_model("not_a_module_xyz:factory")
