"""`sca bench speed` end to end on a tiny SAM (the real-size rows are for benchmarks, not tests)."""

import json

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


def test_speed_options_are_checked(capsys):
    assert main(["bench", "speed", "--sam", "vit-x"]) == 2
    assert "--sam" in capsys.readouterr().err
