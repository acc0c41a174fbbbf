"""docs/claims.md from the claims suite's results (<root>/<name>/claim.json, written by
harness/claims.py): regenerated, never edited by hand. It records the commit, RESULTS_VERSION
and the version of the statistics (a digest of harness/stats/ and the decision rules)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from harness.keys import RESULTS_VERSION
from harness.store import atomic_write_text

HARNESS = Path(__file__).resolve().parent.parent

SCALE_NOTE = """\
**What "does not hold here" means.** Every claim is tested on data that ships with the
harness (digits_c, coloured_digits, maze) with tiny models (timm's `test_resnet`, and
`test_vit` / `test_efficientnet` where a claim needs architectures; a few epochs on about a
thousand 32×32 images, a few seeds), because the suite must run in an hour
on two CPU cores. "Does not hold here" says only that, on this data, at this scale and with
these seeds, the interval of the declared statistic lies wholly outside the claimed region:
the published claim's premise (ImageNet-scale models, their training recipes, their shifts)
is not reproduced, so it is not a refutation of the paper. "Holds" is likewise a
reproduction at small scale, and "not distinguishable" says that this many seeds and splits
cannot tell, in either direction: more seeds (`hydra.sweeper.params.seed`) narrow the
interval. Verdicts are mechanical: each rule (statistic, splits, direction, margin, test) is
in the preset, declared before its sweep runs, and the intervals are Bonferroni-corrected
over a claim's rules."""


def stats_version() -> str:
    """A digest of the code that makes the intervals and verdicts: harness/stats/*.py,
    harness/claim_rules.py, harness/claim_fits.py and harness/claim_curves.py (there is no
    version number to cite instead)."""
    h = hashlib.sha256()
    rules = [HARNESS / "claim_rules.py", HARNESS / "claim_fits.py", HARNESS / "claim_curves.py"]
    for path in sorted((HARNESS / "stats").glob("*.py")) + rules:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _command(record: dict[str, Any]) -> str:
    extra = " ".join(f"'{o}'" for o in record.get("overrides") or [])
    return f"python -m harness.claims 'names=[{record['name']}]'" + (f" {extra}" if extra else "")


def claim_section(record: dict[str, Any]) -> list[str]:
    """The Markdown of one claim: statement, command, rule as declared, numbers, verdict."""
    claim = record["claim"]
    lines = [f'<a id="{record["name"]}"></a>', "", f"## {record['name']}: {claim['title']}", ""]
    lines += [f"Paper: {claim['paper']}", ""]
    if claim.get("statement"):
        lines += [claim["statement"].strip(), ""]
    sweep = ", ".join(f"{k}={v}" for k, v in (record.get("sweep") or {}).items())
    lines += [
        f"Command: `{_command(record)}` (the sweep: `python -m harness.run -m "
        f"+experiment=claims/{record['name']}`; {sweep or 'one run'}).",
        "",
        f"**Verdict: {record['verdict']}**"
        + (
            f" — seeds {record['seeds']}, {record['runs']} runs in its folder"
            if "runs" in record
            else ""
        )
        + (f", sweep {record['sweep_seconds']:.0f} s" if "sweep_seconds" in record else "")
        + (
            f", rows computed at commit {', '.join(record['rows_git_sha'])}"
            if record.get("rows_git_sha")
            else ""
        ),
        "",
        "| rule | in claim | a − b (slope; ratio; ρ) | interval | mean a | mean b | seeds × splits | "
        "interval method | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in record.get("tests", []):
        conf = f"{100 * t['confidence']:.1f}%"
        lines.append(
            f"| {t['name']} | {'yes' if t['in_claim'] else 'diagnostic'} | {_num(t['estimate'])} "
            f"| [{_num(t['ci_low'])}, {_num(t['ci_high'])}] ({conf}) | {_num(t['mean_a'])} | "
            f"{_num(t['mean_b'])} | {t['seeds']} × {t['units']} | {t['interval']} | "
            f"{t['verdict']} |"
        )
    for name, why in (record.get("errors") or {}).items():
        lines.append(f"| {name} | | | | | | | not applied: {why} | error |")
    if claim.get("notes"):
        lines += ["", claim["notes"].strip()]
    rule = yaml.safe_dump({"tests": claim["tests"]}, sort_keys=False, width=100).rstrip()
    lines += ["", "<details><summary>the decision rule, as declared</summary>", "",
              "```yaml", rule, "```", "", "</details>", ""]  # fmt: skip
    return lines


def render(records: dict[str, dict[str, Any] | None], provenance: dict[str, Any]) -> str:
    """The whole page; records[name] is None for a claim that has not been run."""
    dirty = " (with uncommitted changes)" if provenance.get("git_dirty") else ""
    lines = [
        "# Claims reproduced on embedded data",
        "",
        "<!-- generated by `make claims` (python -m harness.claims); do not edit by hand -->",
        "",
        f"Made at commit `{provenance['git_sha']}`{dirty}, RESULTS_VERSION "
        f"{RESULTS_VERSION}, statistics {stats_version()} (a digest of harness/stats/, "
        "harness/claim_rules.py, harness/claim_fits.py and harness/claim_curves.py).",
        "",
        SCALE_NOTE,
        "",
        "| claim | paper | verdict | seeds | sweep (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in records.items():
        if r is None:
            lines.append(f"| {name} | | not run | | |")
            continue
        seconds = _num(r.get("sweep_seconds"), 0) if "sweep_seconds" in r else "–"
        lines.append(f"| [{r['claim']['title']}](#{name}) | {r['claim']['paper']} | "
                     f"{r['verdict']} | {len(r.get('seeds', []))} | {seconds} |")  # fmt: skip
    lines.append("")
    for r in records.values():
        if r is not None:
            lines += claim_section(r)
    return "\n".join(lines).rstrip() + "\n"


def write_claims(root: Path, names: list[str], out: Path) -> str:
    """Regenerates `out` from <root>/<name>/claim.json of each name; returns the text."""
    from harness.store import provenance

    records = {}
    for name in names:
        path = Path(root) / name / "claim.json"
        records[name] = json.loads(path.read_text()) if path.is_file() else None
    text = render(records, provenance())
    atomic_write_text(out, text)
    return text
