"""The review page in a real headless browser (Debian chromium + chromedriver, driven by selenium).

scripts/test.sh installs chromium and chromium-driver from Debian when they are missing; nothing
is downloaded from a browser or driver hub (SE_OFFLINE).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import pytest

from engine.api import ServeConfig, create_app
from engine.config import parse_task
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize

from test_api import TASK

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "Debian chromium and chromium-driver are not installed (scripts/test.sh installs them)"
        if os.environ.get("SEEDBED_REQUIRE_INTEGRATION"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ["SE_OFFLINE"] = "true"  # selenium must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def served(hash_index, tmp_path):
    import uvicorn

    out = tmp_path / "run"
    synthesize(parse_task(TASK), hash_index.index, ScriptedLLM(), SynthOptions(out=out))
    config = ServeConfig(indexes={"reuters": hash_index.index}, auth=False, jobs_dir=tmp_path / "jobs",
                         datasets={"run": out})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config, ScriptedLLM()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", out
    server.should_exit = True
    thread.join(10)


def test_rejecting_an_example_in_the_browser_saves_it(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, out = served
    original = (out / "dataset.jsonl").read_bytes()
    browser.get(f"{url}/review")
    wait = WebDriverWait(browser, 30)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "tr[data-row-id='k0']")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr")
    assert len(rows) == 4  # 2 labels x 2 examples, no rejections
    first = rows[0]
    passage = first.find_elements(By.CSS_SELECTOR, "td.passage")[0].text
    assert passage and first.find_elements(By.CSS_SELECTOR, "td.text")[0].text

    first.find_element(By.CSS_SELECTOR, "button.reject").click()
    wait.until(lambda _: "verdict-reject" in first.get_attribute("class"))
    assert "saved: k0 reject" in browser.find_element(By.ID, "status").text
    saved = [json.loads(line) for line in (out / "review.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(e["row_id"], e["verdict"]) for e in saved] == [("k0", "reject")]
    assert (out / "dataset.jsonl").read_bytes() == original  # the original is never rewritten

    Select(browser.find_element(By.ID, "label")).select_by_value("Grain")
    browser.find_element(By.ID, "load").click()
    wait.until(lambda _: browser.find_element(By.ID, "status").text.startswith("2 of 4"))
    labels = [row.find_elements(By.TAG_NAME, "td")[1].text for row in browser.find_elements(By.CSS_SELECTOR, "#rows tr")]
    assert labels == ["Grain", "Grain"]

    browser.refresh()  # the verdict survives a reload: it comes from review.jsonl
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "tr[data-row-id='k0'].verdict-reject")))
