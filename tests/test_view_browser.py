"""`moaa view` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, which
`make test` installs where missing when it runs as root: `make browser`) driven by selenium through
the review: open a version, filter by verdict, open a pair and see both orders' verdicts, reject a
row, edit another, apply; the new version lacks the rejected row, has the edit, verifies against its
manifest and loads with `load_dataset`. A screenshot of each page lands in the test's tmp folder
(and, with MOAA_VIEW_SCREENSHOTS=DIR, small copies of the version, SFT-trace and DPO-pair pages in
DIR: the README's images come from `MOAA_VIEW_SCREENSHOTS=docs/images`).

The version comes from the real pipeline against the OpenAI test server (tests/view_helpers.py), and
the viewer is the `moaa view` command in a subprocess, read from the URL it prints.

Run: .venv/bin/python -m pytest tests/test_view_browser.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from version_helpers import _load
from view_helpers import make_view_version, verdict

from moaa.cli import main
from moaa.view import paging
from tests.pipeline_helpers import cli_env

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")  # fmt: skip
README_SHOTS = {"version": "view-version.png", "sft-trace": "view-sft-trace.png", "dpo-pair": "view-dpo-pair.png"}


@pytest.fixture(scope="module")
def version(tmp_path_factory, prefect_harness):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return make_view_version(tmp_path_factory.mktemp("view"), monkeypatch)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip("headless Chromium is not installed: `make browser` as root, or apt-get install chromium "
                    "chromium-driver")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="moaa-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def viewer(version, tmp_path):
    """`moaa view NAME@vN --port 0` in a subprocess; the URL it prints."""
    root = version.parent.parent
    cmd = [sys.executable, "-m", "moaa.cli", "view", f"{version.parent.name}@{version.name}", "--root", str(root),
           "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("moaa view: http://127.0.0.1:"), line + proc.stderr.read()
        yield line.split()[2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def shoot(driver, folder: Path, name: str) -> Path:
    """A screenshot of the whole page (Chrome's DevTools capture beyond the window); a small copy for
    the README when asked."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})  # fmt: skip
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    docs = os.environ.get("MOAA_VIEW_SCREENSHOTS")
    if docs and name in README_SHOTS:
        small(path, Path(docs) / README_SHOTS[name])
    return path


def small(source: Path, target: Path, width: int = 1000, height: int = 1050) -> None:
    """The top of a screenshot, scaled to `width` and quantised to 64 colours: a PNG of ~100 KB."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    scaled = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    scaled.crop((0, 0, width, min(height, scaled.height))).quantize(64).save(target, optimize=True)


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def press(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def table_ids(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [tr.get_attribute("data-pid") for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tbody tr[data-pid]")]


def test_review_a_version_in_a_browser_and_apply_it(version, viewer, browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, shots = browser, tmp_path
    sft_ids = [r["prompt_id"] for r in paging.read_page(paging.config_table(version, "sft"), paging.Query()).rows]

    # open the version
    driver.get(viewer)
    assert driver.find_element(By.TAG_NAME, "h1").text == "view-demo@v2"
    assert table_ids(driver) == sft_ids
    shoot(driver, shots, "version")

    # filter by verdict
    Select(driver.find_element(By.ID, "filter-verdict")).select_by_visible_text("pass")
    driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(lambda: "verdict=pass" in driver.current_url)
    passing = [pid for pid in sft_ids if (verdict(pid) or {}).get("status") == "pass"]
    assert passing and table_ids(driver) == passing
    assert driver.find_element(By.ID, "count").text.startswith(f"{len(passing)} sft rows match")
    shoot(driver, shots, "filtered")

    # open a pair and see both orders' verdicts, with their rationales
    driver.find_element(By.CSS_SELECTOR, "nav.tabs a[href$='/dpo']").click()
    wait_for(lambda: driver.current_url.endswith("/dpo"))
    driver.find_elements(By.CSS_SELECTOR, "#rows tbody tr[data-pid] a")[0].click()
    wait_for(lambda: driver.find_elements(By.ID, "verdicts"))
    orders = driver.find_elements(By.CSS_SELECTOR, "#verdicts tbody tr")
    assert len(orders) == 3  # three candidates: three pairs, each judged in both orders
    for row in orders:
        cells = row.find_elements(By.TAG_NAME, "td")
        assert "shown first:" in cells[2].text and "shown first:" in cells[4].text
        assert cells[3].text and cells[5].text  # the rationale of each order
    assert driver.find_elements(By.CSS_SELECTOR, "#verdicts tr.the-pair")
    assert driver.find_elements(By.CSS_SELECTOR, ".card.cand.chosen") and driver.find_elements(
        By.CSS_SELECTOR, ".card.cand.rejected")  # fmt: skip
    shoot(driver, shots, "dpo-pair")

    # reject a row (keyboard), then edit the next one
    driver.get(f"{viewer}sft/{sft_ids[0]}")
    assert "How the mixture made it" in driver.page_source
    assert driver.find_elements(By.CSS_SELECTOR, ".card.reader .gate.ok")  # the aggregate passed the gates
    shoot(driver, shots, "sft-trace")
    press(driver, "r")
    wait_for(lambda: driver.find_element(By.ID, "state").text == "reject")
    press(driver, "n")
    wait_for(lambda: driver.current_url.endswith(f"/sft/{sft_ids[1]}"))
    press(driver, "e")
    box = driver.find_element(By.CSS_SELECTOR, "#editor textarea")
    wait_for(lambda: box.is_displayed() and box.get_attribute("value"))
    box.clear()
    box.send_keys("An answer a person corrected.")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait_for(lambda: driver.find_element(By.ID, "state").text.startswith("edit"))
    decisions = [json.loads(x) for x in (version.parent / f"{version.name}.review.jsonl").read_text().splitlines()]
    assert [(d["prompt_id"], d["action"]) for d in decisions] == [(sft_ids[0], "reject"), (sft_ids[1], "edit")]
    shoot(driver, shots, "edited")

    # apply: the next version, opened at once
    driver.get(viewer)
    driver.find_element(By.ID, "apply").click()
    driver.switch_to.alert.accept()
    wait_for(lambda: driver.current_url.endswith("/d/view-demo/v3/"), timeout=60)
    assert driver.find_element(By.TAG_NAME, "h1").text == "view-demo@v3"
    assert table_ids(driver) == sft_ids[1:]
    shoot(driver, shots, "applied")

    v3 = version.parent / "v3"
    assert main(["datasets", "verify", "view-demo@v3", "--root", str(version.parent.parent)]) == 0
    loaded = _load(v3, "sft", tmp_path / "hf-cache", monkeypatch)
    rows = {r["prompt_id"]: r for split in loaded.values() for r in split}
    assert sorted(rows) == sorted(sft_ids[1:])
    assert rows[sft_ids[1]]["messages"][-1]["content"] == "An answer a person corrected."
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "applied.png",
        "dpo-pair.png",
        "edited.png",
        "filtered.png",
        "sft-trace.png",
        "version.png",
    ]
