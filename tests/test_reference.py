"""docs/reference/ is generated from the code: it must be what `python -m ragqa.apps.reference` writes."""

import pytest

from ragqa.apps import reference
from ragqa.config import Settings


@pytest.mark.parametrize("path", [reference.CONFIGURATION_MD, reference.CLI_MD], ids=lambda p: p.name)
def test_committed_reference_is_what_the_code_renders(path):
    expected = reference.rendered()[path]
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    assert current == expected, (f"{path.relative_to(reference.resources.CHECKOUT)} is out of date: "
                                 f"run `{reference.REGENERATE}` and commit the result")


def test_every_setting_is_in_the_configuration_reference():
    text = reference.render_configuration()
    for name, info in Settings.model_fields.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, name
        assert f"`RAGQA_{name.upper()}`" in row
        assert " ".join(info.description.split()).replace("|", "\\|") in row


def test_every_command_is_in_the_cli_reference():
    text = reference.render_cli()
    paths = reference.command_paths()
    for expected in ("ragqa", "ragqa ask", "ragqa index build", "ragqa index migrate", "ragqa bench all",
                     "ragqa data import", "ragqa eval qa", "ragqa variants inspect", "ragqa train"):
        assert expected in paths
    for path in paths:
        assert f"`{path}`" in text, path
    for _, command in reference._walk(reference.cli_command(), ["ragqa"]):
        for param in command.params:
            if not param.hidden:
                assert reference._param_names(param) in text, param.name


def test_check_mode_reports_stale_files(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(reference, "rendered", lambda: {stale: "new\n"})
    monkeypatch.setattr(reference.resources, "CHECKOUT", tmp_path)
    assert reference.main(["--check"]) == 1 and stale.read_text(encoding="utf-8") == "old\n"
    assert "out of date; run python -m ragqa.apps.reference" in capsys.readouterr().out
    assert reference.main([]) == 0 and stale.read_text(encoding="utf-8") == "new\n"
    assert reference.main(["--check"]) == 0
