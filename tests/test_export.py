"""Export: the ONNX graph agrees with PyTorch, the card vouches for the files, and serving needs no torch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from digitrecognizer import card as card_module
from digitrecognizer import export, graph, recipes, train
from digitrecognizer.recognizer import Recognizer


@pytest.fixture(scope="module")
def exported(mnist_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    config = recipes.preset_config("quick", limit_train=4000, epochs=2, threads=2)
    train.fit(config, folder / "run", mnist_dir, progress=False, command="digitrecognizer train --preset quick")
    card = export.export(folder / "run", folder / "export", mnist_dir)
    return folder / "export", card


def test_onnx_matches_pytorch_within_1e_5_on_1000_test_images(exported):
    _, card = exported
    assert card.metrics.onnx_torch_max_prob_diff < 1e-5


def test_the_novelty_precision_matrix_is_stored_in_float16(exported):
    import onnx

    folder, _ = exported
    graph = onnx.load(str(folder / card_module.ONNX_NAME)).graph
    square = [t for t in graph.initializer if len(t.dims) == 2 and t.dims[0] == t.dims[1] and t.dims[0] > 100]
    assert len(square) == 1 and square[0].data_type == onnx.TensorProto.FLOAT16  # half the bytes of float32


def test_card_records_checksums_temperature_threshold_and_provenance(exported):
    folder, card = exported
    saved = json.loads((folder / "card.json").read_text())
    assert saved["onnx_sha256"] == card_module.sha256_file(folder / "model.onnx")
    assert saved["weights_sha256"] == card_module.sha256_file(folder / "model.pt")
    assert 0.05 < saved["temperature"] < 20
    assert 0 < saved["not_digit"]["min_confidence"] < 1
    assert saved["training"]["command"] == "digitrecognizer train --preset quick"
    assert set(saved["training"]["data_sha256"]) >= {"t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    assert saved["metrics"]["test"]["images"] == 10_000


def test_recognizer_reproduces_the_cards_test_accuracy(exported, mnist_test):
    folder, card = exported
    probs = Recognizer(folder).predict_mnist(mnist_test.images)
    assert probs.shape == (10_000, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == mnist_test.labels).mean() == pytest.approx(card.metrics.test.accuracy)


def test_model_file_that_does_not_match_its_checksum_is_refused(exported, tmp_path):
    folder, _ = exported
    for name in ("card.json", "model.onnx"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with open(tmp_path / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(card_module.ModelError, match="model.onnx: sha256 .* does not match"):
        Recognizer(tmp_path)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20_000, 10))
    z = logits / 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in p])
    assert export.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_the_exported_model_predicts_in_a_python_without_torch(exported, mnist_dir):
    folder, _ = exported
    # A meta-path hook makes `import torch` fail, as on a machine where only `pip install .` ran.
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from digitrecognizer import Recognizer, data, synth
        import digitrecognizer.web.app, digitrecognizer.cli, digitrecognizer.evaluate, digitrecognizer.store
        rec = Recognizer({str(folder)!r})
        test = data.load_split({str(mnist_dir)!r}, "test")
        print((rec.predict_mnist(test.images[:500]).argmax(1) == test.labels[:500]).mean())
        png = synth.render_digit(test.images[0], np.random.default_rng(0), "black_on_white")
        print(rec.predict(png).digit, int(test.labels[0]))
        assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    accuracy, line = result.stdout.splitlines()
    assert float(accuracy) > 0.8
    assert line.split()[0] == line.split()[1]


@pytest.fixture(scope="module")
def exported_int8(exported, mnist_dir, monkeypatch_module):
    folder = exported[0].parent
    # Two epochs on 4,000 images leave the network far from converged, and quantisation moves more of its uncertain
    # answers than those of a trained one; the rule itself (0.05 points) is for real runs.
    monkeypatch_module.setattr(graph, "INT8_MAX_ACCURACY_LOSS", 0.01)
    card = export.export(folder / "run", folder / "int8", mnist_dir, precision="int8")
    return folder / "int8", card


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_int8_graph_quantises_the_network_and_keeps_the_novelty_in_float(exported_int8):
    import onnx

    folder, card = exported_int8
    graph = onnx.load(str(folder / card_module.ONNX_NAME)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QLinearConv") == 6 and "Conv" not in ops  # every convolution, ReLU fused
    assert "QGemm" in ops and ops.count("MatMul") == 2  # the classifier in int8; the novelty's products in float
    square = [t for t in graph.initializer if len(t.dims) == 2 and t.dims[0] == t.dims[1] and t.dims[0] > 100]
    assert len(square) == 1 and square[0].data_type == onnx.TensorProto.FLOAT16
    q = card.quantization
    assert q.precision == "int8" and q.calibration_images > 1000
    assert q.validation_agreement_with_float32 > 0.99
    assert q.validation_accuracy >= q.validation_accuracy_float32 - 0.01


def test_the_int8_card_is_measured_on_the_int8_graph(exported_int8, exported, mnist_test):
    folder, card = exported_int8
    rec = Recognizer(folder)
    assert rec.card.quantization.precision == "int8"
    accuracy = (rec.predict_mnist(mnist_test.images).argmax(1) == mnist_test.labels).mean()
    assert accuracy == pytest.approx(card.metrics.test.accuracy)
    float_card = exported[1]
    assert float_card.quantization.precision == "float32" and float_card.quantization.calibration_images is None
    assert card.temperature != float_card.temperature  # fitted again, on the int8 graph's own logits
    assert card.not_digit.min_confidence > 0 and card.not_digit.max_novelty > 0


def test_an_int8_graph_that_reads_worse_than_float32_is_refused(exported, mnist_dir, tmp_path, monkeypatch):
    folder = exported[0].parent
    monkeypatch.setattr(graph, "INT8_MAX_ACCURACY_LOSS", -1.0)  # no graph can be a whole point better
    out = tmp_path / "model"
    with pytest.raises(RuntimeError, match="export with --precision float32"):
        export.export(folder / "run", out, mnist_dir, precision="int8")
    assert not out.exists()  # nothing half-written


def test_an_unknown_precision_is_a_clear_error(exported, mnist_dir, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of float32, int8"):
        export.export(exported[0].parent / "run", tmp_path / "model", mnist_dir, precision="int4")


def test_a_model_folder_can_be_exported_again_without_its_run(exported, mnist_dir, tmp_path):
    folder, card = exported
    again = export.export(folder, tmp_path / "again", mnist_dir)
    assert again.training == card.training  # the card's record of the run stands in for its checkpoints
    assert again.weights_sha256 == card.weights_sha256 and again.onnx_sha256 == card.onnx_sha256


def test_a_model_folder_whose_weights_do_not_match_its_card_is_refused(exported, mnist_dir, tmp_path):
    folder, _ = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("card.json", "model.onnx", "model.pt"):
        (copy / name).write_bytes((folder / name).read_bytes())
    with open(copy / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(card_module.ModelError, match="not the weights its card describes"):
        export.export(copy, tmp_path / "out", mnist_dir)
