"""The networks: built by name from the registry, and fed as training and export feed them."""

import numpy as np
import pytest
import torch

from digitrecognizer import constants, models


@pytest.mark.parametrize("name, args", [("ours", {"width": 8, "hidden": 16}), ("seed", {})])
def test_each_registered_network_is_built_by_name_with_its_full_config(name, args):
    net, config = models.create_model(name, **args)
    assert {**config, **args} == config  # the overrides, and every other setting's default
    assert net.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert models.embed(net, torch.rand(2, 1, 28, 28)).ndim == 2  # what the novelty score is measured on


def test_the_eleven_output_network_has_a_not_a_digit_output():
    net, config = models.create_model("ours", width=8, hidden=16, classes=11)
    assert config["classes"] == 11 and net.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 11)


def test_the_second_stage_is_twice_as_wide_as_the_first_unless_given_its_own_width():
    x = torch.rand(2, 1, 28, 28)
    for stage2_width, channels in ((None, 16), (12, 12)):
        net, _ = models.create_model("ours", width=8, stage2_width=stage2_width, hidden=16, padding="valid")
        assert models.embed(net.eval(), x).shape == (2, channels * 4 * 4)  # valid padding leaves 4x4 maps
        assert net(x).shape == (2, 10)


def test_an_unknown_network_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of ours, seed"):
        models.create_model("resnet")


def test_images_are_scaled_to_unit_range_and_standardised_with_mnists_statistics():
    images = np.array([[[0, 255]]], np.uint8).repeat(28, 1).repeat(14, 2)
    x = models.to_unit_tensor(images)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32 and x.min() == 0 and x.max() == 1
    expected = (x - constants.MNIST_MEAN) / constants.MNIST_STD
    assert torch.equal(models.normalize(x), expected)


def test_predict_logits_reads_in_batches_in_eval_mode():
    net, _ = models.create_model("ours", width=8, hidden=16)
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    whole = models.predict_logits(net, images)
    assert not net.training and whole.shape == (7, 10)
    assert torch.allclose(models.predict_logits(net, images, batch_size=3), whole, atol=1e-5)
    assert models.predict_logits(net, images[:0]).shape == (0, 10)
