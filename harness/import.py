"""python -m harness.import SOURCE [results_dir=...] [eval=NAME]: external logits (and
features, head, labels, metadata) imported as a run (harness/importing.py, docs/models.md).
The module is named after the command; its code is in harness/importing.py (an importable
name: `import` is a Python keyword)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="import", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from harness.config import validate_eval
    from harness.importing import import_run

    # throw_on_missing: a missing source must not become a folder named "???"
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    validate_eval(c["eval"])
    summary = import_run(c["source"], c["results_dir"], c["eval"])
    verb = "already imported" if summary["skipped"] else "imported"
    print(f"{verb} {c['source']} as run {summary['run_id']} ({summary['run_dir']})")


def main(argv: Sequence[str] | None = None) -> None:
    """A bare SOURCE becomes source= before Hydra reads argv."""
    args = list(sys.argv[1:] if argv is None else argv)
    bare = [a for a in args if "=" not in a and not a.startswith("-")]
    if len(bare) > 1:
        raise SystemExit(f"harness.import takes one SOURCE folder, got {bare}")
    saved = sys.argv
    rest = [a for a in args if a not in bare]
    sys.argv = [saved[0] if saved else "harness.import", *(f"source={b}" for b in bare), *rest]
    try:
        _app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
