"""The documentation stays true: the Python of the README and of the docs pages runs on a real
CT, the pages' render configs validate, the README's links resolve, and the mkdocs site builds
with --strict (broken links, anchors, API references and pages missing from the nav fail)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CT = "ct/totalseg_abdomen_pelvis/example_ct.nii.gz"


def shared_data(relpath: str) -> Path:
    """A file of the shared third-party data: ../shared/data beside the repository (as in
    tests/conftest.py), else /work/shared/data (a git worktree lives elsewhere); skip if absent."""
    candidates = [REPO.parent / "shared" / "data" / relpath, Path("/work/shared/data") / relpath]
    for p in candidates:
        if p.exists():
            return p
    pytest.skip(f"shared test data not found: {candidates[0]} (see ../shared/data/README.md)")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_readme_python_runs_on_a_real_ct(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block: its example would go untested"
    (tmp_path / "ct.nii.gz").symlink_to(shared_data(CT))
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "readme"}
    for k, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {k}", "exec"), ns)  # noqa: S102

    # The example's own objects, checked against geometry, not against synthex's output:
    # the camera is aimed at the volume's centre, so that point lies on the principal ray and
    # projects to the principal point, the detector centre ((W - 1) / 2, (H - 1) / 2).
    for name in ("vol", "cam", "out"):
        assert name in ns, f"the README example no longer defines {name!r}; update this test with it"
    vol, cam, out = ns["vol"], ns["cam"], ns["out"]
    w, h = cam.width, cam.height
    np.testing.assert_allclose(cam.project(vol.center_world[None])[0], [(w - 1) / 2, (h - 1) / 2], atol=1e-6)
    assert out.image.shape == (h, w)
    assert np.all((out.image >= 0) & (out.image <= 1))
    # the rays pass through the patient: every pixel of an AP view at the CT's centre (a 10 cm
    # field inside a 30 cm wide abdomen) crosses tissue, so transmission is well below 1
    assert out.transmission.max() < 0.5


PAGES_WITH_CODE = sorted(p.name for p in (REPO / "docs").glob("*.md") if python_blocks(p.read_text()))


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_in_docs_pages_runs(page, tmp_path, monkeypatch):
    """```python blocks of a docs page run in order, in one namespace, beside the files the pages
    name (``ct.nii.gz`` and ``ct/`` of the TotalSegmentator CT); ```py blocks are fragments."""
    ct = shared_data(CT)
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct.nii.gz").symlink_to(ct)
    (tmp_path / "ct" / "example_ct.nii.gz").symlink_to(ct)
    (tmp_path / "ct" / "example_seg_total_fast.nii.gz").symlink_to(ct.with_name("example_seg_total_fast.nii.gz"))
    (tmp_path / "ct" / "totalseg_total_classmap.json").symlink_to(shared_data("ct/totalseg_total_classmap.json"))
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "docs_page"}
    for k, block in enumerate(python_blocks((REPO / "docs" / page).read_text())):
        exec(compile(block, f"docs/{page} python block {k}", "exec"), ns)  # noqa: S102
    if page == "render-your-ct.md":
        # the tutorial's numbers: femoral heads 165 mm apart (sphere fits of the real CT's femurs)
        import json

        lm = json.loads((tmp_path / "ct" / "landmarks.json").read_text())
        assert np.linalg.norm(np.subtract(lm["FH_l"], lm["FH_r"])) == pytest.approx(165, abs=2)


def test_readme_relative_links_point_to_files():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [t for t in links if "://" not in t and not t.startswith(("#", "mailto:"))]
    assert relative, "README.md has no relative links (the docs section is gone?)"
    missing = [t for t in relative if not (REPO / t.split("#", 1)[0]).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"
    # the README links the docs pages, the API reference among them
    assert "docs/api/index.md" in relative


def test_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocs / mkdocstrings-python are not installed: pip install -e '.[docs]' (make test installs them)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    # the config reference was generated into the page: every schema key in a table cell
    from synthex.config import schema_reference

    html = (site / "config" / "index.html").read_text()
    missing = [key for key, _, _ in schema_reference() if f"<td><code>{key}</code></td>" not in html]
    assert not missing, f"the built config page lacks keys {missing}"
    assert "synthex:config-reference" not in html
    # API pages were rendered from the docstrings
    api = (site / "api" / "projector" / "index.html").read_text()
    assert 'id="projectors.projector.Projector"' in api
    # images of the repository outside docs/ were copied with the site
    assert (site / "_repo" / "benchmarks" / "results" / "physics_renders.png").is_file()
    shutil.rmtree(site)


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.S | re.M)


def test_render_configs_in_the_docs_are_valid(tmp_path):
    """Every YAML render config shown in docs/*.md resolves against the schema (keys, types,
    ranges), with its CT files stood in for by the shared TotalSegmentator CT and class map."""
    import json

    import yaml

    from synthex.config import resolve_config

    ct = shared_data(CT)
    seg = ct.with_name("example_seg_total_fast.nii.gz")
    classmap = shared_data("ct/totalseg_total_classmap.json")
    blocks = [(page, b) for page in sorted((REPO / "docs").glob("*.md")) for b in yaml_blocks(page.read_text())]
    assert blocks, "no YAML config in docs/*.md: the tutorial and the config page lost their examples"
    for k, (page, block) in enumerate(blocks):
        data = yaml.safe_load(block)
        base = tmp_path / f"config{k}"
        base.mkdir()
        for subject in data.get("subjects") or []:
            if subject.get("source") != "ct":
                continue
            for key, target in (("path", ct), ("labels", seg), ("label_names", classmap)):
                if isinstance(subject.get(key), str):
                    dest = base / subject[key]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        dest.symlink_to(target)
            if isinstance(subject.get("landmarks"), str):
                dest = base / subject["landmarks"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps({"FH_l": [-83.5, 142.5, 127.7], "FH_r": [81.9, 144.2, 124.2]}))
        try:
            resolve_config(data, base_dir=base)
        except Exception as e:  # noqa: BLE001 - report which page's example broke
            pytest.fail(f"the render config in {page.relative_to(REPO)} is no longer valid: {e}")
