"""open_clip zero-shot models (methods/models/clip.py): a tiny random-init CLIP end to end on
digits_c, its head against a hand computation from open_clip's towers, its key entries, and
its refusals. No weights are downloaded: model.weights=null builds a random model."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from omegaconf import OmegaConf

import harness.run as run_mod
from harness.config import build_dataset
from harness.keys import make_keys, run_payload

from .conftest import TINY, compose_config, run_rows

# A CLIP small enough for a unit test: one layer per tower, 32×32 images, 16 text tokens.
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_NAME = "shiftbench-tiny-clip"


def clip_overrides(tmp_path, *extra: str) -> list[str]:
    config = json.dumps(TINY_CLIP).replace('"', "")
    return [
        *TINY,
        "dataset=digits_c",
        "dataset.families=[weather]",
        "dataset.severities=[2]",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        "model=open_clip",
        f"model.name={TINY_NAME}",
        f"model.config={config}",
        "model.prompts=simple",
        "trainer.epochs=0",
        *extra,
    ]


def test_a_zero_shot_run_with_a_tiny_random_clip(tmp_path):
    summary = run_mod.run(compose_config(clip_overrides(tmp_path, "eval=clip")))
    rd = tmp_path / "runs" / summary["run_id"]
    # the head is logit_scale × the normalised mean over templates of the normalised text
    # embeddings of each class name, b = 0: computed here by hand from the same seeded model
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_NAME, pretrained=None, pretrained_text=False).eval()
    tokenizer = open_clip.get_tokenizer(TINY_NAME)
    classes = [str(d) for d in range(10)]
    with torch.no_grad():
        rows = []
        for name in classes:
            texts = [t(name) for t in open_clip.SIMPLE_IMAGENET_TEMPLATES]
            emb = clip.encode_text(tokenizer(texts), normalize=True).mean(0)
            rows.append(emb / emb.norm())
        expected = clip.logit_scale.exp() * torch.stack(rows)
    with np.load(rd / "outputs" / "head.npz") as z:
        np.testing.assert_allclose(z["weight"], expected.numpy(), rtol=1e-4, atol=1e-5)
        assert not z["bias"].any()
    posthoc = next((rd / "posthoc").iterdir())
    notes = json.loads((posthoc / "notes.json").read_text())
    assert notes["head"] == "head(features) reproduces the cached logits"
    assert set(notes["skipped_scorers"]) == {"react", "ash", "scale"}
    assert all("non-negative" in v for v in notes["skipped_scorers"].values())
    table = run_rows(rd)
    assert {"mcm", "knn", "energy", "vim"} <= set(table["scorer"])
    assert not {"react", "ash", "scale"} & set(table["scorer"])
    out = np.load(next((rd / "outputs").glob("id_test-*.npz")))
    np.testing.assert_allclose(np.linalg.norm(out["features"], axis=1), 1.0, rtol=1e-4)
    info = json.loads((rd / "run_info.json").read_text())
    assert info["model"] == TINY_NAME
    transform = json.loads((rd / "transform.json").read_text())
    assert transform["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert transform["input_size"] == [3, 32, 32]


def keys_of(tmp_path, *extra: str):
    c = OmegaConf.to_container(compose_config(clip_overrides(tmp_path, *extra)), resolve=True)
    run_mod.compose(c)
    return make_keys(run_payload(c, build_dataset(c)))


def test_the_key_holds_weights_prompts_and_class_names_and_timm_keys_have_none(tmp_path):
    vit = ["model.name=ViT-B-32", "model.config=null"]
    a = keys_of(tmp_path, *vit, "model.weights=openai")
    b = keys_of(tmp_path, *vit, "model.weights=laion2b_s34b_b79k")
    c = keys_of(tmp_path, *vit, "model.weights=openai", "model.prompts=openai")
    d = keys_of(tmp_path, *vit, "model.weights=openai", "model.class_names=[a,b,c,d,e,f,g,h,i,j]")
    e = keys_of(tmp_path, *vit, "model.weights=openai", "model.prompts=['a photo of {}.']")
    assert len({k.run_id for k in (a, b, c, d, e)}) == 5
    assert a.payload["model"]["weights"] == "openai"
    assert a.payload["model"]["_target_"] == "methods.models.clip.OpenCLIP"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not really weights")
    f = keys_of(tmp_path, f"model.weights={weights}")
    assert f.payload["model"]["weights"] == {
        "sha256": __import__("hashlib").sha256(b"not really weights").hexdigest()
    }
    timm = OmegaConf.to_container(compose_config(["trainer.epochs=0"]), resolve=True)
    assert "weights" not in make_keys(run_payload(timm, build_dataset(timm))).payload["model"]


@pytest.mark.parametrize(
    "override,message",
    [
        (["model.name=ViT-B-33", "model.config=null"], "not an open_clip model"),
        (["model.name=ViT-B-32", "model.config=null", "model.weights=nope"], "pretrained tags"),
        (["model.prompts=fancy"], "model.prompts must be one of"),
        (["model.prompts=[a photo]"], "model.prompts must be one of"),
        (["model.class_names=oops"], "model.class_names must be null or a list"),
        (["+model.label_map=[0]"], "model.label_map is not used"),
        (["+model.extra=1"], "unknown entries"),
        (["model.weights=/nonexistent/w.pt"], "no such file"),
    ],
)
def test_bad_open_clip_configs_are_refused_naming_the_key(tmp_path, override, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        keys_of(tmp_path, *override)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_class_names_must_match_the_benchmark(tmp_path):
    with pytest.raises(ValueError, match="model.class_names has 2 names.*10 classes"):
        run_mod.run(compose_config(clip_overrides(tmp_path, "model.class_names=[a,b]")))


@pytest.mark.slow
def test_a_zero_shot_vit_b_32_with_random_weights_on_digits_c(tmp_path):
    """The issue's own command: ViT-B-32 at 224×224, random weights, offline."""
    overrides = [o for o in clip_overrides(tmp_path) if not o.startswith("model.")]
    summary = run_mod.run(
        compose_config(
            [
                *overrides,
                "model=open_clip",
                "model.name=ViT-B-32",
                "model.weights=null",
                "model.prompts=simple",
                "dataset.limit=8",
                "eval=clip",
            ]
        )
    )
    assert summary["status"] == "finished"
    table = run_rows(tmp_path / "runs" / summary["run_id"])
    assert "mcm" in set(table["scorer"])
