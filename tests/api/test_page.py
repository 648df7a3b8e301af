"""The web page at / in a real headless Chromium (Debian's), against the real server.

Needs /usr/bin/chromium (`make system-packages`); skipped without it, except under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from service.evaluation.report_config import REPORT_JSON, REPORT_PLOT
from service.run.paths import RunPaths
from tests.live_server import LiveServer, start_server, wait_ready

CHROMIUM = shutil.which("chromium")
MISSING = "Debian's chromium is not installed: `make system-packages` installs it"
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(MISSING, allow_module_level=True)  # before the fixtures train anything

WAIT = 30_000  # ms: the machine may be busy; every wait ends as soon as the page is there

ALL_LOADED = """selector => {
    const images = [...document.querySelectorAll(selector)];
    return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.fail(MISSING)  # CI is set: a missing install step must fail
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


@dataclass
class Visit:
    """What the page asked for and what went wrong in it, while a test drives it."""

    server: LiveServer
    requested: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # uncaught errors, CSP violations

    def check(self) -> None:
        """Every request went to the server itself, and the page threw nothing."""
        origin = urlsplit(self.server.url)
        for url in self.requested:
            parts = urlsplit(url)
            if parts.scheme not in ("data", "blob"):
                assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url
        assert any(urlsplit(url).path == "/v1/info" for url in self.requested)
        assert self.problems == []

    def on_console(self, message: ConsoleMessage) -> None:
        # an expected 4xx is logged as "Failed to load resource"; any other error is a defect
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def count(self, path: str) -> int:
        return sum(urlsplit(url).path == path for url in self.requested)


def open_page(page: Page, server: LiveServer) -> Visit:
    visit = Visit(server)
    page.on("request", lambda request: visit.requested.append(request.url))
    page.on("pageerror", lambda error: visit.problems.append(str(error)))
    page.on("console", visit.on_console)
    page.goto(f"{server.url}/")
    return visit


def api_sample(server: LiveServer, **body: Any) -> list[dict[str, Any]]:
    response = httpx.post(f"{server.url}/v1/sample", json=body, timeout=60)
    assert response.status_code == 200, response.text
    samples: list[dict[str, Any]] = response.json()["samples"]
    return samples


def wait_for_images(page: Page, selector: str) -> None:
    page.wait_for_function(ALL_LOADED, arg=selector, timeout=WAIT)


def draw(page: Page, count: int, **controls: str) -> None:
    """Set the controls, click Sample and wait for `count` grid cells with loaded images."""
    expect(page.locator("#gamma option")).not_to_have_count(0, timeout=WAIT)
    for name, value in controls.items():
        field = page.locator(f"#{name}")
        if name in ("gamma", "mode"):
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_test_id("sample-button").click()
    expect(page.get_by_test_id("sample")).to_have_count(count, timeout=WAIT)
    expect(page.get_by_test_id("sample-button")).to_be_enabled(timeout=WAIT)
    wait_for_images(page, "[data-testid=sample-image]")


def open_first_finished(page: Page) -> int:
    """Click the first sample that finished; wait for its nearest training images. Its index."""
    cell = page.locator("[data-testid=sample][data-ok=true]").first
    index = int(cell.get_attribute("data-index") or "-1")
    cell.get_by_role("button").click()
    expect(page.get_by_test_id("detail")).to_be_visible()
    expect(page.get_by_test_id("hit")).to_have_count(5, timeout=WAIT)
    wait_for_images(page, "[data-testid=hit-image]")
    return index


def test_page_samples_and_shows_nearest_training_images(
    page: Page, live_server: LiveServer
) -> None:
    visit = open_page(page, live_server)
    expect(page.locator("#gamma option")).to_have_count(2, timeout=WAIT)
    assert page.locator("#gamma option").evaluate_all("os => os.map(o => o.value)") == ["3", "5"]
    expect(page.locator("#gamma")).to_have_value("5")
    expect(page.locator("#mode")).to_have_value("exact")
    expect(page.get_by_test_id("train-count")).to_have_text("512")
    expect(page.locator("tr[data-gamma='5'][data-positional='false']")).to_have_attribute(
        "data-arvm", "true"
    )
    expect(page.locator("tr[data-gamma='3']")).to_have_attribute("data-arvm", "false")
    expect(page.get_by_test_id("report-missing")).to_contain_text("latentgram report")

    draw(page, 16)  # the defaults: n 16, γ 5, exact, seed 0, T 1
    expected = api_sample(live_server, n=16, gamma=5, mode="exact", seed=0, temperature=1.0)
    cells = page.get_by_test_id("sample")
    for sample, cell in zip(expected, cells.all(), strict=True):
        assert cell.get_attribute("data-ok") == str(sample["ok"]).lower()
        if sample["ok"]:
            src = cell.get_by_test_id("sample-image").get_attribute("src")
            assert src == f"data:image/png;base64,{sample['image_png']}"
            expect(cell.get_by_test_id("sample-facts")).to_have_text(
                f"neural 0% · {sample['backtracks']} backtracks, {sample['jumps']} jumps"
            )
        else:
            expect(cell.get_by_test_id("failure")).to_have_text(sample["failure"])
    finished = [s for s in expected if s["ok"]]
    assert page.get_by_test_id("sample-image").count() == len(finished) > 0

    index = open_first_finished(page)
    sample = expected[index]
    positions = page.get_by_test_id("position")
    expect(positions).to_have_count(16)  # latent_shape[1:] = 4 × 4
    shown = positions.evaluate_all("cs => cs.map(c => [c.dataset.by, c.dataset.gamma])")
    assert shown == [["exact", str(g)] for row in sample["answered_by"] for g in row]
    check_sources(page, sample)

    hits = httpx.post(
        f"{live_server.url}/v1/nearest", json={"bits": sample["bits"], "k": 5, "by": "latent"}
    ).json()["hits"]
    for hit, item in zip(hits, page.get_by_test_id("hit").all(), strict=True):
        assert item.get_attribute("data-id") == str(hit["id"])
        psnr = item.get_by_test_id("psnr").inner_text()
        assert re.fullmatch(r"\d+\.\d dB", psnr) and abs(float(psnr[:-3]) - hit["psnr"]) <= 0.051
        expect(item.get_by_test_id("hamming")).to_have_text(f"{hit['hamming']} bits")
        expect(item.get_by_test_id("label")).to_have_text(hit["label_name"])
        recon = item.get_by_test_id("psnr-reconstruction").inner_text()
        assert abs(float(recon[:-3]) - hit["psnr_reconstruction"]) <= 0.051
        memorized = hit["memorized"] or hit["memorized_reconstruction"]
        expect(item.get_by_test_id("memorized")).to_have_count(int(memorized))
        expect(item.get_by_test_id("exact-copy")).to_have_count(int(hit["exact_copy"]))
        src = item.get_by_test_id("hit-image").get_attribute("src")
        assert src == f"/v1/images/{hit['id']}"
    expect(page.get_by_test_id("error")).to_be_hidden()
    visit.check()


def check_sources(page: Page, sample: dict[str, Any]) -> None:
    """The mosaic shows, per position, the training image the API named for its window."""
    ids = [i for row in sample["examples"] for i in row]
    assert min(ids) >= 0  # an exact sample: a training image holds every window
    sources = page.get_by_test_id("source")
    expect(sources).to_have_count(len(ids))
    assert sources.evaluate_all("ls => ls.map(l => Number(l.dataset.id))") == ids
    hrefs = sources.evaluate_all("ls => ls.map(l => l.getAttribute('href'))")
    assert hrefs == [f"/v1/images/{i}" for i in ids]
    wait_for_images(page, "[data-testid=source-image]")
    alts = page.get_by_test_id("source-image").evaluate_all("is => is.map(i => i.alt)")
    assert alts == [f"training image {i}" for i in ids]
    distinct = len(set(ids))
    expect(page.get_by_test_id("sources-status")).to_have_text(
        f"{distinct} training image{'s' if distinct > 1 else ''} hold its windows."
    )


def test_neural_samples_are_neural_at_every_position(page: Page, live_server: LiveServer) -> None:
    visit = open_page(page, live_server)
    draw(page, 4, gamma="5", mode="neural", n="4", seed="2")
    for facts in page.get_by_test_id("sample-facts").all_inner_texts():
        assert facts.startswith("neural 100%")
    open_first_finished(page)
    positions = page.get_by_test_id("position")
    expect(positions).to_have_count(16)
    expect(page.locator("[data-testid=position][data-by=neural]")).to_have_count(16)
    expect(page.get_by_test_id("provenance")).to_contain_text("0 of 16 positions exact, 16 neural")
    expect(page.get_by_test_id("source-none")).to_have_count(16)
    expect(page.get_by_test_id("source")).to_have_count(0)
    visit.check()


def test_errors_show_the_server_message(page: Page, live_server: LiveServer) -> None:
    visit = open_page(page, live_server)
    draw(page, 2, n="2")
    error = page.get_by_test_id("error")
    draw(page, 2, gamma="3", mode="hybrid")  # γ = 3 has no γ-ARVM: 409, the old grid stays
    expect(error).to_be_visible(timeout=WAIT)
    expect(error).to_contain_text("no γ-ARVM trained for gamma=3")
    expect(page.get_by_test_id("sample-button")).to_have_text("Sample")

    page.locator("#mode").select_option("exact")
    page.locator("#temperature").fill("0")
    page.get_by_test_id("sample-button").click()
    expect(error).to_contain_text("temperature", timeout=WAIT)

    page.locator("#temperature").fill("1")
    page.locator("#n").fill("65")  # the page's own limit: no request is sent
    page.get_by_test_id("sample-button").click()
    expect(error).to_have_text("n must be in 1..64 on this page, got 65")
    assert visit.count("/v1/sample") == 3
    page.get_by_role("button", name="Dismiss the message").click()
    expect(error).to_be_hidden()

    page.locator("#n").fill("1")
    page.get_by_test_id("sample-button").click()
    expect(page.get_by_test_id("sample")).to_have_count(1, timeout=WAIT)
    expect(error).to_be_hidden()
    visit.check()


def png_file(path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size, (40, 90, 200)).save(path)


def test_api_key_and_memorization_report(
    page: Page, prepared_run: RunPaths, tmp_path: Path
) -> None:
    """A server with a key and a report: the page asks once, then every request carries it."""
    run = RunPaths(tmp_path / "run")
    shutil.copytree(prepared_run.root, run.root)
    run.reports.mkdir(exist_ok=True)
    summary = {  # the shape service/evaluation/report.py writes: one line per (γ, mode)
        "test baseline": "memorized 0.0% (vs reconstructions), 0.0% (raw), exact copies 0.0%",
        "g5-exact": "memorized 12.5% (vs reconstructions), 3.1% (raw), exact copies 1.6%",
    }
    (run.reports / REPORT_JSON).write_text(json.dumps({"summary": summary, "results": {}}))
    png_file(run.reports / REPORT_PLOT, (120, 80))
    for server in start_server(run, api_key="s3cret"):
        wait_ready(server)
        visit = open_page(page, server)
        expect(page.get_by_test_id("key-form")).to_be_visible(timeout=WAIT)
        expect(page.get_by_test_id("error")).to_be_hidden()
        page.get_by_label("Key").fill("s3cret")
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_test_id("key-form")).to_be_hidden()

        wait_for_images(page, "[data-testid=report-plot]")
        assert page.get_by_test_id("report-plot").evaluate("i => i.naturalWidth") == 120
        rows = page.get_by_test_id("summary-row")
        expect(rows).to_have_count(2, timeout=WAIT)
        assert rows.all_inner_texts() == [f"{key}\t{line}" for key, line in summary.items()]
        expect(page.get_by_test_id("report-missing")).to_be_hidden()

        draw(page, 2, n="2")
        open_first_finished(page)  # training images come through object URLs
        src = page.get_by_test_id("hit-image").first.get_attribute("src") or ""
        assert src.startswith("blob:")
        wait_for_images(page, "[data-testid=source-image]")
        hrefs = page.get_by_test_id("source").evaluate_all("ls => ls.map(l => l.href)")
        assert hrefs and all(href.startswith("blob:") for href in hrefs)
        assert page.evaluate("() => sessionStorage.getItem('latentgram.apiKey')") == "s3cret"
        visit.check()


def test_api_docs_render_offline(page: Page, live_server: LiveServer) -> None:
    """/docs lists the operations with every asset served by the app (no CDN)."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/sample" in " ".join(paths) and "/v1/nearest" in " ".join(paths)
    origin = urlsplit(live_server.url)
    assert all(urlsplit(u).netloc == origin.netloc for u in requested if u.startswith("http"))
