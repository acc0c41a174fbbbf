"""Integrity of a results root under stray copies, races, tampering and typos (issue 24):
sweeps that share a second, a misspelt sweep objective, a damaged post-hoc stage, merging
two roots, symlinks under runs/, stored configs that are never instantiated."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from harness import evaluate
from harness import export as export_cmd
from harness import merge as merge_mod
from harness import run as run_mod
from harness import train as train_mod
from harness.merge import merge
from harness.posthoc import evaluate_run
from harness.prune import prune
from harness.registry import CONF_DIR
from harness.report.build import write_leaderboard
from harness.report.export import export, load_table
from harness.rundir import RunDir, merge_staging
from harness.search import objective_value
from harness.status import run_statuses
from harness.table import collect

from .conftest import TINY, compose_config, run_cli, run_rows

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1"}


# `python -m harness.run` whose jobs each wait for the file $GATE first: a sweep held in use
# for as long as a test needs (a fast machine finished an ungated tiny sweep before a second
# process had started and checked its lock).
GATED_RUN = """
import os, sys, time
from pathlib import Path
from harness import run as run_mod

real_run = run_mod.run


def gated(cfg):
    deadline = time.time() + 600
    while not Path(os.environ["GATE"]).exists() and time.time() < deadline:
        time.sleep(0.05)
    return real_run(cfg)


run_mod.run = gated
run_mod.main()
"""


def sweep(args, cwd, gate=None):
    entry = ["-m", "harness.run"]
    if gate is not None:
        (cwd / "gated_run.py").write_text(GATED_RUN)
        entry = [str(cwd / "gated_run.py")]
    return subprocess.Popen(
        [sys.executable, *entry, "-m", *TINY, "sweep_end.leaderboard=false", *args],
        cwd=cwd,
        env=ENV if gate is None else {**ENV, "GATE": str(gate)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_sweeps_started_in_the_same_second_keep_their_own_folders_and_counts(tmp_path):
    results = tmp_path / "res"
    # one sweep whose only job fails, one whose two jobs finish, started together: with a
    # folder named by the second alone they overwrote each other's job_status.json
    failing = sweep([f"results_dir={results}", "seed=5", "trainer.optimizer.lr=1e30"], tmp_path)
    fine = sweep([f"results_dir={results}", "seed=6,7"], tmp_path)
    out_failing = failing.communicate(timeout=600)[0]
    out_fine = fine.communicate(timeout=600)[0]
    assert failing.returncode != 0, out_failing
    assert "sweep: 1 jobs: 0 finished, 0 skipped" in out_failing and "1 failed" in out_failing
    assert fine.returncode == 0, out_fine
    assert "sweep: 2 jobs: 2 finished, 0 skipped" in out_fine and "0 failed" in out_fine
    folders = sorted((results / "multirun").iterdir())
    assert len(folders) == 2, folders
    assert sorted(len(list(f.glob("*/job_status.json"))) for f in folders) == [1, 2]


def test_a_sweep_folder_given_twice_is_refused_while_in_use_and_counts_only_its_jobs(tmp_path):
    results, shared = tmp_path / "res", tmp_path / "shared"
    gate = tmp_path / "go"
    args = [f"results_dir={results}", f"hydra.sweep.dir={shared}", "seed=0,1,2"]
    first = sweep(args, tmp_path, gate=gate)
    deadline = time.time() + 300
    while not (shared / "LOCK").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert (shared / "LOCK").exists(), "the first sweep never claimed its folder"
    second = run_cli(
        ["-m", *TINY, f"results_dir={results}", f"hydra.sweep.dir={shared}", "seed=3"],
        cwd=tmp_path,
        check=False,
    )
    assert first.poll() is None  # still in use: its first job waits for the gate
    gate.touch()
    out_first = first.communicate(timeout=600)[0]
    assert first.returncode == 0 and "sweep: 3 jobs: 3 finished" in out_first, out_first
    assert second.returncode != 0
    assert f"hydra.sweep.dir={shared} is in use by another sweep" in second.stderr + second.stdout
    assert not (shared / "LOCK").exists()  # released at the sweep's end
    # reused by hand once the first sweep ended: the earlier jobs' statuses are not counted
    third = run_cli(
        [
            "-m",
            *TINY,
            f"results_dir={results}",
            f"hydra.sweep.dir={shared}",
            "seed=9",
            "trainer.optimizer.lr=1e30",
            "sweep_end.leaderboard=false",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert third.returncode != 0
    assert "sweep: 1 jobs: 0 finished, 0 skipped" in third.stdout and "1 failed" in third.stdout


def test_a_misspelt_sweep_objective_is_refused_before_training(tmp_path, monkeypatch):

    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"sweep_objective must be <split>/<metric>"):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "sweep_objective=accuracy"]))
    assert not list(tmp_path.glob("runs/*"))  # refused before anything is written
    typo = [*TINY, f"results_dir={tmp_path}", "sweep_objective=val/acuracy"]
    with pytest.raises(ValueError) as exc:
        run_mod.run(compose_config(typo))
    message = str(exc.value)
    assert "sweep_objective='val/acuracy' is not a number this run will have" in message
    assert "val/accuracy" in message and "val/worst_group_accuracy" in message
    assert not list(tmp_path.glob("runs/*/epochs.parquet"))
    assert not list(tmp_path.glob("runs/*/checkpoints/*"))
    with pytest.raises(ValueError, match="sweep_objective='nosplit/accuracy'"):
        run_mod.run(compose_config([*typo[:-1], "sweep_objective=nosplit/accuracy"]))


def test_the_worst_group_objective_is_the_lowest_group_accuracy(tmp_path):

    cfg = compose_config([*TINY, f"results_dir={tmp_path}", "eval=minimal"])
    summary = run_mod.run(cfg)
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    value = objective_value(summary["run_dir"], eval_cfg, "val/worst_group_accuracy")
    # independently: the per-example predictions of val, grouped by label (maze's groups)
    [rows] = list((tmp_path / "runs").glob("*/posthoc/*/scores/val.parquet"))
    scores = pd.read_parquet(rows)
    assert value == pytest.approx(scores.groupby("label")["correct"].mean().min(), abs=1e-12)


def test_a_damaged_posthoc_rows_file_is_computed_again_on_a_rerun(tmp_path, monkeypatch, capsys):

    overrides = [*TINY, f"results_dir={tmp_path}", "eval=minimal"]
    first = run_mod.run(compose_config(overrides))
    rd = RunDir(tmp_path, first["run_id"])
    original = run_rows(rd.path)
    [rows_file] = list(rd.path.glob("posthoc/*/rows.parquet"))
    measured = ["split", "group_key", "group_value", "scorer", "metric", "value", "n"]

    def same_as_original():
        again = run_rows(rd.path)
        pd.testing.assert_frame_equal(again[measured], original[measured], check_exact=True)

    data = rows_file.read_bytes()
    rows_file.write_bytes(data[: len(data) // 2])  # truncated: no footer
    assert run_mod.run(compose_config(overrides))["skipped"]  # the run itself is finished
    same_as_original()
    # the same through harness.evaluate, and for a readable file with rows missing
    original.head(3).to_parquet(rows_file)
    eval_dir = rows_file.parent.name
    monkeypatch.setattr(sys, "argv", ["harness.evaluate", f"run={tmp_path}", "eval=minimal"])
    try:
        evaluate.main()
    finally:
        GlobalHydra.instance().clear()
    assert "1 run(s) evaluated, 0 already had it" in capsys.readouterr().out
    assert rows_file.parent.name == eval_dir
    same_as_original()


# ---------------------------------------------------------------- merge and symlinks

DIGITS = [*TINY, "dataset=digits_c", "dataset.families=[noise]", "dataset.severities=[1]"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished tiny digits_c runs (seeds 0 and 1), each in a root of its own."""

    base = tmp_path_factory.mktemp("finished")
    out = {}
    for seed in (0, 1):
        root = base / f"seed{seed}"
        summary = run_mod.run(
            compose_config(
                [
                    *DIGITS,
                    f"seed={seed}",
                    f"results_dir={root}",
                    f"cache_dir={base / 'cache'}",
                    "eval=minimal",
                ]
            )
        )
        out[seed] = (root, summary["run_id"])
    return out


def copy_root(source, target):
    shutil.copytree(source, target, symlinks=True)
    return target


def measured(root):
    """The numbers of a root as the leaderboard collects them, in a fixed order."""

    table, _ = collect(root)
    cols = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
    return table[[*cols, "value", "n"]].sort_values(cols).reset_index(drop=True)


def test_merge_copies_new_runs_reports_identical_ones_and_never_overwrites_a_conflict(
    tmp_path, finished
):
    (a, run0), (b, run1) = finished[0], finished[1]
    src, dst = copy_root(a, tmp_path / "src"), tmp_path / "dst"
    proc = run_cli([str(src), str(dst)], cwd=tmp_path, module="harness.merge")
    assert "1 copied" in proc.stdout
    pd.testing.assert_frame_equal(measured(dst), measured(a), check_exact=True)
    assert sorted(p.name for p in dst.iterdir()) == ["runs"]  # no staging folder left
    again = run_cli([f"src={src}", f"dst={dst}"], cwd=tmp_path, module="harness.merge")
    assert "1 present" in again.stdout

    # the same run_id with other numbers (another machine), beside a run dst lacks
    other = copy_root(a, tmp_path / "other")
    [rows_file] = list(other.glob(f"runs/{run0}/posthoc/*/rows.parquet"))
    rows = pd.read_parquet(rows_file)
    changed = rows.index[(rows["metric"] == "accuracy") & (rows["split"] == "id_test")][0]
    rows.loc[changed, "value"] += 0.25
    rows.to_parquet(rows_file)
    shutil.copytree(b / "runs" / run1, other / "runs" / run1)
    before = measured(dst)
    proc = run_cli([str(other), str(dst)], cwd=tmp_path, module="harness.merge", check=False)
    assert proc.returncode == 1
    assert "1 conflict" in proc.stdout and "1 copied" in proc.stdout
    assert f"conflict {run0}: 1 numbers of post-hoc" in proc.stderr
    assert str(other / "runs" / run0) in proc.stderr and str(dst / "runs" / run0) in proc.stderr
    assert "id_test/accuracy" in proc.stderr
    after = measured(dst)
    pd.testing.assert_frame_equal(
        after[after["run_id"] == run0].reset_index(drop=True), before, check_exact=True
    )
    pd.testing.assert_frame_equal(
        after[after["run_id"] == run1].reset_index(drop=True),
        measured(b),
        check_exact=True,
    )


def test_merge_adds_a_stage_only_src_has_and_a_killed_copy_leaves_no_half_run(
    tmp_path, finished, monkeypatch
):

    a, run0 = finished[0]
    dst = copy_root(a, tmp_path / "dst")
    src = copy_root(a, tmp_path / "src")

    eval_cfg = dict(
        OmegaConf.to_container(
            compose_config([*DIGITS, "eval=minimal", "eval.ece_bins=7"]).eval, resolve=True
        )
    )
    new_id, _ = evaluate_run(RunDir(src, run0).path, eval_cfg)
    table = merge_mod.merge(src, dst)
    assert table.set_index("run_id").loc[run0, "action"] == "present"
    assert new_id in table.set_index("run_id").loc[run0, "why"]
    pd.testing.assert_frame_equal(measured(dst), measured(src), check_exact=True)

    # killed between the copy and the rename: DST's runs/ never holds a half run, and a
    # staging folder a SIGKILL left is not read by anyone
    fresh = tmp_path / "fresh"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_mod.os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        merge_mod.merge(src, fresh)
    assert not any((fresh / "runs").glob("*"))
    leftover = merge_staging(fresh, "1.dead")
    shutil.copytree(src / "runs" / run0, leftover / run0)
    table, skipped = collect(fresh)
    assert table.empty and not skipped


def test_symlinks_under_runs_are_refused_by_every_command(tmp_path, finished, monkeypatch):

    (a, run0), (b, run1) = finished[0], finished[1]
    root = copy_root(a, tmp_path / "root")
    elsewhere = copy_root(b, tmp_path / "elsewhere")
    link = root / "runs" / run1
    link.symlink_to(elsewhere / "runs" / run1, target_is_directory=True)
    target_best = RunDir(elsewhere, run1).best_checkpoint
    assert target_best.exists()

    with pytest.warns(UserWarning, match="symbolic link"):
        table, skipped = collect(root)
    assert set(table["run_id"]) == {run0}
    assert [str(p) for p, why in skipped if "symbolic link" in why] == [str(link)]
    with pytest.warns(UserWarning, match="symbolic link"):
        assert list(run_statuses(root)["run_id"]) == [run0]
    with pytest.warns(UserWarning, match="symbolic link"):
        pruned = prune(root, "none")
    assert list(pruned["run_id"]) == [run0] and target_best.exists()
    with pytest.warns(UserWarning, match="symbolic link"):
        assert list(merge_mod.merge(root, tmp_path / "m")["run_id"]) == [run0]
    assert not (tmp_path / "m" / "runs" / run1).exists()
    # a link where merge would write: refused, the link's target untouched
    dst = copy_root(a, tmp_path / "dst")
    (dst / "runs" / run1).symlink_to(tmp_path / "nowhere", target_is_directory=True)
    result = merge_mod.merge(b, dst).set_index("run_id")
    assert result.loc[run1, "action"] == "refused" and "symbolic link" in result.loc[run1, "why"]
    assert not (tmp_path / "nowhere").exists()
    # harness.run and harness.evaluate refuse a run folder that is a link
    cfg = compose_config(
        [
            *DIGITS,
            "seed=1",
            f"results_dir={root}",
            f"cache_dir={a.parent / 'cache'}",
            "eval=minimal",
        ]
    )
    with pytest.raises(ValueError, match="symbolic link"):
        run_mod.run(cfg)
    proc = run_cli([f"run={link}"], cwd=tmp_path, module="harness.evaluate", check=False)
    assert proc.returncode != 0 and "symbolic link" in proc.stderr
    # a rows.parquet that is a link is not read either
    [rows_file] = list((root / "runs" / run0).glob("posthoc/*/rows.parquet"))
    real = tmp_path / "rows.parquet"
    shutil.move(rows_file, real)
    rows_file.symlink_to(real)
    with pytest.warns(UserWarning, match="not a regular file"):
        assert collect(root)[0].empty


def test_a_stored_config_or_eval_json_is_never_instantiated(
    tmp_path, finished, monkeypatch, capsys
):
    """Hydra instantiates a `_target_` given on the command line (expected); a config.yaml,
    eval.json or key.json inside a results root is data, read by no command as a plugin."""

    a, run0 = finished[0]
    root = copy_root(a, tmp_path / "root")
    canary = tmp_path / "instantiated"
    evil = {"_target_": "builtins.open", "file": str(canary), "mode": "w"}
    run_dir = root / "runs" / run0
    planted = yaml.safe_load((run_dir / "config.yaml").read_text())
    planted.update(_target_=evil["_target_"], file=str(canary), mode="w")
    for group in ("dataset", "method", "model", "trainer"):
        planted[group] = {**planted[group], **evil}
    planted["eval"]["scorers"]["evil"] = evil
    (run_dir / "config.yaml").write_text(yaml.safe_dump(planted))
    [stage] = list(run_dir.glob("posthoc/*"))
    eval_json = json.loads((stage / "eval.json").read_text())
    eval_json["scorers"]["evil"] = evil
    (stage / "eval.json").write_text(json.dumps({**eval_json, **evil}))
    key = json.loads((run_dir / "key.json").read_text())
    key["payload"]["method"] = {**key["payload"].get("method", {}), **evil}
    (run_dir / "key.json").write_text(json.dumps(key))

    write_leaderboard(root, outputs=["markdown", "html"])
    run_statuses(root)
    export(load_table(root), ["method"], "split", "accuracy", "markdown", 3)
    merge(root, tmp_path / "merged")
    prune(root, "best", dry_run=True)
    monkeypatch.setattr(
        sys, "argv", ["harness.evaluate", f"run={root}", "eval=minimal", "eval.ece_bins=9"]
    )
    try:
        evaluate.main()
    finally:
        GlobalHydra.instance().clear()
    assert "1 run(s) evaluated" in capsys.readouterr().out
    assert not canary.exists()


# ---------------------------------------------------------------- every option, a bad value

LEADERBOARD_CASES = {
    "results_dir": ("results_dir={tmp}/typo", "no such directory"),
    "baseline": ("baseline=[erm,jtt]", "baseline must be a method name"),
    "scorer_baseline": ("scorer_baseline=[msp]", "scorer_baseline must be a name or null"),
    "scorer_resamples": ("scorer_resamples=0", "scorer_resamples must be a positive integer"),
    "multiple_comparisons": ("multiple_comparisons=holmes", "multiple_comparisons='holmes'"),
    "scorer_multiple_comparisons": (
        "scorer_multiple_comparisons=holmes",
        "scorer_multiple_comparisons='holmes'",
    ),
    "aggregates": ("aggregates=maybe", "aggregates must be true or false"),
    "model_selection": ("model_selection=best", "model_selection must be one of"),
    "primary_metric": ("primary_metric.default=[acc]", "primary_metric must be a metric name"),
    "outputs": ("outputs=[markdown,pdf]", "outputs must be a list among"),
    "plot_workers": ("plot_workers=0", "plot_workers must be auto or a positive integer"),
    "corruption_reference": ("corruption_reference=[a]", "corruption_reference must be a name"),
    "min_effect": ("min_effect=-0.01", "min_effect must be null or a positive number"),
    "headline_split": ("+headline_split.toy=[a]", "headline_split must be a mapping"),
    "rebuild": ("rebuild=maybe", "rebuild must be true or false"),
    "effective_robustness": (
        "effective_robustness.scale=linear",
        "effective_robustness.scale must be one of",
    ),
}
EXPORT_CASES = {
    "results_dir": ("results_dir={tmp}/typo", "no such directory"),
    "dataset": ("dataset=[a]", "dataset must be a dataset name or null"),
    "rows": ("rows=[colour]", "rows must be a list of table axes"),
    "columns": ("columns=colour", "columns must be one table axis"),
    "metric": ("metric=[]", "metric must be a metric name or a list"),
    "scorer": ("scorer=[msp]", "scorer must be a scorer name"),
    "splits": ("splits=val", "splits must be a list of split names"),
    "format": ("format=pdf", "format must be one of"),
    "precision": ("precision=-1", "precision must be an integer in [0, 12]"),
    "model_selection": ("model_selection=best", "model_selection must be one of"),
    "output": ("output={tmp}", "output must be a file path or null"),
}
EVAL_CASES = {
    "name": ("eval.name=[a]", "eval.name must be a non-empty name"),
    "ece_bins": ("eval.ece_bins=0", "eval.ece_bins must be a positive integer"),
    "fit_size": ("eval.fit_size=-3", "eval.fit_size must be a positive integer or null"),
    "coverages": ("eval.coverages=[1.5]", "eval.coverages must be a list of numbers in (0, 1]"),
    "calibrators": ("+eval.calibrators.bad={alpha: 1}", "eval.calibrators.bad needs a _target_"),
    "estimators": ("+eval.estimators.bad={score: msp}", "eval.estimators.bad needs a _target_"),
    "scorers": ("eval.scorers.knn.k=0", "eval.scorers.knn"),
}
COMMANDS = {
    "leaderboard": ("harness.leaderboard", "leaderboard.yaml", LEADERBOARD_CASES),
    "export": ("harness.export", "export.yaml", EXPORT_CASES),
    "evaluate": ("harness.evaluate", "eval/default.yaml", EVAL_CASES),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_a_bad_value_case(command):

    _, conf, cases = COMMANDS[command]
    options = set(yaml.safe_load((CONF_DIR / conf).read_text())) - {"defaults", "hydra"}
    assert set(cases) == options


@pytest.mark.parametrize(
    ("command", "option"), [(c, o) for c, (_, _, cases) in COMMANDS.items() for o in cases]
)
def test_a_bad_value_of_each_option_is_named(command, option, tmp_path, monkeypatch, capsys):
    module, _, cases = COMMANDS[command]
    override, message = cases[option]
    override = override.replace("{tmp}", str(tmp_path))
    where = f"run={tmp_path}" if command == "evaluate" else f"results_dir={tmp_path}"
    args = [where, override] if not override.startswith("results_dir") else [override]
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as exc:
        try:
            importlib.import_module(module).main()
        finally:
            GlobalHydra.instance().clear()
    assert exc.value.code not in (0, None)
    out = capsys.readouterr()
    assert message in out.err + out.out
    assert not (tmp_path / "leaderboard").exists() and not (tmp_path / "table.parquet").exists()


def test_export_takes_dataset_on_the_command_line(tmp_path, finished, monkeypatch, capsys):
    # conf/ has a `dataset` group: Hydra read dataset=NAME as a group choice and failed

    a, _ = finished[0]
    monkeypatch.setattr(
        sys, "argv", ["harness.export", f"results_dir={a}", "dataset=digits_c", "format=csv"]
    )
    export_cmd.main()
    out = capsys.readouterr().out
    assert out.startswith("method,") and "erm" in out


def test_report_commands_never_create_a_misspelt_root(tmp_path):
    for module, arg in (
        ("harness.leaderboard", "results_dir"),
        ("harness.status", "results_dir"),
        ("harness.prune", "results_dir"),
        ("harness.evaluate", "run"),
    ):
        typo = tmp_path / f"typo-{module}"
        proc = run_cli([f"{arg}={typo}"], cwd=tmp_path, module=module, check=False)
        assert proc.returncode != 0, (module, proc.stdout)
        assert str(typo) in proc.stderr and not typo.exists(), (module, proc.stderr)


def test_merge_dry_run_writes_nothing_and_its_options_are_checked(
    tmp_path, finished, monkeypatch, capsys
):
    a, run0 = finished[0]
    table = merge(a, tmp_path / "dst", dry_run=True)
    assert list(table["action"]) == ["would copy"] and not (tmp_path / "dst").exists()
    cases = [
        ([f"src={tmp_path}/typo", f"dst={tmp_path}/d"], "no run directories in"),
        ([str(a), f"{tmp_path}/d", "dry_run=maybe"], "dry_run must be true or false"),
        ([str(a)], "Missing mandatory value: dst"),
        ([str(a), str(a)], "src and dst are the same results root"),
    ]
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["harness.merge", *args])
        with pytest.raises(SystemExit) as exc:
            try:
                merge_mod.main()
            finally:
                GlobalHydra.instance().clear()
        assert exc.value.code not in (0, None), args
        out = capsys.readouterr()
        assert message in out.err + out.out, (args, out.err)
    assert not (tmp_path / "d").exists()


def test_a_missing_mandatory_path_is_refused_not_taken_literally(tmp_path, monkeypatch):
    # OmegaConf.to_container gives "???" for a missing value: it became a folder of that name
    from omegaconf.errors import MissingMandatoryValue

    from harness import prepare

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingMandatoryValue, match="out"):
        prepare.main(["corruptions", f"cache_dir={tmp_path / 'cache'}"])
    assert not list(tmp_path.glob("*\\?*"))
