"""A third model family, added as a reviewer would: one new module and a registration, nothing else changed. It
works from the Python API, `sca caption`, `sca infer`, `sca eval` and `sca bench speed`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sca.assets import SAMPLE_IMAGE

pytestmark = pytest.mark.slow

FAMILY = textwrap.dedent('''
    """A family that captions every region "x": the shipped model's SAM for masks, no captioner at all."""

    import torch

    from sca.models.region_model import RegionModel, RegionOutputs
    from sca.models.sca_region import build_sca


    class XModel(RegionModel):
        def __init__(self, dtype=torch.float32, device="cpu"):
            self.sam = build_sca(dtype=dtype, device=device)
            self.frame = self.sam.frame

        device = property(lambda self: self.sam.device)
        dtype = property(lambda self: self.sam.dtype)

        def image_embeddings(self, pixel_values):
            return self.sam.image_embeddings(pixel_values)

        def segment(self, encoded, prompts, multimask_output=True, min_iou=None):
            return self.sam.segment(encoded, prompts, multimask_output)

        def caption(self, encoded, prompts, tasks=None, multimask_output=True):
            scores, masks = self.segment(encoded, prompts, multimask_output)
            return RegionOutputs(scores, masks, [[["x"]] * prompts.num_regions] * prompts.batch_size)


    def build_x(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> XModel:
        return XModel(dtype, device)
''')


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The module, registered through the entry-point group `sca.model_kinds` as an installed package would be."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "x_family.py").write_text(FAMILY)
    info = folder / "x_family-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: x-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sca.model_kinds]\nx = x_family:build_x\n")
    return folder


def _sca(args, plugin):
    env = os.environ | {"PYTHONPATH": f"{plugin}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "sca", *args], capture_output=True, text=True, env=env, timeout=600)


def test_the_python_api(plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin))
    from sca.api import RegionCaptioner

    captioner = RegionCaptioner.from_pretrained(kind="x")
    captioner.set_image(SAMPLE_IMAGE)
    regions = captioner.caption(boxes=[[35, 97, 73, 135], [89, 137, 158, 206]], points=[[50, 110], [120, 170]])
    assert [r.caption for r in regions] == ["x", "x"] and len(regions[0].iou_scores) == 3
    assert [r.caption for r in captioner.anything()] == ["x"] * len(captioner.anything())


def test_caption_infer_eval_and_bench_from_the_command_line(plugin, tmp_path):
    done = _sca(["caption", str(SAMPLE_IMAGE), "--kind", "x", "--box", "35,97,73,135", "--json"], plugin)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["regions"][0]["caption"] == "x"

    done = _sca(["infer", "model.kind=x", f"output_dir={tmp_path}", "infer.max_images=2"], plugin)
    assert done.returncode == 0, done.stderr
    entries = json.loads((tmp_path / "infer" / "infer-shapes-val.json").read_text())
    assert entries and all(e["candidates"] == ["x"] for e in entries)
    done = _sca(["eval", str(tmp_path / "infer" / "infer-shapes-val.json")], plugin)
    assert done.returncode == 0, done.stderr

    done = _sca(["bench", "speed", "--models", "x", "--regions", "4", "--chunks", "2", "--image-size", "256",
                 "--new-tokens", "2"], plugin)
    assert done.returncode == 0, done.stderr
    assert "| x |" in done.stdout

    done = _sca(["caption", str(SAMPLE_IMAGE), "--kind", "y", "--box", "1,1,5,5"], plugin)
    assert done.returncode == 2 and "unknown model kind 'y': use one of" in done.stderr and "x" in done.stderr
