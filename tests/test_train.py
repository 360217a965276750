import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from sca.cli import compose_config, main
from sca.errors import InputError
from sca.models import ScaModel
from sca.train.run import run_training

SMALL = [
    "train=shapes",
    "data.train.0.num_images=48",
    "data.eval.num_images=8",
    "train.max_eval_samples=8",
    "train.args.logging_steps=5",
    "train.args.per_device_train_batch_size=4",
]


def _losses(output_dir, checkpoint):
    state = json.loads((output_dir / checkpoint / "trainer_state.json").read_text())
    return state, [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_training_lowers_the_loss_and_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config("train", SMALL + [f"output_dir={out}", "train.args.max_steps=60", "train.args.save_steps=30",
                                           "train.args.eval_steps=30"])
    final = run_training(cfg)
    state, losses = _losses(out, "checkpoint-60")
    assert state["global_step"] == 60
    assert losses[-1] < 0.8 * losses[0], losses
    assert (out / "config.yaml").is_file()
    ScaModel.from_pretrained(final)

    # Resume from step 30 of a copy: the optimizer state is the saved one, and steps continue from 30.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    os.symlink(out / "checkpoint-30", resumed / "checkpoint-30")
    saved_optimizer = torch.load(out / "checkpoint-30" / "optimizer.pt", weights_only=False)
    seen = {}

    from transformers import TrainerCallback

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            seen["step"] = state.global_step
            seen["optimizer"] = copy.deepcopy(optimizer.state_dict())  # the live state keeps training

    import sca.train.run as run_module

    original = run_module.ScaTrainer

    class CapturingTrainer(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Capture())

    run_module.ScaTrainer = CapturingTrainer
    try:
        cfg = compose_config("train", SMALL + [f"output_dir={resumed}", "train.args.max_steps=60",
                                               "train.args.save_steps=30", "train.args.eval_steps=30", "train.resume=true"])
        run_training(cfg)
    finally:
        run_module.ScaTrainer = original
    assert seen["step"] == 30
    for key, value in saved_optimizer["state"].items():
        assert torch.equal(seen["optimizer"]["state"][key]["exp_avg"], value["exp_avg"])
    state, _ = _losses(resumed, "checkpoint-60")
    assert state["global_step"] == 60
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # history carried over, no step run twice


def test_two_processes_train_with_gloo(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sca", "train",
        *SMALL, f"output_dir={out}", "train.args.max_steps=4", "train.args.save_steps=4", "train.args.eval_steps=4",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2" in result.stderr
    model = ScaModel.from_pretrained(out / "final")
    assert model.config.model_type == "sca"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=no-such-data"], "no-such-data"),
        (["model=pretrained"], "model.path must be set"),
        (["train.args.no_such_argument=1"], "no_such_argument"),
        (["train.correction_rounds=-1"], "train.correction_rounds must be a whole number"),
        (["train.correction_rounds=1", "train.loss_weights.mask=0"], "set train.loss_weights.mask above 0"),
        (["train.background_negatives=1.5"], "train.background_negatives must be a probability"),
        (["train.zeroed_modules=mask_decoder"], "train.zeroed_modules must be a list of module paths"),
        # these two are found once the model is built (on a few images)
        (["train.zeroed_modules=[mask_decoder.no_such_layer]", "data.train.0.num_images=4"],
         "train.zeroed_modules: no module 'mask_decoder.no_such"),
        (["train.trainable_modules=[no_such_module]", "data.train.0.num_images=4"],
         "train.trainable_modules: no module 'no_such_module'"),
        # sizes a tiny model's layers cannot take: refused before the first forward
        (["model=sca-tiny", "model.patch_size=256", "data.train.0.num_images=4"], "patch_size must be between 1 and"),
        (["model=sca-tiny", "model.hidden_size=30", "data.train.0.num_images=4"], "hidden_size must be a multiple of 4"),
        (["model=sca-tiny", "model.task_tokens=0", "data.train.0.num_images=4"], "task_tokens must be at least 1"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, overrides, message):
    code = main(["train", f"output_dir={tmp_path}", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_dataset_is_named(tmp_path):
    cfg = compose_config("train", ["data=vg-densecap", f"data.root={tmp_path / 'vg'}", f"output_dir={tmp_path}"])
    with pytest.raises(InputError, match="densecap_splits.json"):
        run_training(cfg)


def test_evaluation_can_generate_and_score_meteor(tmp_path):
    out = tmp_path / "meteor"
    cfg = compose_config("train", SMALL + [f"output_dir={out}", "train.args.max_steps=4", "train.args.save_steps=4",
                                           "train.args.eval_steps=4", "train.eval_generation.enabled=true",
                                           "train.eval_generation.max_images=2", "train.eval_generation.max_new_tokens=6"])
    run_training(cfg)
    state, _ = _losses(out, "checkpoint-4")
    scores = [entry["eval_meteor"] for entry in state["log_history"] if "eval_meteor" in entry]
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
