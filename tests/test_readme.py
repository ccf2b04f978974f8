"""The README's promises: its two fresh-machine commands exist and CI runs the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in first_block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_install_and_run_and_install_and_test():
    run, test = _readme_commands()[:2]
    assert "pip install -c constraints.txt" in run and "mirnet enhance samples/" in run
    assert "pip install -c constraints.txt" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_samples_named_by_the_readme_exist():
    assert len(list((ROOT / "samples").glob("*_dark.png"))) >= 3
