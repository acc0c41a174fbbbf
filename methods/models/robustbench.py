"""RobustBench's model zoo without the robustbench package (conf/model/robustbench.yaml,
docs/models.md).

    python -m harness.run model=robustbench model.name=Standard model.threat_model=corruptions \
        model.dataset=cifar10 dataset=cifar10_c trainer.epochs=0

The robustbench package pins an old timm and pulls gdown and autoattack, so it cannot enter
the lock. Its checkpoints are read from RobustBench's own local cache layout,
`<model_dir>/<dataset>/<threat_model>/<name>.pt` (robustbench.utils.load_model; threat model
corruptions_3d shares the corruptions folder), with its checkpoint layouts: a dict holding
'state_dict' (or 'model_state_dict', 'model') or the state dict itself, keys prefixed by
'module.' (DataParallel) or 'model.'.

Architectures: the entries of RobustBench's zoo that are its plain WideResNet (TRADES' code:
pre-activation basic blocks, no input normalisation, inputs in [0, 1]) are supported, the
table SUPPORTED below with the published Google Drive ids. WideResNet-28-10 and -34-10 for
32×32 CIFAR inputs are defined here: timm and torchvision only have the ImageNet bottleneck
wide_resnet50_2 / wide_resnet101_2 (another block, stem and depth), so no library model
loads these state dicts. Parameter names follow RobustBench's wide_resnet.py exactly, so its
checkpoints load strictly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import Benchmark

DATASETS = {"cifar10": 10, "cifar100": 100}
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")
# (dataset, threat model folder, name) -> (WideResNet kwargs, Google Drive id), from
# robustbench/model_zoo/cifar10.py and cifar100.py (RobustBench commit 78fcc9e)
SUPPORTED: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {
    ("cifar10", "Linf", "Standard"): ({"depth": 28}, "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC"),
    ("cifar10", "L2", "Standard"): ({"depth": 28}, "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC"),
    ("cifar10", "corruptions", "Standard"): ({"depth": 28}, "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC"),
    ("cifar10", "corruptions", "Addepalli2021Towards_WRN34"): (
        {"depth": 34, "sub_block1": True},
        "1-3vgjTNfSq7LSMKuayEQ-jLflAP196dB",
    ),
    ("cifar10", "corruptions", "Addepalli2022Efficient_WRN_34_10"): (
        {"depth": 34},
        "1--dVDtZhAk4D2zMtTDwIGnImuCGxTcBA",
    ),
    ("cifar100", "corruptions", "Addepalli2021Towards_WRN34"): (
        {"depth": 34, "sub_block1": True},
        "1-9GAld_105-jWBLXL73btmfOCwAqvz7Y",
    ),
    ("cifar100", "corruptions", "Addepalli2022Efficient_WRN_34_10"): (
        {"depth": 34},
        "1-3c-iniqNfiwGoGPHC3nSostnG6J9fDt",
    ),
}


class BasicBlock(nn.Module):
    """Pre-activation basic block (RobustBench's / TRADES' names: bn1, conv1, ...)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal = in_planes == out_planes
        self.convShortcut = (
            None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # with unequal widths the activated input feeds both the shortcut and the branch
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return (x if self.equal else self.convShortcut(act)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(n)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k for 32×32 inputs in [0, 1] (Zagoruyko & Komodakis 2016), in timm's API."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        sub_block1: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        if sub_block1:  # in some checkpoints (never used by forward, as in RobustBench)
            self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        self.num_classes = num_classes
        # RobustBench's inputs: [0, 1], no normalisation; what model.transform=timm reads
        self.pretrained_cfg = {
            "input_size": (3, 32, 32),
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
        for m in self.modules():  # RobustBench's initialisation
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] ** 2 * m.out_channels)))
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(out))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # = avg_pool2d(·, 8) at 32×32
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.nChannels, num_classes)
        self.num_classes = num_classes


def checkpoint_path(cfg: dict[str, Any]) -> Path:
    """RobustBench's cache layout; corruptions_3d models live in the corruptions folder."""
    threat = cfg["threat_model"].replace("_3d", "")
    return Path(cfg["model_dir"]) / cfg["dataset"] / threat / f"{cfg['name']}.pt"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A RobustBench checkpoint's state dict: its wrappers and prefixes removed."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model=robustbench: {path} is not a loadable checkpoint ({exc})") from exc
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(wrapper), dict):
            ckpt = ckpt[wrapper]
            break
    state = {}
    for key, value in ckpt.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        state[key] = value
    return state


class RobustBench:
    """The model family of conf/model/robustbench.yaml (harness/models.py: check, create)."""

    entries: ClassVar[tuple[str, ...]] = (
        "_target_",
        "name",
        "dataset",
        "threat_model",
        "model_dir",
        "transform",
        "label_map",
        "checkpoint",
        "pretrained",
        "kwargs",
    )

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        unknown = sorted(set(cfg) - set(cls.entries))
        if unknown:
            raise ValueError(f"model=robustbench: unknown entries {unknown}; known: {cls.entries}")
        for k in ("checkpoint", "pretrained", "kwargs"):
            if cfg.get(k):
                raise ValueError(
                    f"model.{k} is not used by model=robustbench: the checkpoint is "
                    "<model.model_dir>/<model.dataset>/<model.threat_model>/<model.name>.pt"
                )
        if cfg.get("dataset") not in DATASETS:
            raise ValueError(
                f"model.dataset must be one of {list(DATASETS)}, got {cfg.get('dataset')!r}"
            )
        if cfg.get("threat_model") not in THREAT_MODELS:
            raise ValueError(
                f"model.threat_model must be one of {THREAT_MODELS}, got {cfg.get('threat_model')!r}"
            )
        key = (cfg["dataset"], cfg["threat_model"].replace("_3d", ""), cfg["name"])
        if key not in SUPPORTED:
            names = sorted(n for d, t, n in SUPPORTED if (d, t) == key[:2])
            raise ValueError(
                f"model.name={cfg['name']!r}: not a supported RobustBench model for "
                f"{key[0]}/{key[1]} (supported here: {names}; only RobustBench's plain WideResNets "
                "are built without the package, docs/models.md)"
            )
        path = checkpoint_path(cfg)
        if not path.is_file():
            gdrive = SUPPORTED[key][1]
            raise FileNotFoundError(
                f"model=robustbench: no checkpoint at {path} (model.model_dir="
                f"{cfg['model_dir']}). RobustBench publishes {cfg['name']} "
                f"({key[0]}, {key[1]}) on Google Drive, id {gdrive} "
                f"(https://drive.google.com/uc?id={gdrive}); on a machine with network, download "
                f"it to that path (`gdown --id {gdrive} -O {path}`, or robustbench's own "
                f"load_model(model_name={cfg['name']!r}, dataset={key[0]!r}, "
                f"threat_model={cfg['threat_model']!r}, model_dir=...)) and copy "
                f"{cfg['model_dir']} here"
            )

    @classmethod
    def key_entries(cls, cfg: dict[str, Any], entries: dict[str, Any]) -> dict[str, Any]:
        """In the run key: the checkpoint's sha256 instead of the folder it sits in."""
        from harness.keys import file_digest

        out = {k: v for k, v in entries.items() if k != "model_dir"}
        out["weights"] = {"sha256": file_digest(checkpoint_path(cfg))}
        return out

    @classmethod
    def label(cls, cfg: dict[str, Any]) -> str:
        return f"robustbench:{cfg['name']}:{cfg['dataset']}:{cfg['threat_model']}"

    @classmethod
    def create(cls, cfg: dict[str, Any], bench: Benchmark, train: bool) -> WideResNet:
        cls.check(cfg)
        key = (cfg["dataset"], cfg["threat_model"].replace("_3d", ""), cfg["name"])
        kwargs = {"widen_factor": 10, "num_classes": DATASETS[cfg["dataset"]], **SUPPORTED[key][0]}
        model = WideResNet(**kwargs)
        path = checkpoint_path(cfg)
        state = read_state_dict(path)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"model=robustbench: {path} does not fit WideResNet({kwargs}): "
                f"{len(result.missing_keys)} missing keys {result.missing_keys[:3]}, "
                f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:3]}"
            )
        if train and model.num_classes != bench.num_classes:
            model.reset_classifier(bench.num_classes)
        return model.eval()
