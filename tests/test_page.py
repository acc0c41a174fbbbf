"""The leaderboard page in a real headless browser (Debian's chromium + chromedriver; `.ci/run`
installs them when missing): sort by clicking a header, filter, and keep a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report.aggregate import aggregate
from harness.report.headline import headline
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
    ).select_by_value("erm")
    assert set(cells(browser, "method")) == {"erm"}
    assert len(cells(browser, "method")) == int((shown["method"] == "erm").sum())
    # the plots beside the table load from disk
    images = browser.find_elements("css selector", ".plots img")
    assert images and all(
        browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images
    )
    # every resource the page loaded (the plots) came from disk: no request left the machine
    urls = requested_urls(browser)
    assert any(u.endswith(".png") for u in urls), urls
    assert all(u.startswith(("file://", "data:")) for u in urls), urls
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "leaderboard_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0


def test_text_in_the_data_is_escaped(tmp_path, browser):
    agg = aggregate(golden_table().assign(method="<b>x</b>&"))
    path = write_page(agg, {}, tmp_path / "index.html")
    browser.get(path.as_uri())
    open_details(browser)
    assert set(cells(browser, "method")) == {"<b>x</b>&"}
    assert not browser.find_elements("css selector", "#t_toy tbody b")
