"""The README and the docs: the site builds offline and strictly (MkDocs), and every example runs as written — on
the shipped model, the sample image and the sample clip — except those marked `<!-- not run: why -->` (the
network, a published dataset, a server that keeps running). An example that stops working fails here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.slow  # each example starts a process that loads the model


def examples() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            if before.startswith("<!-- not run:"):
                continue
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match.group(1), match.group(2), id=f"{page.name}:{line}"))
    return found


def test_every_page_marks_why_an_example_is_not_run():
    for page in PAGES:
        for marker in re.findall(r"<!-- not run:(.*?)-->", page.read_text()):
            assert len(marker.strip()) > 10, (page.name, marker)  # a reason, not a bare marker


def test_the_docs_site_builds_offline_and_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                           "--config-file", str(ROOT / "mkdocs.yml")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()


@pytest.mark.parametrize("language, code", examples())
def test_the_example_runs_as_written(tmp_path, language, code):
    (tmp_path / "src").symlink_to(ROOT / "src")  # the examples name the repository's sample files
    environment = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 0, f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
