"""The playground in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium with the driver given explicitly): `pdp playground` runs as a real process on an
ephemeral loopback port; an error typed into the policy shows in #errors and goes once fixed; a
request run shows its decision and the relation hops in #trace; the bundle's tests pass in #tests.
Screenshots go to the test's temp dir. Under CI=true a missing browser fails, never skips."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SAAS = Path(__file__).parents[2] / "bundles" / "saas"
DEADLINE = 30.0  # seconds any one wait may take before the test fails


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium or chromedriver missing under CI: .ci/run installs them")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install them)")
    return chromium, driver


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "saas"
    shutil.copytree(SAAS, root)
    return root


@pytest.fixture
def playground(bundle: Path) -> Iterator[str]:
    """A real `pdp playground` process on port 0: the URL it prints. Stopped by the fixture."""
    with subprocess.Popen(
        [sys.executable, "-m", "pdp.cli", "playground", str(bundle), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                if not sel.select(timeout=DEADLINE):
                    pytest.fail("the playground printed no URL in time")
            line = proc.stdout.readline()
            assert line.startswith("pdp playground: http://127.0.0.1:"), line
            yield line.split()[2]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode is not None


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    chromium, driver_path = _browser()
    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium sends no usage statistics
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    # The driver given explicitly: Selenium Manager is never asked to download one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_edit_see_errors_run_a_request_and_the_tests(
    playground: str, browser: object, bundle: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    wait = WebDriverWait(driver, DEADLINE)
    before = snapshot(bundle)
    driver.get(playground)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready=true]")))
    errors = driver.find_element(By.ID, "errors")
    assert errors.get_attribute("data-count") == "0"

    # An error typed into the policy shows in #errors, at its line and column.
    Select(driver.find_element(By.ID, "policy-file")).select_by_value("policies/rules.pdp")
    editor = driver.find_element(By.ID, "policy")
    editor.click()
    editor.send_keys(Keys.CONTROL, Keys.END)
    lines = editor.get_attribute("value").count("\n") + 2
    editor.send_keys("\npermit typo: read on document when resource.classification = 9")
    wait.until(lambda d: errors.get_attribute("data-count") not in ("0", None))
    first = errors.find_element(By.CSS_SELECTOR, "li.error")
    assert first.text.startswith(f"policies/rules.pdp:{lines}:")
    assert "unexpected `=`" in first.text and "hint:" in first.text
    driver.save_screenshot(str(tmp_path / "playground-error.png"))

    # Fixed, the error goes.
    editor.send_keys(Keys.BACKSPACE * 3, "== 99")
    wait.until(lambda d: errors.get_attribute("data-count") == "0")
    assert errors.find_elements(By.CSS_SELECTOR, "li.error") == []

    # A request through nested groups and folder inheritance: ALLOW and its hops.
    request = {
        "subject": "user:erin",
        "subject_attrs": {"tenant": "acme", "roles": []},
        "action": "read",
        "resource": "document:spec-1",
        "resource_attrs": {"tenant": "acme", "owner": "alice", "classification": 0},
        "context": {"hour": 10},
    }
    box = driver.find_element(By.ID, "request")
    box.clear()
    box.send_keys(json.dumps(request))
    driver.find_element(By.ID, "run").click()
    decision = driver.find_element(By.ID, "decision")
    wait.until(lambda d: decision.text.startswith(("ALLOW", "DENY")))
    assert decision.text.startswith("ALLOW")
    assert "shared_read" in decision.text
    trace = driver.find_element(By.ID, "trace")
    hops = [
        h.find_element(By.CLASS_NAME, "hop-id").text
        for h in trace.find_elements(By.CLASS_NAME, "hop")
    ]
    assert hops[0] == "user:erin"
    assert "folder:acme-root#viewer" in hops
    assert hops[-1] == "document:spec-1#view"
    assert "tenant_isolation" in trace.text  # the forbids considered are in the tree too
    assert "policies/rules.pdp:3:1" in trace.text and str(bundle) not in trace.text

    # The bundle's tests, run against the drafts.
    driver.find_element(By.ID, "run-tests").click()
    tests = driver.find_element(By.ID, "tests")
    wait.until(lambda d: tests.get_attribute("data-failed") is not None)
    assert tests.get_attribute("data-failed") == "0"
    assert int(tests.get_attribute("data-passed") or 0) > 10
    assert "0 failed" in tests.text

    driver.set_window_size(1400, 1700)  # the whole page in one picture
    driver.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "playground.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    # Nothing was saved: the bundle on disk is as it was.
    assert snapshot(bundle) == before
    print(f"screenshot: {shot}")
