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
    from recfx.models.resolve import resolve_model

    with pytest.raises(ValueError, match="unknown model 'nope'"):
        resolve_model("nope")
    with pytest.raises(ValueError, match="cannot load"):
        resolve_model("not_a_module_xyz:factory")


def _help_texts():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        yield name, p.format_help()


def test_help_texts_point_only_at_commands_and_options_that_exist():
    """``recfx export-onnx --help`` used to send users to ``recfx bench --list-models``, which did not exist."""
    import re

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, text in _help_texts():
        for cmd, rest in re.findall(r"recfx ([a-z][\w-]*)((?: [\w-]+)*)", " ".join(text.split())):
            assert cmd in sub.choices, (name, cmd)
            for word in rest.split():
                if word.startswith("--"):
                    assert word in sub.choices[cmd].format_help(), (name, cmd, word)
                elif cmd == "list":
                    assert word in ("models", "backends"), (name, word)
    assert any("recfx list models" in text for _, text in _help_texts())


def test_list_models_and_backends(capsys):
    from recfx.backends import BACKENDS
    from recfx.models import MODELS

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines()} >= set(MODELS.names())
    assert "package.module:factory" in out
    assert main(["list", "backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [*BACKENDS.names(), "auto", "auto-fp8"]
    assert any(ln.split()[:2] == ["eager", "yes"] for ln in lines)
    assert lines[-2].startswith("auto ") and "picks" in lines[-2]


def test_model_factory_is_found_in_the_current_folder(tmp_path, monkeypatch):
    """``--model mymod:factory`` finds mymod.py in the current folder, as ``python -m`` would."""
    import sys

    import torch

    from recfx.models.resolve import resolve_model

    (tmp_path / "recfx_cwd_model_xyz.py").write_text(
        "import torch\n\ndef factory():\n    return torch.nn.Linear(3, 2), torch.randn(2, 3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    name, model, inputs, spec = resolve_model("recfx_cwd_model_xyz:factory")
    assert isinstance(model, torch.nn.Linear) and inputs[0].shape == (2, 3) and spec is None
    with pytest.raises(ValueError, match="looked for in the current folder"):
        resolve_model("recfx_cwd_missing_xyz:factory")
