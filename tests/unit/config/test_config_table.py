"""docs/configuration.md's configuration table is the one the declared keys render (python -m devtools.config_table)."""
from pathlib import Path

from devtools.config_table import BEGIN, DEFAULT_FILE, END, main, render, replace_table

ROOT = Path(__file__).resolve().parents[3]
CONFIGURATION = ROOT / DEFAULT_FILE


def test_configuration_table_is_the_generated_one():
    text = CONFIGURATION.read_text()
    assert replace_table(text, render()) == text, f"run: python -m devtools.config_table --write {DEFAULT_FILE}"


def test_the_table_has_one_home():
    assert BEGIN not in (ROOT / "README.md").read_text()


def test_check_and_write(tmp_path):
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Title\n\n{BEGIN}\n| stale |\n{END}\n\nprose\n")
    assert main(["--check", str(doc)]) == 1
    assert main(["--write", str(doc)]) == 0 and main(["--check", str(doc)]) == 0
    assert doc.read_text() == f"# Title\n\n{BEGIN}\n{render()}{END}\n\nprose\n"


def test_the_default_file_is_docs_configuration(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / DEFAULT_FILE).write_text(f"{BEGIN}\n| stale |\n{END}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--check"]) == 1
    assert main(["--write"]) == 0 and main(["--check"]) == 0


def test_a_file_without_the_markers_is_refused(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert main(["--write", str(readme)]) == 2 and readme.read_text() == "# Title\n"
    assert f"the table lives in {DEFAULT_FILE}" in capsys.readouterr().err
