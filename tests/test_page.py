"""The leaderboard page in a real headless browser (Debian's chromium + chromedriver; `.ci/run`
installs them when missing): sort by clicking a header, filter, and keep a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report.aggregate import aggregate
from harness.report.page import COLUMNS, write_page
from harness.report.plots import dataset_plots
from tests.test_export import table as golden_table

ARTIFACTS = Path(os.environ.get("SHIFTBENCH_ARTIFACTS", Path(__file__).parent / "artifacts"))
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
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    table = golden_table()
    agg = aggregate(table)
    plots = {"toy": dataset_plots(table, agg, root, root / "plots" / "toy")}
    return write_page(agg, plots, root / "index.html"), agg


def cells(driver, column: str) -> list[str]:
    k = COLUMNS.index(column) + 1
    return [
        td.text for td in driver.find_elements("css selector", f"#t_toy tbody td:nth-child({k})")
    ]


def test_sort_by_clicking_a_header_filter_and_screenshot(browser, page):
    path, agg = page
    browser.get(path.as_uri())
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
    ).select_by_value("erm")
    assert set(cells(browser, "method")) == {"erm"}
    assert len(cells(browser, "method")) == int((shown["method"] == "erm").sum())
    # the plots beside the table load from disk
    images = browser.find_elements("css selector", ".plots img")
    assert images and all(
        browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "leaderboard_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0


def test_text_in_the_data_is_escaped(tmp_path, browser):
    agg = aggregate(golden_table().assign(method="<b>x</b>&"))
    path = write_page(agg, {}, tmp_path / "index.html")
    browser.get(path.as_uri())
    assert set(cells(browser, "method")) == {"<b>x</b>&"}
    assert not browser.find_elements("css selector", "#t_toy tbody b")
