"""The facts of a run's key.json that the leaderboard needs (a search's id, a held-out
domain's setting), computed once, when the run's stage enters the consolidated store
(harness/rowstore.py keeps them in its index), instead of reading every key.json at every
rebuild: 10,000 key.json reads cost ~1 s of a 2 s budget (docs/benchmarks.md).

A run's key.json is written before its DONE and never changed after it; the store's entry
for a stage is read again when its DONE changes, and its facts with it. A run the store
does not know (a table not collected through it) has its key.json read here instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import rowstore
from harness.keys import content_hash
from harness.rundir import RunDir, runs_root

# the facts as stored: (search_id, domain facts as JSON text; "" when the run holds out no
# domains); None = the key.json could not be read (read again when asked)
Facts = tuple[str, str] | None


def search_id(payload: dict[str, Any]) -> str:
    """harness/selection.py's search: the payload without the seed, the method's options (its
    name stays) and the trainer, hashed."""
    method = payload.get("method") or {}
    searched = {k: v for k, v in payload.items() if k not in ("seed", "method", "trainer")} | {
        "method": method.get("name")
    }
    return content_hash(searched)[:16]


def domain_facts(payload: dict[str, Any]) -> dict[str, Any] | None:
    """For a run holding out one or two domains (harness/report/domains.py): the held-out
    domains, the dataset's domains, its hyperparameter setting `hp` (the payload without
    seed, parents and held-out domains) and its search `search` (the same without the
    method's options and the trainer). None for any other run."""
    dataset = payload.get("dataset") or {}
    held = dataset.get("test_domains")
    if not isinstance(held, list) or len(held) not in (1, 2):
        return None
    rest = {k: v for k, v in payload.items() if k not in ("seed", "parents")}
    # the fingerprint hashes the options, test_domains included: the rest of them stand in
    rest["dataset"] = {k: v for k, v in dataset.items() if k not in ("test_domains", "fingerprint")}
    searched = {**rest, "method": (payload.get("method") or {}).get("name")}
    searched.pop("trainer", None)
    return {
        "held": [str(d) for d in held],
        "domains": [str(d) for d in dataset.get("domains") or []],
        "hp": content_hash(rest)[:16],
        "search": content_hash(searched)[:16],
    }


def read_facts(results_dir: str | Path, run_id: str) -> Facts:
    """A run's facts from its key.json; None when it cannot be read."""
    try:
        # .at: any folder name, as selection read it (RunDir() would refuse a non-hex id)
        payload = RunDir.at(runs_root(results_dir) / run_id).read_key()["payload"]
        domains = domain_facts(payload)
        return search_id(payload), "" if domains is None else json.dumps(domains)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def facts_of(results_dir: str | Path | None, run_ids: Any) -> dict[str, Facts]:
    """{run_id: facts} for `run_ids`: from the consolidated store's index where it holds
    them, else from each run's key.json (None when unreadable or without a results root)."""
    wanted = [str(r) for r in dict.fromkeys(run_ids)]
    if results_dir is None:
        return dict.fromkeys(wanted)
    gen = rowstore.load_generation(results_dir)
    held = gen.run_facts() if gen is not None else {}
    return {r: held[r] if held.get(r) is not None else read_facts(results_dir, r) for r in wanted}


def parse_domains(facts: Facts) -> dict[str, Any] | None:
    """The domain facts of a run (domain_facts' dict), or None."""
    return json.loads(facts[1]) if facts is not None and facts[1] else None
