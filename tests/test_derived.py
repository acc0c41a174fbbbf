"""Derived runs (harness/derived.py): a method that declares a prerequisite with in_key=True
gets its parent run first (its own run directory, found by its key), receives it, and holds
the parent's run_id in its key; nothing is run twice."""

from __future__ import annotations

from harness import run as run_mod
from harness.method import Prerequisite
from harness.rundir import RunDir
from methods.erm import ERM

from .conftest import TINY, compose_config

RECEIVED: list[str] = []


class FromBase(ERM):
    """ERM that derives from a base ERM run of `base_epochs` (a stand-in for DFR or a linear
    probe: what it reads from the parent does not matter here, that it gets it does)."""

    @classmethod
    def prerequisites(cls, options):
        base = {
            "method": {"name": "erm", "_target_": "methods.erm.ERM"},
            "trainer": {"epochs": options["base_epochs"]},
        }
        return {"base": Prerequisite(base)}

    def use_prerequisites(self, runs):
        assert runs["base"].is_complete()
        RECEIVED.append(runs["base"].run_id)


def derived(tmp_path, base_epochs: int):
    return compose_config(
        [
            *TINY,
            f"results_dir={tmp_path}",
            "eval=minimal",
            "method.name=from_base",
            f"method._target_={__name__}.FromBase",
            f"+method.base_epochs={base_epochs}",
        ]
    )


def test_a_derived_run_gets_its_parent_first_and_keys_on_its_run_id(tmp_path):
    RECEIVED.clear()
    summary = run_mod.run(derived(tmp_path, 2))
    payload = RunDir(tmp_path, summary["run_id"]).read_key()["payload"]
    parent_id = payload["parents"]["base"]
    # the parent is the plain ERM run of that config, finished, and it is what was received
    plain = run_mod.run(
        compose_config([*TINY, f"results_dir={tmp_path}", "eval=minimal", "trainer.epochs=2"])
    )
    assert plain["run_id"] == parent_id and plain["skipped"]
    assert RECEIVED == [parent_id]
    # a finished derived run is skipped without touching its parent again
    again = run_mod.run(derived(tmp_path, 2))
    assert again["run_id"] == summary["run_id"] and again["skipped"]
    assert RECEIVED == [parent_id]
    # another parent, another key
    other = run_mod.run(derived(tmp_path, 3))
    other_payload = RunDir(tmp_path, other["run_id"]).read_key()["payload"]
    assert other_payload["parents"]["base"] not in (parent_id, None)
    assert RECEIVED[-1] == other_payload["parents"]["base"]


def test_prerequisites_are_planned_from_the_config_alone(tmp_path):
    from harness.derived import plan

    c = run_mod.compose(derived(tmp_path, 2))
    [(name, parent)] = plan(c).items()
    assert name == "base" and parent.in_key and parent.keys is not None
    assert parent.config["method"]["name"] == "erm" and parent.config["trainer"]["epochs"] == 2
    assert parent.config["hparams_seed"] == 0 and parent.config["tta"] == {"name": "none"}
    jtt = run_mod.compose(compose_config([*TINY, "method=jtt", f"results_dir={tmp_path}"]))
    [(name, parent)] = plan(jtt).items()
    assert name == "identification" and not parent.in_key and parent.keys is None
    assert list((tmp_path / "runs").iterdir()) == []  # planning ran nothing
