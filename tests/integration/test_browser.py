"""The product in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright
for Python through ``executable_path``) against daphne and a real ``qcluster``.

A user logs in, launches an experiment from the admin, watches its live page (the counters and
the charts move, the markers of its faults appear, the verdict appears), launches it again from
the page and cancels that run from the page. Screenshots are saved in ``ARTIFACTS`` (printed at the end of the test).
With ``IMQ_DOCS_SCREENSHOTS=1`` it also writes the two pictures of the docs (the admin's run page and
the live page) to ``docs/img/``: only when asked, so that a normal run never rewrites committed files.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.commands import PASSWORD
from tests.support.servers import unavailable
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

CHROMIUM = os.environ.get("IMQ_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("IMQ_TEST_ARTIFACTS", ROOT / ".test-artifacts"))
DOCS_IMAGES = ROOT / "docs" / "img"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the test extra: pip install -e .[test]"
    )
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (python3 dev.py test does, as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        yield browser
        browser.close()


def docs_picture(page, name: str, down_to: str | None = None) -> None:
    """Save the page as ``docs/img/<name>`` when ``IMQ_DOCS_SCREENSHOTS=1`` asks for the docs' pictures:
    the whole page, or from its top down to the element ``down_to`` and a line below it (a small PNG)."""
    if os.environ.get("IMQ_DOCS_SCREENSHOTS") != "1":
        return
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    path = str(DOCS_IMAGES / name)
    if down_to is None:
        page.screenshot(path=path, full_page=True)
    else:
        box = page.locator(down_to).bounding_box()
        assert box is not None, f"{down_to} is not shown on {page.url}"
        width = page.viewport_size["width"]
        page.screenshot(
            path=path, full_page=True, clip={"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 48}
        )
    print(f"docs picture written: {path}")


def number(text: str) -> float:
    """The figure a counter shows ("1,234.5" -> 1234.5); 0 for a dash."""
    digits = re.sub(r"[^0-9.]", "", text)
    return float(digits) if digits else 0.0


def test_launch_watch_and_cancel_in_a_real_browser(stack, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = stack.manage(
        "shell",
        "-c",
        "from experiments.models import Experiment; print(Experiment.objects.create("
        "name='browser-steady', backend='memory-mp', rate_eps=2000.0, duration_s=6.0, "
        "warmup_s=0.0, faults=['poison@1:2', 'pause-consumer@2:0.5']).pk)",
    )
    experiment = int(out.stdout.strip().splitlines()[-1])
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(TIMEOUT_MS)

    # log in, open the experiment, launch it from the admin's list
    page.goto(stack.url("/admin/login/?next=/admin/experiments/experiment/"))
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(stack.url(f"/admin/experiments/experiment/{experiment}/change/"))
    assert page.input_value("#id_name") == "browser-steady"
    page.goto(stack.url("/admin/experiments/experiment/"))
    page.check(f"input.action-select[value='{experiment}']")
    page.select_option("select[name=action]", "launch")
    page.click("button[name=index]")
    page.click("input[type=submit].default")  # the Launch page's confirm button (K = 1)
    page.wait_for_selector("ul.messagelist li.success")
    run_id = stack.query("SELECT MAX(id) FROM experiments_run WHERE experiment_id = ?", experiment)[0][0]

    # the live page: counters and charts move while it runs, then the verdict appears
    page.goto(stack.url(f"/dashboard/runs/{run_id}/"))
    page.wait_for_function("() => document.querySelector('#status').dataset.state === 'running'")
    first = wait_until(lambda: number(page.inner_text("#unique")), 60, "the unique counter to move", interval_s=0.2)
    page.wait_for_selector("#charts canvas")
    wait_until(
        lambda: number(page.inner_text("#unique")) > first, 30, "the unique counter to move again", interval_s=0.2
    )
    points = page.evaluate("() => document.querySelectorAll('#charts canvas').length")
    assert points >= 3, "one chart per figure: throughput, latency, depth"
    page.screenshot(path=str(ARTIFACTS / "live-run-running.png"), full_page=True)
    page.wait_for_function("() => document.body.dataset.state === 'ended'")
    assert page.inner_text("#verdict").strip() == "exact"
    assert page.inner_text("#status").strip() == "succeeded"
    assert number(page.inner_text("#unique")) == 12_000
    # each fault is a marker on the charts and a row under them, with what came of it
    markers = page.inner_text("#charts table.imq-markers")
    for words in ("poison", "2 malformed message(s) sent", "pause-consumer", "consumer 0", "resume"):
        assert words in markers, markers
    page.screenshot(path=str(ARTIFACTS / "live-run-ended.png"), full_page=True)
    docs_picture(page, "live-page.png")
    page.goto(stack.url(f"/admin/experiments/run/{run_id}/change/"))
    assert "pause-consumer@2:0.5" in page.inner_text("table.imq-faults")
    page.wait_for_selector(".imq-charts table.imq-markers")
    page.screenshot(path=str(ARTIFACTS / "admin-run-faults.png"), full_page=True)
    docs_picture(page, "admin-run-page.png", down_to="table.imq-faults")
    page.goto(stack.url(f"/dashboard/runs/{run_id}/"))

    # launch it again from the page, then cancel that run from its page
    page.click("#launch-again")
    page.wait_for_url(re.compile(r"/dashboard/runs/\d+/$"))
    second = int(re.search(r"/dashboard/runs/(\d+)/$", page.url).group(1))
    assert second != run_id
    page.wait_for_function("() => document.querySelector('#status').dataset.state === 'running'")
    page.click("#cancel")
    page.wait_for_function("() => document.body.dataset.state === 'ended'")
    assert page.inner_text("#status").strip() == "cancelled"
    page.screenshot(path=str(ARTIFACTS / "live-run-cancelled.png"), full_page=True)
    assert stack.run_row(second)["status"] == "cancelled"

    # the overview lists both runs
    page.goto(stack.url("/dashboard/"))
    page.wait_for_selector(f"#runs [data-run-id='{second}']")
    assert page.locator(f"#runs [data-run-id='{run_id}']").count() == 1
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()
    print(f"screenshots in {ARTIFACTS}")
