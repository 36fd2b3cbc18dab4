"""The rater web app: blinding of everything served, 404s, answer storage, locking, crash safety."""

from __future__ import annotations

import http.client
import json
import re
import signal
import sqlite3
import sys
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_vtt_support import SHAPE, leaks, start_server, stop_server, write_sources  # noqa: E402

from synthex.vtt.app import create_app  # noqa: E402
from synthex.vtt.cli import vtt  # noqa: E402
from synthex.vtt.store import AnswerStore  # noqa: E402
from synthex.vtt.study import create_study, decode_uint16, load_key  # noqa: E402


@pytest.fixture
def study(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=2, n_dicom=1, shard_sizes=(2, 1))
    return create_study(real, synthetic, tmp_path / "study", n=3, seed=5).study


@pytest.fixture
def client(study):
    return create_app(study.root).test_client()


_TOKENS: dict = {}


def token_of(study, rater: str) -> str:
    """The rater's private token (registered on first use, as `synthex vtt invite` does)."""
    key = (str(study.root), rater)
    if key not in _TOKENS:
        _TOKENS[key] = AnswerStore(study.answers_path).add_rater(rater)
    return _TOKENS[key]


def csrf_of(client, token: str) -> str:
    """The CSRF token of the rater's forms, read from their page as a browser would."""
    html = client.get(f"/r/{token}").get_data(as_text=True)
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def answer(client, rater, image_id, choice="real", confidence=3, study=None, elapsed="1200"):
    study = study or client.application.config["VTT_STUDY"]
    token = token_of(study, rater)
    data = {"answer": choice, "confidence": str(confidence), "elapsed_ms": elapsed, "csrf": csrf_of(client, token)}
    return client.post(f"/r/{token}/{image_id}", data=data)


def rows(study):
    with sqlite3.connect(study.answers_path) as db:
        return db.execute("SELECT rater, image_id, answer, confidence, revisions FROM answers ORDER BY rater, image_id").fetchall()


def normalized(html: str, image_id: str) -> str:
    html = html.replace(image_id, "ID")
    return re.sub(r"Image \d+ of \d+", "Image N of M", html)


def test_nothing_served_reveals_label_or_source(study, client):
    labels = load_key(study.root / "key.json", study)
    pages, header_sets, served = {}, {}, []
    alice = token_of(study, "alice")
    for image_id in study.ids:
        page = client.get(f"/r/{alice}/{image_id}")
        pixels = client.get(f"/pixels/{image_id}")
        assert page.status_code == 200 and pixels.status_code == 200
        # the canvas gets full resolution pixels: exactly the stored image, H x W little-endian uint16
        stored = decode_uint16(study.image_path(image_id).read_bytes())
        assert stored.shape == SHAPE
        np.testing.assert_array_equal(np.frombuffer(pixels.data, "<u2").reshape(SHAPE), stored)
        html = page.get_data(as_text=True)
        urls = re.findall(r'(?:href|src|action|data-src)="([^"]+)"', html)
        served += [html, pixels.data, *urls, str(page.headers), str(pixels.headers)]
        pages.setdefault(labels[image_id], set()).add(normalized(html, image_id))
        header_sets.setdefault(labels[image_id], set()).add(
            tuple(sorted((k, v) for k, v in page.headers.items() if k != "Content-Length")))
        assert "Last-Modified" not in pixels.headers and "ETag" not in pixels.headers
    # A real image's page and a synthetic image's page differ only in the opaque id and the position.
    assert pages["real"] == pages["synthetic"] and len(pages["real"]) == 1
    assert header_sets["real"] == header_sets["synthetic"]
    for path in ("/", "/static/vtt.js", "/static/vtt.css", f"/r/{alice}"):
        response = client.get(path)
        served += [response.data, str(response.headers)]
    found = [leaks(blob) for blob in served]
    assert not any(found), found


@pytest.mark.parametrize("path", [
    "/key.json", "/study.json", "/answers.sqlite", "/images/{id}.png", "/pixels/{id}.png", "/pixels/0123456789abcdef",
    "/pixels/../key.json", "/pixels/..%2Fkey.json", "/pixels/%2e%2e%2fkey.json", "/pixels/..%2F..%2Fstudy%2Fkey.json",
    "/static/../key.json", "/static/..%2f..%2fkey.json", "/static/%2e%2e/%2e%2e/key.json", "/r/{tok}/../../key.json",
    "/r/{tok}/0123456789abcdef", "/r/..%2Fkey.json", "/r/al ice", "/%2e%2e/key.json", "/rate/alice", "/r/alice",
    "/r/0123456789abcdef0123456789abcdef",
])
def test_traversal_and_unknown_ids_are_404(study, client, path):
    response = client.get(path.replace("{id}", study.ids[0]).replace("{tok}", token_of(study, "alice")))
    assert response.status_code == 404
    assert b'"label"' not in response.data and b"synthex-vtt-key" not in response.data
    assert answer(client, "alice", "0123456789abcdef").status_code == 404
    assert not study.answers_path.exists() or rows(study) == []


def test_double_submission_is_recorded_once_and_locked(study, client):
    first = study.rater_order("bob")[0]
    assert answer(client, "bob", first, "synthetic", 4).status_code == 303
    again = answer(client, "bob", first, "real", 1)  # resubmission (e.g. back + submit)
    assert again.status_code == 409  # said, not silently dropped
    assert "already answered this image" in again.get_data(as_text=True) and "synthetic, confidence 4" in again.get_data(as_text=True)
    assert rows(study) == [("bob", first, "synthetic", 4, 0)]
    bob = token_of(study, "bob")
    assert client.get(f"/r/{bob}/{first}").status_code == 403  # earlier answers cannot be seen
    html = client.get(f"/r/{bob}").get_data(as_text=True)
    assert study.rater_order("bob")[1] in html and "checked" not in html and "Previous image" not in html


def test_allow_changes_revises_in_place(study):
    client = create_app(study.root, lock_answers=False).test_client()
    order = study.rater_order("carol")
    answer(client, "carol", order[0], "synthetic", 4)
    answer(client, "carol", order[1], "real", 2)
    carol = token_of(study, "carol")
    html = client.get(f"/r/{carol}/{order[0]}").get_data(as_text=True)
    assert re.search(r'value="synthetic"\s+checked', html) and re.search(r'value="4" required checked', html)
    assert client.get(f"/r/{carol}/{order[1]}").get_data(as_text=True).count(f"/r/{carol}/{order[0]}") == 1  # back link
    answer(client, "carol", order[0], "real", 5)
    assert [r for r in rows(study) if r[1] == order[0]] == [("carol", order[0], "real", 5, 1)]
    assert len(rows(study)) == 2


def test_pause_and_resume_by_private_link(study, client):
    order = study.rater_order("dave")
    assert order != study.rater_order("erin")  # each rater gets an own order, the same on every visit
    for image_id in order[:2]:
        answer(client, "dave", image_id)
    assert "Paused" in client.get("/?paused=1").get_data(as_text=True)
    fresh = create_app(study.root).test_client()  # a new browser session: nothing but the link is needed
    dave = token_of(study, "dave")
    resumed = fresh.get(f"/r/{dave}").get_data(as_text=True)
    assert order[2] in resumed and "Image 3 of 6" in resumed and "2 answered" in resumed
    for image_id in order[2:]:
        answer(fresh, "dave", image_id)
    assert "All 6 images are answered" in fresh.get(f"/r/{dave}").get_data(as_text=True)


def test_a_rater_id_alone_gives_no_access(study, client):
    """Finding 9: typing someone's rater id must not show or change their answers."""
    answer(client, "frank", study.rater_order("frank")[0], "synthetic", 5)
    start = client.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', start).group(1)
    taken = client.post("/start", data={"rater": "frank", "csrf": csrf})
    assert taken.status_code == 400 and "is taken" in taken.get_data(as_text=True)
    assert "/r/" not in taken.headers.get("Location", "") and token_of(study, "frank") not in taken.get_data(as_text=True)
    # a new id gets its own unguessable link (32 hex digits)
    joined = client.post("/start", data={"rater": "gail", "csrf": csrf})
    assert joined.status_code == 303 and re.fullmatch(r"/r/[0-9a-f]{32}", joined.headers["Location"])
    assert client.get("/rate/frank").status_code == 404 and client.get("/r/frank").status_code == 404
    # closed enrolment: only invited links work
    closed = create_app(study.root, enrolment=False).test_client()
    assert 'name="rater"' not in closed.get("/").get_data(as_text=True)
    assert closed.post("/start", data={"rater": "hal", "csrf": csrf}).status_code == 404


def test_posts_need_the_forms_csrf_token_and_same_origin(study, client):
    token = token_of(study, "ivan")
    image_id = study.rater_order("ivan")[0]
    data = {"answer": "real", "confidence": "3"}
    assert client.post(f"/r/{token}/{image_id}", data=data).status_code == 403  # no token: a cross-site form
    assert client.post(f"/r/{token}/{image_id}", data={**data, "csrf": "0" * 32}).status_code == 403
    other = token_of(study, "judy")  # another rater's token does not fit this rater's forms
    assert client.post(f"/r/{token}/{image_id}", data={**data, "csrf": csrf_of(client, other)}).status_code == 403
    good = {**data, "csrf": csrf_of(client, token)}
    evil = client.post(f"/r/{token}/{image_id}", data=good, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert client.post("/start", data={"rater": "kim"}).status_code == 403
    assert [r for r in rows(study) if r[0] == "ivan"] == []
    assert client.post(f"/r/{token}/{image_id}", data=good, headers={"Origin": "http://localhost"}).status_code == 303


def test_unknown_host_names_are_refused(study):
    """DNS rebinding: a page on attacker.example resolving to 127.0.0.1 sends Host: attacker.example."""
    client = create_app(study.root).test_client()
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": "attacker.example:8000"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 200
    named = create_app(study.root, allowed_hosts=["reader-study.lab.example"]).test_client()
    assert named.get("/", headers={"Host": "reader-study.lab.example"}).status_code == 200


@pytest.mark.parametrize("elapsed", ["100000000000000000000000000", "1e26", "-5", "86400001", "abc"])
def test_absurd_elapsed_times_are_stored_as_unknown(study, client, elapsed):
    image_id = study.rater_order("lena")[0]
    assert answer(client, "lena", image_id, elapsed=elapsed).status_code == 303  # was HTTP 500 for 1e26 ms
    (row,) = [a for a in AnswerStore(study.answers_path).answers("lena")]
    assert row.elapsed_ms is None


def test_bad_input_is_rejected_without_storing(study, client):
    image_id = study.ids[0]
    fred = token_of(study, "fred")
    csrf = csrf_of(client, fred)
    assert client.post(f"/r/{fred}/{image_id}", data={"answer": "maybe", "confidence": "3", "csrf": csrf}).status_code == 400
    assert client.post(f"/r/{fred}/{image_id}", data={"answer": "real", "confidence": "9", "csrf": csrf}).status_code == 400
    assert client.post(f"/r/{fred}/{image_id}", data={"answer": "real", "csrf": csrf}).status_code == 400
    start_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/").get_data(as_text=True)).group(1)
    response = client.post("/start", data={"rater": "../etc", "csrf": start_csrf})
    assert response.status_code == 400 and "rater id" in response.get_data(as_text=True)
    assert rows(study) == []


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port`` from /proc/net/tcp{,6} (Linux)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.append(".".join(str(b) for b in bytes.fromhex(address)[::-1]))
                else:
                    found.append(address)
    return found


def _post(base: str, study, rater: str, image_id: str, choice: str, confidence: int) -> int:
    token = token_of(study, rater)
    _, page = _get(base, f"/r/{token}")
    csrf = re.search(rb'name="csrf" value="([0-9a-f]+)"', page).group(1).decode()
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    body = urllib.parse.urlencode({"answer": choice, "confidence": confidence, "csrf": csrf})
    conn.request("POST", f"/r/{token}/{image_id}", body, {"Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def _get(base: str, path: str) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", path)  # http.client sends the path as given: no normalization of '..'
    response = conn.getresponse()
    result = response.status, response.read()
    conn.close()
    return result


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp to list listening sockets")
def test_real_server_binds_localhost_and_404s_raw_traversal(study):
    proc, base = start_server(study.root)
    try:
        port = urllib.parse.urlsplit(base).port
        assert base.startswith("http://127.0.0.1:")
        assert _listening_addresses(port) == ["127.0.0.1"]
        for path in ("/pixels/../key.json", "/pixels/..%2Fkey.json", "/../key.json", "/static/../../key.json",
                     "/key.json", f"/images/{study.ids[0]}.png", "/pixels/zzzz"):
            status, body = _get(base, path)
            assert status == 404 and b"synthex-vtt-key" not in body, path
        # ten simultaneous submissions of one answer: stored once
        image_id = study.ids[0]
        token_of(study, "gina")
        threads = [threading.Thread(target=_post, args=(base, study, "gina", image_id, "real", c % 5 + 1)) for c in range(10)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert len([r for r in rows(study) if r[0] == "gina"]) == 1
    finally:
        stop_server(proc)


def test_server_killed_mid_study_keeps_every_acknowledged_answer(study):
    proc, base = start_server(study.root)
    acknowledged = []
    order = {r: study.rater_order(r) for r in ("hank", "ines")}
    try:
        for k in range(4):
            for rater in order:
                choice, confidence = ("real", "synthetic")[k % 2], k + 1
                assert _post(base, study, rater, order[rater][k], choice, confidence) == 303
                acknowledged.append((rater, order[rater][k], choice, confidence))
    finally:
        stop_server(proc, signal.SIGKILL)  # no clean shutdown
    assert proc.returncode == -signal.SIGKILL
    proc, base = start_server(study.root)
    try:
        stored = {(a.rater, a.image_id, a.answer, a.confidence) for a in AnswerStore(study.answers_path).answers()}
        assert stored == set(acknowledged)
        status, page = _get(base, f"/r/{token_of(study, 'hank')}")  # resumes at the 5th image, after 4 saved
        assert status == 200 and order["hank"][4].encode() in page and b"Image 5 of 6" in page
        assert _post(base, study, "hank", order["hank"][4], "real", 2) == 303
    finally:
        stop_server(proc)
    assert len(rows(study)) == 9


def test_report_command_writes_markdown_json_png(study, client, tmp_path):
    runner = CliRunner()
    result = runner.invoke(vtt, ["report", str(study.root)])
    assert result.exit_code != 0 and "no answers yet" in result.output
    labels = load_key(study.root / "key.json", study)
    for image_id in study.ids:  # one rater who is always right with confidence 5
        answer(client, "ivy", image_id, labels[image_id], 5)
    result = runner.invoke(vtt, ["report", str(study.root), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    acc = report["raters"]["ivy"]["accuracy"]
    assert (acc["k"], acc["n"], acc["ci_low"]) == (6, 6, pytest.approx(0.025 ** (1 / 6)))  # k = n: closed form
    assert report["raters"]["ivy"]["chance_test_p"] == pytest.approx(2 / 64)
    assert report["pooled"]["roc"]["auc"] == 1.0 and report["agreement"]["fleiss_kappa"] is None
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ivy | 6/6 | 1.000" in (tmp_path / "rep" / "report.md").read_text()
