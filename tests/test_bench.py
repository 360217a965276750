"""`sca bench speed` end to end on a tiny SAM (the real-size rows are for benchmarks, not tests)."""

import json

import numpy as np

from sca.cli import main


def test_speed_table_and_json(tmp_path, capsys):
    code = main(["bench", "speed", "--models", "sca,sca-anything", "--sam", "tiny", "--image-size", "64",
                 "--regions", "3", "--chunks", "2", "--mixer-layers", "1", "--new-tokens", "2",
                 "--points-per-side", "2", "--out", str(tmp_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| sca | tiny | gpt2 | float32 | 2 | 3 |" in table and "sca-anything" in table
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert len(rows) == 2 and all(r["seconds_per_image"] > 0 and r["peak_memory_gb"] > 0 for r in rows)
    assert rows[0]["parts"]["regions"] == 3


def test_speed_rows_of_sca_on_sam2_beside_sca(tmp_path, capsys):
    code = main(["bench", "speed", "--models", "sca,sca-sam2", "--sam", "tiny,sam2-tiny", "--image-size", "224",
                 "--regions", "2", "--chunks", "2", "--mixer-layers", "1", "--new-tokens", "2", "--runs", "1",
                 "--roofline", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["case"]["model"], r["case"]["sam"]) for r in rows] == [("sca", "tiny"), ("sca-sam2", "sam2-tiny")]
    assert all(r["seconds_per_image"] > 0 for r in rows)
    # the roofline: every stage of both families found and doing products; the stages and `other` add up
    for row in rows:
        figures = row["parts"]["roofline"]
        stages = figures["stages"]
        assert list(stages) == ["image encoder", "SAM decoder", "mixer", "LM", "other"]
        assert all(stages[s]["flop"] > 0 and stages[s]["seconds"] > 0 for s in ("image encoder", "SAM decoder",
                                                                                 "mixer", "LM"))
        assert sum(s["flop"] for s in stages.values()) == figures["total_flop"] and figures["product_flops"] > 0
    table = (tmp_path / "speed.md").read_text()
    assert "Roofline: where the time goes" in table and "| sca-sam2 | sam2-tiny | gpt2 | float32 | mixer |" in table
    assert main(["bench", "speed", "--models", "sca-sam2", "--sam", "vit-b"]) == 2
    assert "sca-sam2 rows SAM 2's" in capsys.readouterr().err


def test_roofline_counts_the_models_own_products_exactly():
    """oneDNN's linear (the models' float32 products on a CPU), which torch's counter does not know, is counted as
    2·rows·K·N; a stage's figures exclude a stage nested in it."""
    import torch

    from sca.bench.roofline import StageMeter
    from sca.models import cpu_products

    class Inner(torch.nn.Module):
        def forward(self, x):
            return cpu_products.linear(x, torch.ones(5, 4)) if cpu_products.available() else x @ torch.ones(4, 5)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_encoder = torch.nn.Linear(4, 4, bias=False)
            self.language_model = Inner()

    model = Outer()
    meter = StageMeter(model)
    assert meter.stages == {"image encoder": ("vision_encoder", "forward"), "LM": ("language_model", "forward")}
    with torch.inference_mode(), meter.measure(count_flops=True):
        model.language_model(model.vision_encoder(torch.ones(3, 4)))
    assert dict(meter.flops) == {"image encoder": 2 * 3 * 4 * 4, "LM": 2 * 3 * 4 * 5} and meter.total_flop == 216
    assert "forward" not in vars(model.language_model)  # the methods are the class's again


def test_roofline_counts_attention_on_a_cpu():
    """SDPA's CPU kernel (SAM's first decoder layer over a shared image side), unknown to torch's counter, is counted
    as both of its products: 4·B·heads·L·S·d."""
    import torch

    from sca.bench.roofline import StageMeter

    class Attending(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.language_model = Attending()

    model = Outer()
    meter = StageMeter(model)
    q, k, v = torch.ones(2, 3, 5, 8), torch.ones(2, 3, 7, 8), torch.ones(2, 3, 7, 8)
    with torch.inference_mode(), meter.measure(count_flops=True):
        model.language_model(q, k, v)
    assert dict(meter.flops) == {"LM": 4 * 2 * 3 * 5 * 7 * 8}


def test_speed_options_are_checked(capsys):
    assert main(["bench", "speed", "--sam", "vit-x"]) == 2
    assert "--sam" in capsys.readouterr().err
    assert main(["bench", "speed", "--photo-size", "0"]) == 2
    assert "--photo-size must be at least 1" in capsys.readouterr().err


def test_speed_of_a_photo_larger_than_the_model_input(tmp_path, capsys):
    """--photo-size: the picture is resized to the model's input, and its masks come back at its own size."""
    code = main(["bench", "speed", "--models", "sca", "--sam", "tiny", "--image-size", "64", "--photo-size", "300",
                 "--regions", "2", "--chunks", "2", "--mixer-layers", "1", "--new-tokens", "2", "--runs", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    assert "One 300² image" in capsys.readouterr().out
    row = json.loads((tmp_path / "speed.json").read_text())[0]
    assert row["case"]["photo_size"] == 300 and row["parts"]["regions"] == 2


def test_quality_helpers():
    from sca.bench.quality import background_tone, far_background_point, same_colour_and_kind, side_band
    from sca.data.records import ImageRecord

    assert same_colour_and_kind("a small red circle", "a large red circle")
    assert same_colour_and_kind(" A Large RED circle ", "a large red circle")
    assert not same_colour_and_kind("a large red square", "a large red circle")
    assert not same_colour_and_kind("circle", "a large red circle")
    record = ImageRecord(image_id=1, path=None, width=200, height=100, regions=[])
    assert side_band([0, 0, 16, 30], record) == "0.30-0.35"  # the longer side over the shorter image side
    assert side_band([0, 0, 4, 2], record) == "0.00-0.05"
    mask, others = np.zeros((10, 20), bool), np.zeros((10, 20), bool)
    mask[1:3, 1:3] = True
    others[8:, 16:] = True  # another shape in the far corner: the point goes beside it, not on it
    x, y = far_background_point(mask, others)
    assert not others[int(y), int(x)] and not mask[int(y), int(x)] and x > 15 and (x, y) != (19.5, 9.5)
    image = np.full((10, 20, 3), 30, np.uint8)
    image[mask] = 250  # a bright shape on a dark background: the shape does not count
    assert background_tone(image, mask) == "dark"
    assert background_tone(np.full((4, 4, 3), 120, np.uint8), np.zeros((4, 4), bool)) == "mid"
    assert background_tone(np.full((4, 4, 3), 230, np.uint8), np.ones((4, 4), bool)) == "light"


def test_precision_matches_one_region_a_shape():
    """A second region on a found shape, and a region on no shape, are not hits; the best pairs are matched first."""
    from sca.bench.quality import one_to_one

    overlaps = np.array([[0.9, 0.6, 0.1, 0.0],   # shape 0: region 0 (best), region 1 is a duplicate
                         [0.0, 0.7, 0.0, 0.2]])  # shape 1: region 1, which shape 0 did not take
    assert one_to_one(overlaps).tolist() == [True, True, False, False]
    assert one_to_one(np.zeros((0, 3))).tolist() == [False] * 3


def test_quality_bench_writes_tables_with_goals_and_breakdown(tmp_path, capsys):
    code = main(["bench", "quality", "--images", "2", "--worlds", "classic", "--out", str(tmp_path)])
    assert code == 0
    table = (tmp_path / "quality.md").read_text()
    assert "classic shapes world" in table and "colour_kind" in table
    assert "95.2)" in table  # the goal beside the figure, met or not
    assert "| kind=" in table and "| side=" in table and "| background=light" in table
    report = json.loads((tmp_path / "quality.json").read_text())["classic"]
    assert report["images"] == 2
    assert set(report) >= {"box", "point", "point pair", "far negative", "anything"}
    assert 0 <= report["anything"]["recall"] <= 1 and set(report["anything"]["recall_by"]) <= {
        "background=light", "background=mid", "background=dark"}
    assert "shapes found (recall)" in table and "(precision)" in table
    assert 0 <= report["anything"]["precision"] <= 1 and report["anything"]["duplicates"] >= 0
    assert 0 <= report["box"]["colour_kind"] <= 1 and report["box"]["exact_match"] <= report["box"]["colour_kind"]
    assert main(["bench", "quality", "--worlds", "moon"]) == 2
    assert "--worlds" in capsys.readouterr().err


def test_bfloat16_without_bf16_units_is_named(monkeypatch):
    """On a CPU whose flags are known and have neither AVX-512 BF16 nor AMX, bfloat16 products are ~100x slower than
    float32 (measured on an AVX2-only EPYC): the command line warns; with the units, or flags unknown, it does not."""
    import torch

    from sca.models import cpu_products

    monkeypatch.setattr(cpu_products, "cpu_features", lambda: ["avx2"])
    assert cpu_products.slow_bfloat16(torch.bfloat16, "cpu")
    assert not cpu_products.slow_bfloat16(torch.float32, "cpu")
    monkeypatch.setattr(cpu_products, "cpu_features", lambda: ["avx2", "avx512f", "avx512_bf16"])
    assert not cpu_products.slow_bfloat16(torch.bfloat16, "cpu")
    monkeypatch.setattr(cpu_products, "cpu_features", lambda: [])
    assert not cpu_products.slow_bfloat16(torch.bfloat16, "cpu")


def test_the_cli_warns_of_bfloat16_without_bf16_units(monkeypatch, capsys):
    from sca.assets import SAMPLE_IMAGE
    from sca.models import cpu_products

    monkeypatch.setattr(cpu_products, "cpu_features", lambda: ["avx2"])
    assert main(["caption", str(SAMPLE_IMAGE), "--box", "35,97,73,135", "--dtype", "bfloat16"]) == 0
    assert "no bf16 units" in capsys.readouterr().err


def test_the_product_rate_is_measured_on_products_of_a_moment(monkeypatch):
    """A precision the CPU emulates would take minutes on full-size products: the side shrinks to what takes
    `PRODUCT_SECONDS`, never below the probe's, never above the one asked for."""
    import torch

    from sca.bench import roofline

    sides = []
    measure = roofline._best_rate

    def recording(dtype, device, side, repeats):
        sides.append(side)
        return measure(dtype, device, side, repeats)

    monkeypatch.setattr(roofline, "_best_rate", recording)
    monkeypatch.setattr(roofline, "PRODUCT_SECONDS", 1e-9)
    assert roofline.product_rate(torch.float32, side=512, repeats=1) > 0
    assert sides == [roofline.PROBE_SIDE, roofline.PROBE_SIDE]
    sides.clear()
    monkeypatch.setattr(roofline, "PRODUCT_SECONDS", 1e9)
    assert roofline.product_rate(torch.float32, side=384, repeats=1) > 0
    assert sides == [roofline.PROBE_SIDE, 384]
