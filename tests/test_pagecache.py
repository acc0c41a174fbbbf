"""index.html made from the datasets' kept parts (harness/report/pagecache.py, issue 23): after
one new run only its dataset's part is drawn, a call with nothing new leaves the page as it
is, and whatever the parts, the page equals, byte for byte, one drawn whole from a copy of
the run directories (rebuild=true)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.report import page as page_module
from harness.report import pagecache
from harness.report.build import write_leaderboard
from harness.report.sections import SECTIONS, Section, register_section
from harness.rundir import RunDir
from tests.test_leaderboard_speed import rebuilt_copy
from tests.test_partcache import make_root, write_run

HTML = dict(outputs=("html",))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The datasets whose part of the page is drawn (not read back), in order."""
    seen: list[str] = []
    real = page_module.dataset_part

    def spy(ctx, page_dir):
        seen.append(ctx.dataset)
        return real(ctx, page_dir)

    monkeypatch.setattr(page_module, "dataset_part", spy)
    return seen


@pytest.fixture
def section_registry():
    """Sections a test registers are taken out again."""
    before = dict(SECTIONS)
    yield
    SECTIONS.clear()
    SECTIONS.update(before)


def _page(root: Path) -> Path:
    return root / "leaderboard" / "index.html"


def _same_as_rebuilt(root: Path, full: Path) -> bytes:
    rebuilt_copy(root, full, **HTML)
    got = _page(root).read_bytes()
    assert got == _page(full).read_bytes()
    return got


def _part_files(root: Path) -> set[str]:
    return {p.name for p in (root / "leaderboard" / pagecache.PAGE_DIR).iterdir()}


@pytest.mark.filterwarnings("ignore:skipping .* failed \\(see its FAILED file\\)")
def test_only_the_changed_datasets_part_is_drawn(tmp_path: Path, drawn, section_registry) -> None:
    root = tmp_path / "r"
    n = make_root(root, lrs=(1,))
    write_leaderboard(root, "erm", **HTML)
    assert drawn == ["plain", "rot", "solo"]
    page = _page(root)
    assert len(_part_files(root)) == 4  # a part per dataset and the page's record
    # nothing new: nothing drawn, the page not written again
    before = page.stat()
    drawn.clear()
    write_leaderboard(root, "erm", **HTML)
    assert drawn == []
    after = page.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    # a new run: its dataset's part only; the page equals one drawn whole
    write_run(root, n, "plain", "irm", 3, 0, evals=("e1", "e2"))
    write_leaderboard(root, "erm", **HTML)
    assert drawn == ["plain"]
    _same_as_rebuilt(root, tmp_path / "full1")
    assert len(_part_files(root)) == 4  # plain's old part removed
    # a failed run: the failures are on every dataset's page (all drawn, as rebuilt)
    failed = RunDir(root, "f" * 20)
    failed.path.mkdir(parents=True)
    failed.key_json.write_text(json.dumps({"run_id": "f" * 20, "setting_id": "s",
                                           "payload": {"dataset": {"name": "rot"}}}))  # fmt: skip
    failed.failed.write_text(json.dumps({"reason": "ValueError: boom", "failed_at": "x"}))
    drawn.clear()
    write_leaderboard(root, "erm", **HTML)
    assert sorted(drawn) == ["plain", "rot", "solo"]
    assert "ValueError: boom" in _same_as_rebuilt(root, tmp_path / "full2").decode()
    # a damaged part: that dataset drawn again, the same page
    (root / "leaderboard" / pagecache.PAGE_DIR / pagecache.RECORD).unlink()  # (page redone)
    rot = pagecache.PageParts(root / "leaderboard", {}).folder
    for path in rot.glob("*.part"):
        if b'"t_rot"' in path.read_bytes():
            path.write_bytes(path.read_bytes()[:-10])
    expected = page.read_bytes()
    drawn.clear()
    write_leaderboard(root, "erm", **HTML)
    assert drawn == ["rot"]
    assert page.read_bytes() == expected
    # the page removed: put together from the parts, nothing drawn
    page.unlink()
    drawn.clear()
    write_leaderboard(root, "erm", **HTML)
    assert drawn == [] and page.read_bytes() == expected
    # a section registered: every part again, with it
    register_section(Section("extra_view", "An extra view", 75, html=lambda ctx: "<p>extra</p>"))
    write_leaderboard(root, "erm", **HTML)
    assert sorted(drawn) == ["plain", "rot", "solo"]
    assert page.read_text().count("<p>extra</p>") == 3
    # rebuild=true draws every part
    drawn.clear()
    write_leaderboard(root, "erm", **HTML, rebuild=True)
    assert sorted(drawn) == ["plain", "rot", "solo"]


def test_a_section_that_cannot_be_keyed_draws_the_page_whole(
    tmp_path: Path, drawn, section_registry
) -> None:
    """A section function closing over a frame (its output could change unseen): no part
    is kept, the page is drawn whole each call."""
    shown = pd.DataFrame({"metric": ["accuracy"]})
    register_section(
        Section("by_frame", "By a frame", 76, rows=lambda agg: agg["metric"].isin(shown["metric"]))
    )
    assert pagecache.sections_key() is None
    root = tmp_path / "r"
    make_root(root, lrs=(1,))
    write_leaderboard(root, "erm", **HTML)
    write_leaderboard(root, "erm", **HTML)
    assert sorted(drawn) == ["plain", "plain", "rot", "rot", "solo", "solo"]
    assert not list((root / "leaderboard" / pagecache.PAGE_DIR).glob("*.part"))


def _closing_over(metric: str):
    return lambda agg: agg["metric"] == metric


def test_the_sections_key_follows_their_code_and_values(section_registry, tmp_path) -> None:
    register_section(Section("mine", "Mine", 77, rows=_closing_over("accuracy")))
    first = pagecache.sections_key()
    assert first is not None and pagecache.sections_key() == first  # stable
    register_section(Section("mine", "Mine", 77, rows=_closing_over("ece")), replace=True)
    second = pagecache.sections_key()
    assert second not in (None, first)  # the value it closes over
    register_section(Section("mine", "Mine", 78, rows=_closing_over("ece")), replace=True)
    assert pagecache.sections_key() not in (None, first, second)  # a field
    # a function's file changed (size, mtime): another key
    module = tmp_path / "my_sections.py"
    module.write_text("def rows(agg):\n    return agg['metric'] == 'accuracy'\n")
    namespace: dict = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    register_section(Section("mine", "Mine", 77, rows=namespace["rows"]), replace=True)
    third = pagecache.sections_key()
    module.write_text(module.read_text() + "# edited\n")
    assert pagecache.sections_key() not in (None, third)


def test_a_closure_over_a_frozenset_keys_alike_in_every_process(section_registry) -> None:
    """A frozenset's members are in string-hash order, which differs between processes:
    the sections' key sorts them (else every call of a new process would draw every part)."""
    import subprocess
    import sys

    code = (
        "from harness.report import page, pagecache\n"
        "from harness.report.sections import Section, register_section\n"
        "def rows_of(names):\n"
        "    return lambda agg: agg['metric'].isin(names)\n"
        "rows = rows_of(frozenset(f'metric_{k}' for k in range(20)))\n"
        "register_section(Section('mine', 'Mine', 77, rows=rows))\n"
        "print(pagecache.sections_key())\n"
    )
    keys = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in (1, 2, 3)
    }  # fmt: skip
    assert len(keys) == 1 and len(next(iter(keys)).strip()) == 64
