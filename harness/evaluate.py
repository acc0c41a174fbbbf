"""python -m harness.evaluate run=<run dir or results dir> [eval=NAME]: the post-hoc stage of
an eval config on finished runs, from their caches alone (harness/posthoc.py)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR
from harness.rundir import RunDir, check_not_linked, run_dirs


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from harness.config import validate_eval
    from harness.posthoc import evaluate_run

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    validate_eval(eval_cfg)
    root = Path(cfg.run)
    given = RunDir.at(root)
    if given.benchmark_json.is_file():  # a run folder that is a symbolic link: refused
        check_not_linked(root)  # (as under runs/; a results root may be a link)
    runs = (
        [given]
        if given.benchmark_json.is_file()
        else [rd for rd in run_dirs(root) if rd.is_complete()]
    )
    if not runs:
        raise FileNotFoundError(
            f"run={root}: neither a finished run directory nor a results "
            "directory with finished runs"
        )
    done = skipped = 0
    for rd in runs:
        eid, was_done = evaluate_run(rd.path, eval_cfg)
        done, skipped = done + (not was_done), skipped + was_done
    print(f"eval {eid}: {done} run(s) evaluated, {skipped} already had it")


if __name__ == "__main__":
    main()
