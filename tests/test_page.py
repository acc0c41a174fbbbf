"""The leaderboard page in a real headless browser (Debian's chromium + chromedriver; `.ci/run`
installs them when missing): sort by clicking a header, filter, and keep a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report.aggregate import aggregate
from harness.report.headline import headline
from harness.report.page import COLUMNS, MAX_SHOWN, write_page
from harness.report.plots import dataset_plots
from tests.test_export import table as golden_table

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing:  # a failure, not a skip: the page must be checked in a browser
        pytest.fail(f"{missing} not found: apt-get install chromium chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # network requests
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    table = golden_table()
    agg = aggregate(table)
    plots = {"toy": dataset_plots(table, agg, root, root / "plots" / "toy")}
    headlines = {"toy": headline(agg, "toy", "accuracy")}
    path = write_page(agg, plots, root / "index.html", headlines=headlines, table=table)
    return path, agg


def cells(driver, column: str) -> list[str]:
    k = COLUMNS.index(column) + 1
    return [
        td.text for td in driver.find_elements("css selector", f"#t_toy tbody td:nth-child({k})")
    ]


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (Chrome's performance log)."""
    import json

    events = (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    return [
        e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
    ]


def screenshot(driver, path: Path) -> Path:
    """Kept under the test's tmp dir (or SHIFTBENCH_ARTIFACTS when set); the path printed."""
    if "SHIFTBENCH_ARTIFACTS" in os.environ:
        path = Path(os.environ["SHIFTBENCH_ARTIFACTS"]) / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def open_details(driver, tid: str = "t_toy") -> None:
    driver.find_element("css selector", f"#{tid}-details summary").click()


def test_the_headline_comes_first_and_its_first_row_is_the_best(browser, page):
    path, agg = page
    browser.get(path.as_uri())
    table = browser.find_element("css selector", "#headline-toy")
    assert table.is_displayed()
    first_table = browser.find_element("css selector", "h2 + p + table")
    assert first_table.get_attribute("id") == "headline-toy"
    headers = [th.text for th in table.find_elements("css selector", "th")]
    assert "val" not in headers and {"id_test", "shifted", "rank", "verdict"} <= set(headers)
    k = headers.index("id_test") + 1
    shown = [td.text for td in table.find_elements("css selector", f"tbody td:nth-child({k})")]
    acc = agg[
        (agg["metric"] == "accuracy") & (agg["split"] == "id_test") & (agg["group_value"] == "")
    ]
    assert float(shown[0].split()[0]) == pytest.approx(acc["mean"].max(), abs=5e-4)
    assert len(shown) == acc["setting_id"].nunique()
    cell = table.find_element("css selector", f"tbody tr td:nth-child({k})")
    assert "seed(s)" in cell.get_attribute("title")
    # the full table is folded until asked for
    assert not browser.find_element("css selector", "#t_toy").is_displayed()


def test_sort_by_clicking_a_header_filter_and_screenshot(browser, page):
    path, agg = page
    browser.get(path.as_uri())
    open_details(browser)
    shown = agg[agg["group_value"] == ""]
    assert len(cells(browser, "mean")) == len(shown)
    before = cells(browser, "mean")
    header = browser.find_elements("css selector", "#t_toy th")[COLUMNS.index("mean")]
    header.click()
    ascending = [float(v) for v in cells(browser, "mean")]
    assert ascending == sorted(ascending) and [f"{v:.4f}" for v in ascending] != before
    assert ascending == pytest.approx(sorted(shown["mean"]), abs=1e-4)
    header.click()
    descending = [float(v) for v in cells(browser, "mean")]
    assert descending == sorted(ascending, reverse=True)
    assert header.get_attribute("data-sorted") == "descending"
    # filter: method = erm keeps erm's rows only, still sorted
    from selenium.webdriver.support.ui import Select

    Select(
        browser.find_element("css selector", "#t_toy-filters select[data-column=method]")
    ).select_by_visible_text("erm")
    assert set(cells(browser, "method")) == {"erm"}
    assert len(cells(browser, "method")) == int((shown["method"] == "erm").sum())
    # "(none)" is the empty value (no scorer), not "all"
    Select(
        browser.find_element("css selector", "#t_toy-filters select[data-column=scorer]")
    ).select_by_visible_text("(none)")
    none = (shown["method"] == "erm") & (shown["scorer"] == "")
    assert len(cells(browser, "scorer")) == int(none.sum()) < len(shown)
    assert set(cells(browser, "scorer")) == {""}
    # the plots beside the table load from disk
    images = browser.find_elements("css selector", ".plots img")
    assert images and all(
        browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images
    )
    # every resource the page loaded (the plots) came from disk: no request left the machine
    urls = requested_urls(browser)
    assert any(u.endswith(".png") for u in urls), urls
    assert all(u.startswith(("file://", "data:")) for u in urls), urls
    shot = screenshot(browser, path.parent / "leaderboard_page.png")
    assert shot.stat().st_size > 0


def test_text_in_the_data_is_escaped(tmp_path, browser):
    agg = aggregate(golden_table().assign(method="<b>x</b>&"))
    path = write_page(agg, {}, tmp_path / "index.html")
    browser.get(path.as_uri())
    open_details(browser)
    assert set(cells(browser, "method")) == {"<b>x</b>&"}
    assert not browser.find_elements("css selector", "#t_toy tbody b")


def test_no_request_leaves_the_machine_and_plotly_is_inlined_once(browser, page):
    path, agg = page
    browser.get(path.as_uri())
    urls = requested_urls(browser)
    assert urls and all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    text = path.read_text()
    from plotly.offline import get_plotlyjs

    # plotly.js once, inline; every figure drawn by it (no figure carries its own copy)
    assert text.count(get_plotlyjs()[:2000]) == 1
    assert "<script src" not in text and "cdn.plot.ly" not in text.replace(get_plotlyjs(), "")
    assert path.stat().st_size < 6e6  # the budget for a small store (docs/results.md)
    plots = browser.find_elements("css selector", ".js-plotly-plot")
    assert plots and browser.execute_script("return typeof Plotly") == "object"
    # hover: each point of accuracy on the line names its setting and seed
    text0 = browser.execute_script("return arguments[0].data[0].text", plots[0])
    assert all("setting" in t and "seed" in t for t in text0)


def test_sections_are_folded_and_their_csv_is_the_rows_shown(browser, page):
    path, agg = page
    browser.get(path.as_uri())
    shown = agg[agg["group_value"] == ""]
    # the scorer sections of this store: folded, each a table of its rows only
    for sid, rows in (
        ("ood", shown[shown["metric"].str.contains("_vs_") & (shown["scorer"] != "")]),
        ("metrics", shown[shown["scorer"] == ""]),
        ("calibration", shown[shown["metric"] == "ece"]),
    ):
        details = browser.find_element("css selector", f"#t_toy_{sid}-details")
        assert details.get_attribute("open") is None
        count = browser.find_element("css selector", f"#t_toy_{sid}-count")
        assert count.get_attribute("textContent") == f"showing {len(rows)} of {len(rows)} rows"
    csv = browser.execute_script("return csvOf('t_toy')")
    import io

    import pandas as pd

    back = pd.read_csv(io.StringIO(csv), keep_default_na=False)
    assert list(back.columns) == COLUMNS and len(back) == len(shown)
    assert sorted(back["mean"]) == pytest.approx(sorted(shown["mean"]), abs=1e-5)


def test_a_registered_section_appears_without_editing_the_page(tmp_path, browser):
    from harness.report.sections import SECTIONS, Section, register_section

    agg = aggregate(golden_table())
    register_section(
        Section("zz_ece", "ECE only", 500, rows=lambda a: a["metric"] == "ece", folded=False)
    )
    try:
        path = write_page(agg, {}, tmp_path / "index.html")
    finally:
        SECTIONS.pop("zz_ece")
    with pytest.raises(ValueError, match="registered already"):
        register_section(Section("all", "again", 1, rows=lambda a: a["metric"] == ""))
    browser.get(path.as_uri())
    assert browser.find_element("css selector", "#t_toy_zz_ece-section h3").text == "ECE only"
    ece = agg[(agg["metric"] == "ece") & (agg["group_value"] == "")]
    k = COLUMNS.index("metric") + 1
    metrics = browser.find_elements("css selector", f"#t_toy_zz_ece tbody td:nth-child({k})")
    assert [m.text for m in metrics] == ["ece"] * len(ece)


def test_the_page_of_a_10000_run_store_loads(tmp_path, browser):
    """The summaries of benchmarks/leaderboard_regen.py's store (its render time is
    benchmarks/page_render.py's business, not this test's)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from page_render import render, store_table

    table = store_table(10000)
    path, _, _ = render(table, tmp_path)
    assert path.stat().st_size < 20e6  # the page-size budget (docs/results.md)
    browser.get(path.as_uri())
    urls = requested_urls(browser)
    assert all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    agg = aggregate(table)
    for dataset in ("synth_a", "synth_b"):
        head = browser.find_element("css selector", f"#headline-{dataset}")
        headers = [th.text for th in head.find_elements("css selector", "th")]
        k = headers.index("id_test") + 1
        first = head.find_element("css selector", f"tbody tr td:nth-child({k})").text
        acc = agg[
            (agg["dataset"] == dataset)
            & (agg["metric"] == "accuracy")
            & (agg["split"] == "id_test")
            & (agg["group_value"] == "")
        ]
        assert float(first.split()[0]) == pytest.approx(acc["mean"].max(), abs=5e-4)
        rows = len(head.find_elements("css selector", "tbody tr"))
        assert rows == acc["setting_id"].nunique()
    count = browser.find_element("css selector", "#t_synth_a-count").get_attribute("textContent")
    n = int(((agg["dataset"] == "synth_a") & (agg["group_value"] == "")).sum())
    assert count == f"showing {MAX_SHOWN} of {n} rows"
    screenshot(browser, tmp_path / "leaderboard_page_10000_runs.png")


def test_a_plot_no_section_claims_is_shown_with_every_number(tmp_path):
    from harness.report.sections import registered_sections

    png = tmp_path / "plots" / "toy" / "zz_new_plot.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG")
    agg = aggregate(golden_table())
    assert all("zz_new_plot" not in s.plots for s in registered_sections())
    path = write_page(agg, {"toy": {"zz_new_plot": [png]}}, tmp_path / "index.html")
    text = path.read_text()
    assert text.count('src="plots/toy/zz_new_plot.png"') == 1
    assert text.index('id="t_toy-details"') < text.index("zz_new_plot.png")
