"""The command line: every sub-command explains itself; predict prints a table or JSON and reports bad files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from digitrecognizer import synth
from digitrecognizer.cli import build_parser, main


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "digitrecognizer.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["train", "export", "evaluate", "predict", "serve", "data", "feedback"])
def test_every_sub_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 150


def test_sub_commands_are_the_documented_ones():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"train", "export", "evaluate", "predict", "serve", "data", "feedback"} <= set(choices)


@pytest.fixture()
def images(tmp_path, mnist_test):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(synth.render_digit(mnist_test.images[i], rng, "black_on_white"))
        paths.append(path)
    number = tmp_path / "number.png"
    number.write_bytes(synth.render_number(list(mnist_test.images[:3]), list(mnist_test.labels[:3]), rng).png)
    return paths, number


def test_predict_prints_a_table_of_file_digit_and_confidence(images, mnist_test, model_dir, capsys):
    paths, _ = images
    assert main(["predict", *map(str, paths), "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "digit", "confidence"]
    for line, label in zip(out[2:], mnist_test.labels[:3]):
        assert line.split()[1] == str(label) and line.endswith("%")


def test_predict_json_and_number_mode(images, mnist_test, model_dir, capsys):
    _, number = images
    assert main(["predict", str(number), "--number", "--json", "--model", str(model_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "".join(map(str, mnist_test.labels[:3]))
    assert len(result["digits"]) == 3 and all(len(d["box"]) == 4 for d in result["digits"])


def test_missing_and_unreadable_files_are_reported_and_the_rest_still_processed(images, tmp_path, model_dir):
    paths, _ = images
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG but not really")
    result = run_cli("predict", paths[0], tmp_path / "missing.png", garbage, "--model", model_dir)
    assert result.returncode == 1
    assert "missing.png: no such file" in result.stderr
    assert "garbage.png" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.count("error") == 2 and "digit0.png" in result.stdout


def test_save_input_writes_the_28x28_images_the_model_saw(images, tmp_path, model_dir):
    from PIL import Image

    paths, _ = images
    out = tmp_path / "seen"
    assert main(["predict", *map(str, paths), "--save-input", str(out), "--model", str(model_dir)]) == 0
    saved = sorted(out.iterdir())
    assert len(saved) == 3 and all(Image.open(p).size == (28, 28) for p in saved)


def test_a_model_folder_without_a_card_is_a_clear_error(tmp_path, images):
    paths, _ = images
    result = run_cli("predict", paths[0], "--model", tmp_path)
    assert result.returncode == 2
    assert "no model card" in result.stderr and "Traceback" not in result.stderr


def test_train_with_bad_data_dir_is_a_clear_error(tmp_path):
    result = run_cli("train", "--preset", "quick", "--data-dir", tmp_path, "--out", tmp_path / "run")
    assert result.returncode == 2
    assert "train-images-idx3-ubyte(.gz) not found" in result.stderr and "Traceback" not in result.stderr


def test_feedback_export_writes_what_the_store_holds(tmp_path, capsys):
    from digitrecognizer.store import FeedbackStore

    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        for correct in (3, 7):
            pixels = np.full((28, 28), correct, np.uint8)
            store.add(pixels, pixels, predicted=1, correct=correct, model_version="t")
    assert main(["feedback", "export", "--db", str(db), "--out", str(tmp_path / "mine.npz")]) == 0
    with np.load(tmp_path / "mine.npz") as npz:
        assert npz["labels"].tolist() == [3, 7] and npz["images"].shape == (2, 28, 28)
    assert main(["feedback", "list", "--db", str(db)]) == 0
    assert "2 corrections" in capsys.readouterr().out


def test_train_too_short_for_its_schedule_is_a_clear_error(mnist_dir, tmp_path, capsys):
    code = main(["train", "--preset", "quick", "--limit-train", "300", "--batch-size", "64", "--epochs", "1",
                 "--data-dir", str(mnist_dir), "--out", str(tmp_path / "run")])
    assert code != 0
    assert "one-cycle schedule needs at least" in capsys.readouterr().err


def test_augmentation_settings_are_read_as_json_values():
    from digitrecognizer.recipes import parse_augment, preset_config

    assert parse_augment(["square=0.2", "square_labels=[1,7]", "crisp=0"]) == {
        "square": 0.2, "square_labels": [1, 7], "crisp": 0}
    assert preset_config("default", augment=None).augment == preset_config("default").augment  # no flag: the preset's


@pytest.mark.parametrize("setting, message", [
    ("square", "give NAME=VALUE"),
    ("square=lots", "give NAME=VALUE"),
    ("=0.2", "give NAME=VALUE"),
    ("wobble=0.5", "unknown augmentation setting wobble"),
])
def test_train_with_a_bad_augmentation_setting_is_a_clear_error(setting, tmp_path, capsys, message):
    code = main(["train", "--preset", "quick", "--augment", setting, "--out", str(tmp_path / "run")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_predict_with_the_int8_graph(images, mnist_test, capsys):
    paths, _ = images
    assert main(["predict", *map(str, paths), "--int8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["digit"] for r in rows] == [int(label) for label in mnist_test.labels[:3]]


def test_int8_and_model_together_are_a_clear_error(images, model_dir):
    paths, _ = images
    result = run_cli("predict", paths[0], "--int8", "--model", model_dir)
    assert result.returncode == 2
    assert "--int8 picks the shipped int8 graph" in result.stderr and "Traceback" not in result.stderr


def test_serve_bound_beyond_loopback_needs_the_names_it_answers_to(capsys, monkeypatch):
    monkeypatch.delenv("DIGITRECOGNIZER_ALLOWED_HOSTS", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--allowed-hosts" in capsys.readouterr().err


def test_serve_refuses_a_malformed_feedback_quota(capsys):
    assert main(["serve", "--feedback-quota", "lots"]) == 2
    assert "ROWS,SIZE" in capsys.readouterr().err
