"""README.md's configuration table is the one the declared keys render (python -m devtools.config_table)."""
from pathlib import Path

from devtools.config_table import BEGIN, END, main, render, replace_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_the_generated_one():
    text = README.read_text()
    assert replace_table(text, render()) == text, "run: python -m devtools.config_table --write README.md"


def test_check_and_write(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{BEGIN}\n| stale |\n{END}\n\nprose\n")
    assert main(["--check", str(readme)]) == 1
    assert main(["--write", str(readme)]) == 0 and main(["--check", str(readme)]) == 0
    assert readme.read_text() == f"# Title\n\n{BEGIN}\n{render()}{END}\n\nprose\n"
