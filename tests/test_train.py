"""Training: the CLI runs end to end, checkpoints every epoch, and a resumed run ends with the same weights."""

import copy
import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from digitrecognizer import augment, checkpoint, data, distributed, models, recipes, synth, train
from digitrecognizer.constants import NOT_A_DIGIT

# A few dozen steps on a thin network: seconds on two cores, still well above chance. The default recipe's corpus,
# shrunk to a few batches of synthetic styles and non-digits: 1,200 + 128 inputs make 20 steps an epoch.
TINY = dict(epochs=2, limit_train=1200, batch_size=64, model_args={"width": 8, "hidden": 32}, threads=2,
            corpus={"collections": [], "renderings": 1, "styles": 64, "negatives": 64})
STEPS_PER_EPOCH = (TINY["limit_train"] + TINY["corpus"]["styles"] + TINY["corpus"]["negatives"]) // TINY["batch_size"]


def tiny_config(**overrides) -> recipes.TrainConfig:
    return recipes.preset_config("default", **{**TINY, **overrides})


def test_train_cli_smoke_run_writes_checkpoints_and_metrics_and_beats_chance(mnist_dir, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "digitrecognizer.cli", "train", "--preset", "quick", "--limit-train", "2000",
         "--epochs", "2", "--out", str(out), "--data-dir", str(mnist_dir), "--threads", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["val_acc"] > 0.5  # chance is 0.1
    assert "epoch 2/2" in result.stderr and "best validation accuracy" in result.stdout


def _interrupt_at(global_step: int):
    def on_step(step: int) -> None:
        if step == global_step:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize("stop_step, outliers", [(5, 0.0), (STEPS_PER_EPOCH, 0.0), (5, 0.25)],
                         ids=["mid-epoch", "epoch-boundary", "mid-epoch-with-outliers"])
def test_resume_after_interruption_gives_the_same_weights_as_an_uninterrupted_run(mnist_dir, tmp_path, stop_step,
                                                                                  outliers, monkeypatch):
    monkeypatch.setattr(train, "SCRIBBLE_POOL", 200)  # rendering the full pool would take longer than training
    config = tiny_config(outliers=outliers)
    straight = train.fit(config, tmp_path / "straight", mnist_dir, progress=False)

    with pytest.raises(KeyboardInterrupt):
        train.fit(config, tmp_path / "resumed", mnist_dir, progress=False, on_step=_interrupt_at(stop_step))
    saved = checkpoint.load(tmp_path / "resumed" / "last.pt")
    assert saved["epoch"] * STEPS_PER_EPOCH + saved["step_in_epoch"] == stop_step
    resumed = train.fit(config, tmp_path / "resumed", mnist_dir, resume=True, progress=False)

    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in straight.ema.module.state_dict().items():
        assert torch.equal(tensor, resumed.ema.module.state_dict()[name]), name
    for name, tensor in straight.eval_model().state_dict().items():  # batch-norm statistics recomputed alike
        assert torch.equal(tensor, resumed.eval_model().state_dict()[name]), name
    assert resumed.epoch == 2 and len(resumed.history) == 2


def test_stopping_early_gives_the_first_epochs_of_the_full_schedule_and_keeps_each_epochs_weights(mnist_dir,
                                                                                                   tmp_path):
    full = train.fit(tiny_config(epochs=3, keep_epochs=True), tmp_path / "full", mnist_dir, progress=False)
    stopped = train.fit(tiny_config(epochs=3, stop_after=2), tmp_path / "stopped", mnist_dir, progress=False)

    # The learning rate follows the 3-epoch schedule, so the 2 epochs trained are the full run's first 2.
    assert stopped.epoch == 2 and stopped.history == [
        {**r, "epoch_seconds": s["epoch_seconds"], "images_per_s": s["images_per_s"]}
        for r, s in zip(full.history[:2], stopped.history)]
    assert stopped.history[-1]["lr"] > full.history[-1]["lr"]
    kept = torch.load(tmp_path / "full" / "epochs" / "002.pt", weights_only=False)
    assert kept["epoch"] == 2 and kept["val_acc"] == full.history[1]["val_acc"]
    for name, tensor in stopped.eval_model().state_dict().items():  # the weights validated, as best.pt holds them
        assert torch.equal(tensor, kept["ema"][name]), name
    assert sorted(p.name for p in (tmp_path / "full" / "epochs").iterdir()) == ["001.pt", "002.pt", "003.pt"]
    assert not (tmp_path / "stopped" / "epochs").exists()  # only kept when asked for
    # A finished run resumes to nothing more: it stops where it stopped.
    assert train.fit(tiny_config(epochs=3, stop_after=2), tmp_path / "stopped", mnist_dir, resume=True,
                     progress=False).epoch == 2


def test_stopping_after_the_end_of_the_schedule_is_a_clear_cli_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "digitrecognizer.cli", "train", "--epochs", "5", "--stop-after",
                             "6", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--stop-after 6" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(16, 1, 28, 28)
    a = augment.augment_batch(x, augment.AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment.augment_batch(x, augment.AugmentConfig(), torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_augmentation_with_every_distortion_off_is_the_identity():
    x = torch.rand(4, 1, 28, 28)
    off = augment.AugmentConfig(**{f: 0.0 for f in augment.AugmentConfig.__dataclass_fields__})
    assert torch.allclose(augment.augment_batch(x, off, torch.Generator().manual_seed(0)), x, atol=1e-5)


def _ink_box(image: torch.Tensor) -> tuple[int, int]:
    rows, cols = torch.nonzero(image[0] > 0.25, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_stretching_to_square_widens_a_thin_one_into_a_centred_bar():
    one = torch.zeros(2, 1, 28, 28)
    one[:, :, 4:24, 5:8] = 1.0  # a 20 px tall, 3 px wide stroke, off centre
    out = augment.stretch_to_square(one, torch.tensor([1.0, 0.0]))
    height, width = _ink_box(out[0])
    assert height == 20 and width >= 18  # stretched the whole way along the shorter side only
    columns = torch.nonzero(out[0, 0].amax(0) > 0.25).flatten().float()
    assert abs(float(columns.mean()) - 13.5) <= 1  # the box is centred
    assert torch.equal(out[1], one[1])  # amount 0 leaves the image alone


def test_stretching_to_square_leaves_blank_images_blank():
    assert augment.stretch_to_square(torch.zeros(3, 1, 28, 28), torch.ones(3)).abs().sum() == 0


def test_square_stretch_is_drawn_after_the_other_distortions():
    # Recipes without it keep every draw they had: the stretch's random numbers come last.
    plain = augment.draw_distortions(8, augment.AugmentConfig(), torch.Generator().manual_seed(3))
    square = augment.draw_distortions(8, augment.AugmentConfig(square=0.5), torch.Generator().manual_seed(3))
    assert plain.square is None and square.square is not None and torch.equal(plain.theta, square.theta)
    assert torch.equal(plain.crisp_level.isnan(), square.crisp_level.isnan())


def test_truncated_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {}, "config": {}}, path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(checkpoint.CheckpointError, match="last.pt: not a readable checkpoint"):
        checkpoint.load(path)


def test_resume_without_a_checkpoint_explains_what_to_do(mnist_dir, tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint there"):
        train.fit(tiny_config(), tmp_path, mnist_dir, resume=True, progress=False)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="default, mnist, seed, compact, finetune, quick"):
        recipes.preset_config("fast")


def test_fine_tuning_mixes_extra_examples_and_starts_from_given_weights(mnist_dir, tmp_path):
    import numpy as np

    base = train.fit(tiny_config(epochs=1), tmp_path / "base", mnist_dir, progress=False)
    extra = tmp_path / "mine.npz"
    images = np.zeros((5, 28, 28), np.uint8)
    images[:, 6:22, 12:16] = 255  # five thick vertical bars, labelled 1
    np.savez(extra, images=images, labels=np.ones(5, np.uint8))
    config = tiny_config(epochs=1, extra_data=str(extra), init_weights=str(tmp_path / "base" / "last.pt"), lr=0.0)
    tuned = train.fit(config, tmp_path / "tuned", mnist_dir, progress=False)
    # With lr 0 the weights stay exactly those it started from.
    for name, tensor in base.ema.module.state_dict().items():
        if tensor.is_floating_point() and "running" not in name:
            assert torch.equal(tensor, tuned.model.state_dict()[name]), name


def test_finetune_trains_the_network_its_init_weights_hold(mnist_dir, tmp_path):
    # The base is a thin network the finetune preset knows nothing of: the weights file says what to build.
    base = train.fit(tiny_config(epochs=1), tmp_path / "base", mnist_dir, progress=False)
    out = tmp_path / "tuned"
    result = subprocess.run(
        [sys.executable, "-m", "digitrecognizer.cli", "train", "--preset", "finetune", "--init-weights",
         str(tmp_path / "base" / "last.pt"), "--epochs", "1", "--limit-train", "1200", "--batch-size", "64",
         "--out", str(out), "--data-dir", str(mnist_dir), "--threads", "2", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"] == base.config.model_args and config["init_weights"].endswith("last.pt")


def test_the_network_to_fine_tune_is_read_from_an_exported_model_pt(tmp_path):
    model, _ = models.create_model("ours", width=8, hidden=32)
    path = tmp_path / "model.pt"
    torch.save({"model": "ours", "model_args": {"width": 8, "hidden": 32}, "state_dict": model.state_dict()}, path)
    config = recipes.with_network_of(recipes.preset_config("finetune"), path)
    assert (config.model, config.model_args, config.init_weights) == ("ours", {"width": 8, "hidden": 32}, str(path))
    assert config.epochs == recipes.PRESETS["finetune"]["epochs"]  # the rest of the recipe is the preset's


def test_fine_tuning_from_an_unreadable_file_or_with_another_width_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(checkpoint.CheckpointError, match="model.pt: cannot read the network to fine-tune"):
        recipes.with_network_of(recipes.preset_config("finetune"), bad)
    result = subprocess.run(
        [sys.executable, "-m", "digitrecognizer.cli", "train", "--preset", "finetune", "--init-weights", str(bad),
         "--width", "16", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot change the network of --init-weights" in result.stderr


def test_the_validation_split_does_not_move_with_the_training_seed(mnist_dir, tmp_path, monkeypatch):
    seeds = []
    real_split = data.train_val_split
    monkeypatch.setattr(train.data, "train_val_split", lambda *a: seeds.append(a[2]) or real_split(*a))
    train.fit(tiny_config(epochs=1, limit_train=640, seed=7), tmp_path / "run", mnist_dir, progress=False)
    assert seeds == [0]  # runs with other seeds are chosen on the same validation images
    # Cards and checkpoints written before the split had its own seed read as the split they used (seed 0).
    old = {k: v for k, v in asdict(recipes.TrainConfig()).items() if k != "split_seed"}
    assert recipes.TrainConfig.from_dict(old).split_seed == 0


def test_a_record_with_settings_this_version_does_not_know_is_refused_by_name():
    newer = asdict(recipes.TrainConfig())
    newer["augment"]["square_reach"] = 0.5
    newer["corpus"]["fonts"] = 3
    newer["warmup"] = 3
    with pytest.raises(ValueError, match=r"does not know \(warmup, augment.square_reach, corpus.fonts\)"):
        recipes.TrainConfig.from_dict(newer)


def test_exporting_a_run_with_unknown_settings_names_the_checkpoint(tmp_path):
    from digitrecognizer import export

    config = asdict(tiny_config())
    config["augment"]["square_reach"] = 0.5
    checkpoint.save({"model": {}, "config": config, "history": [{"val_acc": 0.9}], "command": "train",
                     "train_seconds": 1.0, "epoch": 1}, tmp_path / "best.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"best.pt: the run records settings .*augment.square_reach"):
        export.read_source(tmp_path, "best.pt")


def test_extra_data_with_bad_labels_is_refused(tmp_path):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 28, 28), np.uint8), labels=np.array([3, 12]))
    with pytest.raises(ValueError, match="labels must be 0..9"):
        data.load_extra_data(bad)


def test_training_killed_mid_epoch_resumes_from_its_last_checkpoint_and_completes(mnist_dir, tmp_path,
                                                                                 wait_for_first_epoch):
    import os
    import signal

    out = tmp_path / "run"
    command = [sys.executable, "-m", "digitrecognizer.cli", "train", "--preset", "quick", "--limit-train", "3000",
               "--epochs", "3", "--out", str(out), "--data-dir", str(mnist_dir), "--threads", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_first_epoch(process, out, timeout_s=240)
    os.kill(process.pid, signal.SIGKILL)  # no chance to save: only the atomic per-epoch checkpoint remains
    process.wait()
    assert checkpoint.load(out / "last.pt")["epoch"] >= 1
    assert not list(out.glob("*.tmp")) or checkpoint.load(out / "last.pt")

    resumed = subprocess.run(command[:-1] + ["--resume", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records][-1] == 3
    assert checkpoint.load(out / "last.pt")["epoch"] == 3


@pytest.mark.parametrize("padding, side", [("same", 7), ("valid", 4)])
def test_both_paddings_build_a_ten_class_network(padding, side):
    from digitrecognizer.models import create_model

    net, config = create_model("ours", width=8, hidden=16, padding=padding)
    assert config["padding"] == padding
    assert net.classifier[1].in_features == 16 * side * side  # what the last feature map holds
    assert net.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_padding_is_refused():
    from digitrecognizer.models import create_model

    with pytest.raises(ValueError, match="'same' or 'valid'"):
        create_model("ours", padding="full")


def test_a_width_override_keeps_the_presets_other_model_settings():
    config = recipes.preset_config("compact", model_args={"width": 24})
    assert config.model_args == {"width": 24, "padding": "valid"}


def test_the_default_preset_is_the_recipe_of_the_shipped_model():
    # The shipped model must be reproducible by `digitrecognizer train --preset default`: its card records the
    # full configuration its run trained with.
    import json
    from dataclasses import asdict
    from pathlib import Path

    import digitrecognizer

    card = json.loads((Path(digitrecognizer.__file__).parent / "assets" / "card.json").read_text())
    recorded = recipes.TrainConfig.from_dict(card["training"]["config"])  # older cards lack newer fields
    recorded.keep_epochs = False  # the shipped run kept every epoch's weights: what it saved, not what it trained
    assert asdict(recorded) == asdict(recipes.preset_config("default"))


def test_a_new_schedule_length_is_trained_whole_unless_told_where_to_stop():
    assert recipes.preset_config("default").last_epoch == 36  # of its 45-epoch schedule
    assert recipes.preset_config("mnist").last_epoch == 36  # of its 45-epoch schedule
    assert recipes.preset_config("default", epochs=20).last_epoch == 20
    assert recipes.preset_config("default", epochs=20, stop_after=15).last_epoch == 15


def test_augmentation_overrides_change_only_the_settings_named():
    config = recipes.preset_config("default", augment={"square": 0.2, "square_labels": [1, 7]})
    assert (config.augment.square, config.augment.square_labels) == (0.2, [1, 7])
    assert config.augment.elastic_px == recipes.PRESETS["default"]["augment"]["elastic_px"]  # the preset's, kept
    assert recipes.preset_config("default").augment.square == 0.0  # the preset itself is untouched


@pytest.mark.parametrize("settings, message", [
    ({"squares": 0.2}, "unknown augmentation setting squares: choose from rotate_deg"),
    ({"square": "much"}, "square='much': give a share from 0 to 1"),
    ({"square": 1.5}, "give a share from 0 to 1"),
    ({"rotate_deg": -1}, "give a finite number, 0 or more"),
    ({"shear": float("inf")}, "give a finite number, 0 or more"),
    ({"square_labels": [1, 12]}, "give null or a list of digits"),
    ({"square_labels": [True]}, "give null or a list of digits"),
    ({"square_labels": []}, "give null or a list of digits"),
])
def test_a_bad_augmentation_override_says_what_is_wrong(settings, message):
    with pytest.raises(ValueError, match=message):
        recipes.preset_config("default", augment=settings)


def test_another_model_does_not_inherit_the_presets_model_settings():
    config = recipes.preset_config("default", model="seed", model_args={})
    assert config.model_args == {}
    models.create_model(config.model, **config.model_args)  # SeedConfig takes no width or padding


def test_scribbles_are_seeded_model_inputs():
    first, again = synth.scribble_inputs(30, seed=3), synth.scribble_inputs(30, seed=3)
    assert first.shape == (30, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, synth.scribble_inputs(30, seed=4))
    # As preprocessing leaves a drawing: full-strength ink, its longer side scaled to 20 px (and a soft rim).
    assert (first.reshape(30, -1).max(1) == 255).all()
    for image in first:
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22


def test_outlier_exposure_makes_the_model_unsure_of_scribbles_it_never_saw(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "SCRIBBLE_POOL", 300)
    plain = train.fit(tiny_config(), tmp_path / "plain", mnist_dir, progress=False)
    exposed = train.fit(tiny_config(outliers=0.5, outlier_weight=1.0), tmp_path / "exposed", mnist_dir, progress=False)
    unseen = synth.scribble_inputs(200, seed=99)  # not the training pool's seed

    def mean_confidence(run: train.Run, images: np.ndarray) -> float:
        return float(torch.softmax(models.predict_logits(run.eval_model(), images), 1).max(1).values.mean())

    # Two epochs of a thin network are unsure of everything (chance is 0.1); the scribbles still cut its
    # confidence on unseen ones by more than a fifth.
    assert mean_confidence(exposed, unseen) < 0.8 * mean_confidence(plain, unseen)
    assert exposed.history[-1]["val_acc"] > 0.5  # and it still learnt the digits (chance is 0.1)


def test_an_outlier_share_out_of_range_is_a_clear_cli_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "digitrecognizer.cli", "train", "--outliers", "-1", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--outliers" in result.stderr and "Traceback" not in result.stderr


class _FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_validation_reads_the_top_digit_and_counts_not_a_digit_apart():
    # Three digits labelled 3, 3, 5: the first is read right with "not a digit" on top, the second is right, the third
    # is read as 3. The product reads the ten digits and leaves refusing to its thresholds, and so does validation.
    logits = torch.full((3, 11), -5.0)
    logits[0, 3], logits[0, 10] = 1.0, 2.0
    logits[1, 3] = 1.0
    logits[2, 3] = 1.0
    split = data.MnistSplit(np.zeros((3, 28, 28), np.uint8), np.array([3, 3, 5]))
    _, accuracy, not_a_digit = train.validate(_FixedLogits(logits), split, distributed.Processes())
    assert accuracy == pytest.approx(2 / 3) and not_a_digit == pytest.approx(1 / 3)


def test_recomputed_batch_norm_changes_what_is_validated_and_saved_not_what_is_trained(mnist_dir, tmp_path):
    averaged = train.fit(tiny_config(bn_images=0), tmp_path / "averaged", mnist_dir, progress=False)
    recomputed = train.fit(tiny_config(bn_images=500), tmp_path / "recomputed", mnist_dir, progress=False)

    assert [r["train_loss"] for r in averaged.history] == [r["train_loss"] for r in recomputed.history]
    for name, tensor in averaged.ema.module.state_dict().items():  # the average goes on as it would without
        assert torch.equal(tensor, recomputed.ema.module.state_dict()[name]), name

    inputs, _ = train.load_training_set(tiny_config(bn_images=500), mnist_dir, distributed.Processes())
    assert len(inputs.bn_sample) == 500
    expected = copy.deepcopy(averaged.ema.module)
    models.recompute_batch_norm(expected, inputs.bn_sample)
    saved = checkpoint.load(tmp_path / "recomputed" / "last.pt")["ema"]
    assert not torch.allclose(saved["features.0.1.running_mean"],
                              averaged.ema.module.state_dict()["features.0.1.running_mean"])
    for name, tensor in expected.state_dict().items():
        assert torch.allclose(tensor.float(), saved[name].float()), name


def test_the_square_stretch_can_be_kept_to_some_labels():
    d = augment.draw_distortions(6, augment.AugmentConfig(square=1.0), torch.Generator().manual_seed(0))
    labels = torch.tensor([0, NOT_A_DIGIT, 1, NOT_A_DIGIT, 7, 1])
    train.stretch_only(d, labels, [1, 7])
    assert d.square.tolist()[:2] == [0, 0] and d.square[3] == 0 and torch.all(d.square[[2, 4, 5]] >= 0.5)
