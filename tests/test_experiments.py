"""Experiment presets (conf/experiment/, `+experiment=NAME`): each composes to the values of
docs/experiments.md's table, validates, and trains on fixtures; `harness.verify` composes them;
the training-at-scale options and `val/<metric>` selection work on the CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness import run as run_mod

from .conftest import CACHE, CONF, ROOT, TINY, compose_config, run_cli

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SMALL = [
    "model.pretrained=false",
    "trainer.batch_size=8",
    "trainer.max_steps=2",
    "dataset.limit=16",
]
FAST = [f"cache_dir={CACHE}", "trainer.eval_batch_size=16", "trainer.progress=false", "threads=1"]


def _table() -> dict[str, dict[str, str]]:
    lines = (ROOT / "docs" / "experiments.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| preset |"))
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["preset"].strip("`")] = cells
    return rows


def _config(preset: str, extra: list[str] = ()) -> dict:
    return OmegaConf.to_container(compose_config([f"+experiment={preset}", *extra]), resolve=True)


def test_every_preset_has_a_row_and_every_row_a_preset():
    assert len(PRESETS) >= 8
    assert sorted(_table()) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_to_its_row_in_docs(preset):
    row, c = _table()[preset], _config(preset)
    t, m = c["trainer"], c["model"]
    dataset = row["dataset"]
    if dataset != "any (yours)":  # the DomainBed preset leaves the dataset to the user
        assert c["dataset"]["name"] == dataset
    model = m["name"] + (f" (stem={m['stem']})" if m.get("stem") else "")
    model += " (freeze_bn)" if m.get("freeze_bn") else ""
    assert model == row["model"]
    assert str(m["pretrained"]).lower() == row["pretrained"]
    assert t["optimizer"]["_target_"].rsplit(".", 1)[1] == row["optimizer"]
    assert float(t["optimizer"]["lr"]) == float(row["lr"])
    assert float(t["optimizer"]["weight_decay"]) == float(row["weight decay"])
    assert t["batch_size"] == int(row["batch"])
    steps = re.fullmatch(r"(\d+) steps", row["epochs"])
    assert (t["max_steps"] if steps else t["epochs"]) == int(row["epochs"].split()[0])
    schedule = t["schedule"]
    if isinstance(schedule, dict):
        schedule = f"step γ {schedule['gamma']} / epoch" if schedule["step_size"] == 1 else ""
    assert schedule == row["schedule"]
    augment = c["augment"]["name"]
    if c["augment"].get("crop") == "pad":
        augment += f" (pad {c['augment']['padding']})"
    assert augment == row["augment"]
    assert c["selection_rule"] == row["selection"]
    assert c["method"]["name"] == "erm"
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_validates_and_pretrained_weights_are_named_when_missing(preset, tmp_path):
    c = _config(preset, [f"results_dir={tmp_path}"])
    if c["model"]["pretrained"]:
        with pytest.raises(FileNotFoundError, match=re.escape(c["model"]["name"])):
            run_mod.compose(c)  # offline (HF_HUB_OFFLINE=1) and no weights in the cache
    run_mod.compose(_config(preset, [f"results_dir={tmp_path}", "model.pretrained=false"]))


def _fixture_data(preset: str, root: Path) -> list[str]:
    """Writes the preset's data as a tiny fixture in its real layout; overrides to use it."""
    c = _config(preset)
    name = c["dataset"]["name"]
    if name in ("cifar10", "cifar100"):
        from shiftbench_datasets.cifar import write_fixture

        write_fixture(root, variant=name, per_batch=8, test_size=10)
        return [f"data_root={root}", "dataset.val_size=8"]
    if c["dataset"]["_target_"].endswith("wilds.Wilds"):
        from shiftbench_datasets.wilds_fixtures import write_fixture

        write_fixture(root, name)
        return [f"data_root={root}"]
    from shiftbench_datasets.folders import write_class_folders

    for split in ("train", "val", "test"):  # the DomainBed preset: your own folders
        write_class_folders(root / "folders" / split, ["a", "b"], per_class=4)
    return [
        f"data_root={root}",
        "dataset=folders",
        "dataset.class_map=[a,b]",
        "dataset.image_size=32",
    ]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_on_fixtures(preset, tmp_path):
    """The preset's optimiser, schedule, augmentation and selection rule on its own data in
    the real layout, with a tiny timm model so that it stays fast (the full models: slow)."""
    data = _fixture_data(preset, tmp_path / "data")
    small = [*SMALL, "model.name=test_resnet"]
    if _config(preset)["model"].get("stem"):
        small.append("model.name=resnet18")  # the stem needs a timm ResNet's conv1
    summary = run_mod.run(
        compose_config(
            [f"+experiment={preset}", *data, *small, *FAST, "eval=minimal",
             f"results_dir={tmp_path / 'results'}"]
        )
    )  # fmt: skip
    assert summary["status"] == "finished"
    epochs = pd.read_parquet(Path(summary["run_dir"]) / "epochs.parquet")
    rule = _config(preset)["selection_rule"]
    if rule.startswith("val/"):  # the metric the rule reads was recorded per epoch
        assert rule.removeprefix("val/") in set(epochs.loc[epochs["split_role"] == "val", "metric"])


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_its_own_model_on_fixtures(preset, tmp_path):
    data = _fixture_data(preset, tmp_path / "data")
    summary = run_mod.run(
        compose_config([f"+experiment={preset}", *data, *SMALL, *FAST, "eval=minimal",
                        f"results_dir={tmp_path / 'results'}"])
    )  # fmt: skip
    assert summary["status"] == "finished"


def test_verify_composes_a_preset_and_names_what_is_missing(tmp_path):
    args = ["+experiment=wilds_erm_waterbirds", f"data_root={tmp_path / 'none'}"]
    out = run_cli(args, cwd=tmp_path, module="harness.verify", check=False)
    assert out.returncode == 1
    assert "waterbirds" in out.stdout and "resnet50.tv_in1k" in out.stdout
    assert "HF_HOME" in out.stdout


def test_training_at_scale_options_run_on_the_cpu_and_enter_the_key(tmp_path):
    base = [*TINY, f"results_dir={tmp_path}", "eval=minimal", "trainer.max_steps=4"]
    scaled = [
        "trainer.precision=bf16",
        "trainer.accumulate_steps=2",
        "trainer.channels_last=true",
        "trainer.schedule={name: step, gamma: 0.5, step_size: 1}",
    ]
    summary = run_mod.run(compose_config([*base, *scaled]))
    key = json.loads((Path(summary["run_dir"]) / "key.json").read_text())["payload"]["trainer"]
    assert key["precision"] == "bf16" and key["accumulate_steps"] == 2 and key["channels_last"]
    plain = json.loads(
        (Path(run_mod.run(compose_config(base))["run_dir"]) / "key.json").read_text()
    )["payload"]["trainer"]
    assert not {"precision", "accumulate_steps", "channels_last"} & set(plain)
    with pytest.raises(ValueError, match="trainer.accumulate_steps must be a positive integer"):
        run_mod.compose(
            OmegaConf.to_container(compose_config([*base, "trainer.accumulate_steps=0"]))
        )
    with pytest.raises(ValueError, match="trainer.schedule must be"):
        run_mod.compose(
            OmegaConf.to_container(compose_config([*base, "trainer.schedule={name: step}"]))
        )


def test_accumulated_gradients_equal_one_large_batch():
    """Two half-batches accumulated give the step of the whole batch (mean losses)."""
    import timm
    import torch

    from methods.erm import ERM

    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    results = []
    for k in (1, 2):
        torch.manual_seed(1)
        method = ERM(timm.create_model("test_resnet", num_classes=3), num_classes=3)
        method.eval()  # BatchNorm statistics of a half-batch would differ
        method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.1))
        method.accumulate_steps = k
        for part in torch.arange(8).chunk(k):
            method.update({"x": x[part], "y": y[part]})
        results.append(torch.cat([p.detach().flatten() for p in method.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)
    assert method._pending == 0


def test_val_metric_selection_picks_the_best_epoch_and_names_a_missing_metric(tmp_path):
    over = [*TINY, f"results_dir={tmp_path}", "eval=minimal", "dataset=coloured_digits",
            "trainer.epochs=3", "trainer.max_steps=null", "dataset.limit=16"]  # fmt: skip
    summary = run_mod.run(compose_config([*over, "selection_rule=val/worst_group_accuracy"]))
    rd = Path(summary["run_dir"])
    epochs = pd.read_parquet(rd / "epochs.parquet")
    wga = epochs[(epochs["split_role"] == "val") & (epochs["metric"] == "worst_group_accuracy")]
    best = int(wga.loc[wga["value"].idxmax(), "epoch"])  # idxmax: the first of ties
    assert json.loads((rd / "run_info.json").read_text())["selected_epoch"] == best
    with pytest.raises(ValueError, match=r"no metric 'acc_wg'.*worst_group_accuracy"):
        run_mod.run(compose_config([*over, "selection_rule=val/acc_wg", "seed=1"]))
    with pytest.raises(ValueError, match="selection_rule must be one of"):
        run_mod.compose(OmegaConf.to_container(compose_config([*over, "selection_rule=best"])))
