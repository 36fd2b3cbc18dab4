"""End to end in headless Chromium: create a study, two raters answer every image, check the report.

The browser is Debian's ``chromium`` (installed by ``make test`` when missing and root), driven by
Playwright with ``executable_path``; Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_vtt_stats import cp_by_definition  # noqa: E402
from test_vtt_support import SHAPE, leaks, start_server, stop_server, write_sources  # noqa: E402

from synthex.vtt.cli import vtt  # noqa: E402
from synthex.vtt.study import decode_uint16, load_key, load_study  # noqa: E402

CHROMIUM = os.environ.get("SYNTHEX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# What each rater answers, by true label and rank of the image id within its label (hand-chosen):
#   rater a: synthetic -> (synthetic 5, synthetic 3, real 2); real -> (real 4, real 5, synthetic 1)
#   rater b: synthetic -> (synthetic 4, real 3, real 1);      real -> (real 2, synthetic 2, real 5)
PLAN = {
    "a": {"synthetic": [("synthetic", 5), ("synthetic", 3), ("real", 2)], "real": [("real", 4), ("real", 5), ("synthetic", 1)]},
    "b": {"synthetic": [("synthetic", 4), ("real", 3), ("real", 1)], "real": [("real", 2), ("synthetic", 2), ("real", 5)]},
}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the python 'playwright' package is not installed (dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (`make test` does it when run as root)")
    user_data = tempfile.mkdtemp(prefix="vtt-chromium-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(user_data, ignore_errors=True)


def canvas_pixels(page) -> np.ndarray:
    data = page.evaluate("""() => {
        const c = document.getElementById('image');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.array(data, dtype=np.uint8).reshape(*SHAPE, 4)[..., 0]


def rate(page, planned: dict[str, tuple[str, int]], count: int, keyboard: bool = False) -> list[str]:
    """Answer ``count`` images in the browser as the page presents them; return the ids seen."""
    seen = []
    for _ in range(count):
        page.wait_for_selector("canvas#image[data-drawn='1']")
        image_id = page.get_attribute("#answer-form", "action").rstrip("/").split("/")[-1]
        choice, confidence = planned[image_id]
        if keyboard:  # r / s, 1-5, Enter
            page.keyboard.press(choice[0])
            page.keyboard.press(str(confidence))
            with page.expect_navigation():
                page.keyboard.press("Enter")
        else:
            page.check(f"input[name=answer][value={choice}]")
            page.check(f"input[name=confidence][value='{confidence}']")
            with page.expect_navigation():
                page.click("#submit")
        seen.append(image_id)
    return seen


def test_two_raters_in_chromium_and_the_report(browser, tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=2, n_dicom=1, shard_sizes=(2, 1))
    runner = CliRunner()
    result = runner.invoke(vtt, ["create", "--real", str(real), "--synthetic", str(synthetic), "--n", "3",
                                 "--out", str(tmp_path / "study"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    study = load_study(tmp_path / "study")
    labels = load_key(tmp_path / "study" / "key.json", study)
    by_label = {lab: sorted(i for i in study.ids if labels[i] == lab) for lab in ("real", "synthetic")}
    planned = {r: {i: PLAN[r][lab][rank] for lab, ids in by_label.items() for rank, i in enumerate(ids)} for r in PLAN}

    proc, base = start_server(study.root)
    served = []
    page = browser.new_page()
    page.on("response", lambda r: served.append((r.url, str(r.headers), r.body() if r.ok else b"")))
    try:
        # rater a: joins (gets a private link), 2 answers, pause, comes back with the link, finishes
        page.goto(base + "/")
        page.fill("#rater", "a")
        with page.expect_navigation():
            page.click("#begin")
        page.wait_for_selector("canvas#image[data-drawn='1']")
        private_link = page.url
        assert re.fullmatch(re.escape(base) + r"/r/[0-9a-f]{32}", private_link)
        assert private_link in page.inner_text("#private-link")

        # full resolution on the canvas, default window = full 16-bit range; then a narrow window
        image_id = page.get_attribute("#answer-form", "action").split("/")[-1]
        stored = decode_uint16(study.image_path(image_id).read_bytes()).astype(np.float64)
        assert page.evaluate("[document.getElementById('image').width, document.getElementById('image').height]") == [SHAPE[1], SHAPE[0]]
        expected = np.clip((stored - (32768 - 65535 / 2)) * 255 / 65535, 0, 255)
        assert np.abs(canvas_pixels(page) - expected).max() <= 1
        page.evaluate("""() => { for (const [id, v] of [['window', 8000], ['level', 20000]]) {
            const el = document.getElementById(id); el.value = v; el.dispatchEvent(new Event('input')); } }""")
        expected = np.clip((stored - (20000 - 4000)) * 255 / 8000, 0, 255)
        assert np.abs(canvas_pixels(page) - expected).max() <= 1
        assert (expected == 0).any() and (expected == 255).any()  # the narrow window clips both ends

        # a double submission from the page (two requests at once) is stored once, and the second is told so
        choice, confidence = planned["a"][image_id]
        statuses = page.evaluate("""([choice, confidence]) => {
            const form = document.getElementById('answer-form');
            const send = () => { const d = new FormData(); d.append('answer', choice); d.append('confidence', confidence);
                                 d.append('csrf', form.elements['csrf'].value);
                                 return fetch(form.action, {method: 'POST', body: d}).then(r => r.status); };
            return Promise.all([send(), send()]); }""", [choice, str(confidence)])
        assert sorted(statuses) == [200, 409]  # one followed its redirect; the repeat got the "locked" message
        page.reload()
        seen = [image_id] + rate(page, planned["a"], 1)
        page.click("#pause")
        page.wait_for_selector("#paused")
        page.goto(private_link)
        assert "Image 3 of 6" in page.inner_text("#progress")
        seen += rate(page, planned["a"], 4)
        assert "All 6 images are answered" in page.inner_text("#done")
        assert sorted(seen) == sorted(study.ids)
        assert seen == study.rater_order("a")

        # rater b in a fresh page, with the keyboard
        page.goto(base + "/")
        page.fill("#rater", "b")
        with page.expect_navigation():
            page.click("#begin")
        rate(page, planned["b"], 6, keyboard=True)
        assert "All 6 images are answered" in page.inner_text("#done")
    finally:
        page.close()
        stop_server(proc)

    # blinding in the browser: every URL, header and body the page received
    assert served and not any(leaks(url) or leaks(headers) or leaks(body) for url, headers, body in served)

    result = runner.invoke(vtt, ["report", str(study.root)])
    assert result.exit_code == 0, result.output
    report = json.loads((study.root / "report" / "report.json").read_text())
    a, b, pooled = report["raters"]["a"], report["raters"]["b"], report["pooled"]

    def kn(m, key):
        return m[key]["k"], m[key]["n"]

    # hand counts from PLAN: a is right on 2/3 synthetic + 2/3 real, b on 1/3 synthetic + 2/3 real
    assert (kn(a, "accuracy"), kn(a, "sensitivity"), kn(a, "specificity")) == ((4, 6), (2, 3), (2, 3))
    assert (kn(b, "accuracy"), kn(b, "sensitivity"), kn(b, "specificity")) == ((3, 6), (1, 3), (2, 3))
    assert (kn(pooled, "accuracy"), kn(pooled, "sensitivity"), kn(pooled, "specificity")) == ((7, 12), (3, 6), (4, 6))
    for m, key in [(a, "accuracy"), (b, "sensitivity"), (pooled, "accuracy"), (pooled, "specificity")]:
        assert (m[key]["ci_low"], m[key]["ci_high"]) == pytest.approx(cp_by_definition(m[key]["k"], m[key]["n"]), abs=1e-9)
    # two-sided exact binomial tests: a 4/6 -> 2 * 22/64; b 3/6 -> 1; pooled 7/12 -> 2 * 1586/4096
    assert (a["chance_test_p"], b["chance_test_p"], pooled["chance_test_p"]) == pytest.approx((44 / 64, 1.0, 3172 / 4096))
    # AUC = P(score of a synthetic image > score of a real one), scores = +-confidence:
    # a: synthetic {5, 3, -2} vs real {-4, -5, 1}: 8/9; b: {4, -3, -1} vs {-2, 2, -5}: 6/9;
    # pooled: 28.5 of 36 pairs (one tie, -2 vs -2).
    assert (a["roc"]["auc"], b["roc"]["auc"], pooled["roc"]["auc"]) == pytest.approx((8 / 9, 6 / 9, 28.5 / 36))
    # Fleiss' kappa: 3 unanimous + 3 split images -> P-bar = 1/2; 5/12 synthetic -> P-e = 74/144; kappa = -1/35
    assert report["agreement"]["fleiss_kappa"] == pytest.approx(-1 / 35)
    assert report["agreement"]["n_images_rated_by_all"] == 6
    assert "Fleiss' kappa = -0.029" in (study.root / "report" / "report.md").read_text()
