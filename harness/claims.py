"""python -m harness.claims [names=[NAME,...]] [run=false] [root=...] [out=docs/claims.md]:
the claims suite (docs/claims.md). Each claim is an experiment preset
conf/experiment/claims/NAME.yaml: a sweep (its `hydra.sweeper.params`, e.g. over seeds) and
a `claim:` with the decision rule (harness/claim_rules.py), declared before anything runs.

Per claim: the rule is checked; the sweep runs through the normal CLI
(`python -m harness.run -m +experiment=claims/NAME results_dir=<root>/NAME`, finished runs
skipped); its tidy table is collected, the rule applied and the result written to
<root>/NAME/claim.json; then `out` is regenerated from every claim's claim.json
(harness/report/claims.py). Nothing here knows a dataset or a method: the specifics are the
presets'.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR

log = logging.getLogger("harness.claims")
PRESET_DIR = CONF_DIR / "experiment" / "claims"


def available() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def sweep_overrides(
    name: str, root: Path, extra: list[str], results: str | None = None
) -> list[str]:
    """The overrides of a claim's sweep: its preset, its results root (its own, or the folder
    its `claim.results` shares with other claims) and the suite's shared cache of generated
    data."""
    return [f"+experiment=claims/{name}", f"results_dir={root / (results or name)}",
            f"cache_dir={root / 'cache'}", *extra]  # fmt: skip


def compose_claim(name: str, overrides: list[str]) -> dict[str, Any]:
    """The preset composed as harness.run would (inside this Hydra app): the claim, the
    eval config and the sweep's parameters."""
    cfg = hydra.compose(config_name="config", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=False)
    return {
        "claim": OmegaConf.to_container(cfg.get("claim"), resolve=True) if "claim" in cfg else None,
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "results_dir": str(cfg.results_dir),
        "sweep": {str(k): str(v) for k, v in params.items()},
    }


def run_sweep(overrides: list[str]) -> tuple[int, float, str]:
    """(exit code, seconds, the output's tail) of the claim's multirun."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run", "-m", *overrides],
        capture_output=True,
        text=True,
    )
    return proc.returncode, time.monotonic() - start, (proc.stdout + proc.stderr)[-3000:]


def add_key_columns(table: Any, results_dir: str, keys: list[str]) -> Any:
    """The table with a column `key:<dotted key>` per key: the value in each run's key.json
    payload (e.g. `dataset.correlation`), for rules whose x is a setting (`x_key`)."""
    import pandas as pd

    from harness.rundir import RunDir

    table = table.copy()
    for key in keys:
        values = {}
        for run_id in table["run_id"].unique():
            node: Any = RunDir(results_dir, str(run_id)).read_key()["payload"]
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values[run_id] = node
        # object dtype: a run without the key (None) must not turn 5 into 5.0, which a
        # rule's `where: {key:...: 5}` would then miss
        table[f"key:{key}"] = pd.Series([values[r] for r in table["run_id"]], index=table.index,
                                        dtype=object)  # fmt: skip
    return table


def claim_keys(claim: dict[str, Any]) -> list[str]:
    """The run-configuration keys a claim's rules read: each `x_key`, and each `where`
    column spelled `key:<dotted key>` (e.g. `key:tta.batch_size`, a TTA option that the
    table has no column for)."""
    keys = set()
    for t in claim["tests"]:
        keys |= {t["x_key"]} if "x_key" in t else set()
        for w in (t.get("where"), *(t.get(s, {}).get("where") for s in ("a", "b"))):
            keys |= {c[len("key:") :] for c in (w or {}) if str(c).startswith("key:")}
    return sorted(keys)


def evaluate(name: str, composed: dict[str, Any]) -> dict[str, Any]:
    """The claim's rules applied to its sweep's rows of its eval config."""
    from harness.claim_rules import evaluate_claim
    from harness.keys import eval_id
    from harness.table import collect_current

    table, _ = collect_current(composed["results_dir"])  # the store when current
    if not table.empty:
        table = table[table["eval_id"] == eval_id(composed["eval"])]
    if table.empty:
        return {"verdict": "error", "tests": [], "confidence": None,
                "errors": {"(all)": f"no finished runs under {composed['results_dir']}"}}  # fmt: skip
    table = add_key_columns(table, composed["results_dir"], claim_keys(composed["claim"]))
    result = evaluate_claim(table, composed["claim"])
    result["runs"] = int(table["run_id"].nunique())
    result["seeds"] = sorted(int(s) for s in table["seed"].unique())
    # the commits the rows were computed at (a later `run=false` regeneration keeps them)
    result["rows_git_sha"] = sorted(str(s)[:12] for s in table["git_sha"].unique())
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="claims", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from harness.claim_rules import check_claim
    from harness.report.claims import write_claims
    from harness.store import atomic_write_json, now_iso

    root = Path(cfg.root)
    names = list(cfg.names) if cfg.names else available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        raise ValueError(f"names: no claim preset {unknown} in {PRESET_DIR} ({available()})")
    extra = [str(o) for o in cfg.overrides]
    # every rule checked before any sweep runs
    composed, overrides = {}, {}
    for name in names:
        claim = compose_claim(name, sweep_overrides(name, root, extra))["claim"]
        check_claim(claim, f"claims/{name}: claim")
        overrides[name] = sweep_overrides(name, root, extra, claim.get("results"))
        composed[name] = compose_claim(name, overrides[name])
    failed = []
    for name in names:
        previous = root / name / "claim.json"
        record: dict[str, Any] = {"name": name, "claim": composed[name]["claim"],
                                  "sweep": composed[name]["sweep"], "overrides": extra}  # fmt: skip
        if cfg.run:
            log.info("claim %s: running its sweep", name)
            rc, seconds, tail = run_sweep(overrides[name])
            record.update(sweep_seconds=round(seconds, 1), sweep_rc=rc)
            if rc != 0:
                log.error("claim %s: the sweep failed (exit %d):\n%s", name, rc, tail)
                failed.append(name)
        elif previous.is_file():  # the sweep's time as last measured
            old = json.loads(previous.read_text())
            record.update({k: old[k] for k in ("sweep_seconds", "sweep_rc") if k in old})
        record.update(evaluate(name, composed[name]), evaluated_at=now_iso())
        atomic_write_json(root / name / "claim.json", record)
        log.info("claim %s: %s", name, record["verdict"])
        print(f"{name}: {record['verdict']}")
    write_claims(root, available(), Path(cfg.out))
    print(f"wrote {cfg.out}")
    if failed:
        sys.exit(f"sweeps failed: {failed}")


if __name__ == "__main__":
    main()
