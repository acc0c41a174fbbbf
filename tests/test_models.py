"""timm model creation, checkpoints, label maps and the logits/features API."""

from __future__ import annotations

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from harness.data import Benchmark, array_split
from harness.models import create_model, forward_outputs, label_index, load_state_dict, map_logits


def bench(num_classes=4, in_chans=3):
    import numpy as np

    meta = pd.DataFrame({"label": [0, 1]})
    split = array_split("s", "train", np.zeros((2, 8, 8, in_chans), np.uint8), meta)
    return Benchmark("toy", [f"c{i}" for i in range(num_classes)], {"s": split}, in_chans=in_chans)


def test_training_gets_a_new_head_from_the_benchmark():
    model = create_model({"name": "test_resnet"}, bench(5, in_chans=1), train=True)
    logits, feats = forward_outputs(model, torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 5)
    assert feats.shape == (2, model.num_features)
    # logits are what timm's own forward gives
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(model(x), forward_outputs(model, x)[0])


def test_eval_only_keeps_the_checkpoint_head_and_maps_labels(tmp_path):
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    cfg = {"name": "test_resnet", "checkpoint": str(path), "kwargs": {"num_classes": 10}}
    model = create_model(cfg, bench(4), train=False)
    assert torch.equal(model.state_dict()["fc.weight"], source.state_dict()["fc.weight"])
    with pytest.raises(ValueError, match="10 outputs but benchmark 'toy' has 4 classes"):
        label_index(cfg, bench(4), model)
    index = label_index({**cfg, "label_map": [7, 0, 3, 9]}, bench(4), model)
    logits = torch.arange(20.0).view(2, 10)
    assert map_logits(logits, index).tolist() == [[7, 0, 3, 9], [17, 10, 13, 19]]
    with pytest.raises(ValueError, match="outside the head"):
        label_index({**cfg, "label_map": [0, 1, 2, 10]}, bench(4), model)
    with pytest.raises(ValueError, match="has 3 entries"):
        label_index({**cfg, "label_map": [0, 1, 2]}, bench(4), model)


def test_safetensors_checkpoint(tmp_path):
    source = timm.create_model("test_resnet", num_classes=4)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    state = load_state_dict(tmp_path / "w.safetensors")
    assert torch.equal(state["fc.bias"], source.state_dict()["fc.bias"])


class NotWeights:
    pass


def test_checkpoint_that_is_not_a_state_dict_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotWeights()}, path)
    with pytest.raises(ValueError, match="not a loadable weights file"):
        load_state_dict(path)


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet", num_classes=3).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit test_resnet"):
        create_model(
            {"name": "test_resnet", "checkpoint": str(path), "kwargs": {"num_classes": 4}},
            bench(4),
            train=False,
        )


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match="not a timm model.*resnet18"):
        create_model({"name": "resnet18x"}, bench(), train=True)


def test_fine_tuning_from_a_checkpoint_with_another_head(tmp_path):
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = create_model({"name": "test_resnet", "checkpoint": str(path)}, bench(4), train=True)
    assert model.num_classes == 4  # a new head for the benchmark
    assert torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
