"""The distribution builds as `python -m build` builds it, and its wheel, installed into an empty virtual environment,
carries everything `sca caption` needs: the configs, the page, the sample image and the shipped model."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_the_wheel_installs_into_a_fresh_venv_and_captions_the_sample(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("segment_caption_anything-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                                "--disable-pip-version-check", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # The dependencies come from this environment (listed as a path, so its editable `sca` is not picked up);
    # the package itself only from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = subprocess.run([str(python), "-c", "import sca.assets; print(sca.assets.SAMPLE_IMAGE)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    captioned = subprocess.run([str(venv / "bin" / "sca"), "caption", where, "--box", "35,97,73,135",
                                "--box", "89,137,158,206", "--box", "156,26,238,98"],
                               capture_output=True, text=True, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"})
    assert captioned.returncode == 0, captioned.stderr[-2000:]
    captions = [line.split("\t")[1] for line in captioned.stdout.strip().splitlines()]
    assert captions == ["a small red circle", "a large green square", "a large blue triangle"]
    configs = subprocess.run([str(python), "-c", "import sca.cli, pathlib; print(len(list(sca.cli.CONFIG_DIR.rglob('*.yaml'))),"
                              " (pathlib.Path(sca.cli.__file__).parent.parent / 'app/static/index.html').is_file())"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert int(configs[0]) > 10 and configs[1] == "True"
