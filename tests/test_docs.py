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
from conftest import shared_file

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CT = "ct/totalseg_abdomen_pelvis/example_ct.nii.gz"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_readme_python_runs_on_a_real_ct(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block: its example would go untested"
    (tmp_path / "ct.nii.gz").symlink_to(shared_file(CT))
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
    ct = shared_file(CT)
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct.nii.gz").symlink_to(ct)
    (tmp_path / "ct" / "example_ct.nii.gz").symlink_to(ct)
    (tmp_path / "ct" / "example_seg_total_fast.nii.gz").symlink_to(ct.with_name("example_seg_total_fast.nii.gz"))
    (tmp_path / "ct" / "totalseg_total_classmap.json").symlink_to(shared_file("ct/totalseg_total_classmap.json"))
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "docs_page"}
    for k, block in enumerate(python_blocks((REPO / "docs" / page).read_text())):
        exec(compile(block, f"docs/{page} python block {k}", "exec"), ns)  # noqa: S102
    check = PAGE_CLAIMS.get(page)
    if check is not None:
        check(ns, tmp_path)


def _tutorial_claims(ns, tmp_path):
    """render-your-ct.md: femoral heads 165 mm apart (the population mean is 160 +/- 8 mm), and the CT,
    which ends through the acetabula, lacks exactly the landmarks of the obturator foramen and symphysis."""
    import json

    lm = json.loads((tmp_path / "ct" / "landmarks.json").read_text())
    assert np.linalg.norm(np.subtract(lm["FH_l"], lm["FH_r"])) == pytest.approx(165, abs=2)
    assert sorted(ns["found"].missing) == sorted(f"{k}-{s}" for k in ("IOF", "MOF", "SPS", "IPS") for s in "lr")


def _ct_prep_claims(ns, tmp_path):
    """ct-preparation.md: 3 mm voxels refined by 2 along every axis, cropped to the body; the implant's
    volume (11.6 mL) and the table preset's 128 x 104 detector (430 x 350 mm at 3.36 mm pixels)."""
    prep = ns["prep"]
    assert tuple(prep.volume.spacing) == (1.5, 1.5, 1.5) and prep.volume.shape == (243, 195, 223)
    assert prep.record["metal"]["volume_ml"] == pytest.approx(11.6, abs=0.1)
    assert ns["cam"].shape == (104, 128) and ns["out"].image.shape == (104, 128)
    # the collimator closes part of the detector (the CT ends below the femoral heads), not all of it
    assert 0.3 < ns["field"].mean() < 1.0


def _scatter_claims(ns, tmp_path):
    """scatter.md: the patient geometry the page shows (the pelvis CT's 27 cm depth, its back 39 mm from the
    table detector when the isocentre is the CT's centre), and a scatter image that is there and not negative."""
    assert ns["geo"] == pytest.approx({"air_gap_mm": 39.0, "patient_thickness_mm": 270.0}, abs=1.0)
    res = ns["res"]
    assert res.scatter.min() >= 0 and res.scatter.mean() > 0


def _real_ct_claims(ns, tmp_path):
    """real-cts.md: FH, ASIS, GSN on both sides; the deformation keeps the voxel size."""
    assert sorted(ns["found"].points) == sorted(f"{k}-{s}" for k in ("ASIS", "FH", "GSN") for s in "lr")
    assert tuple(ns["subject"].spacing) == tuple(ns["ct"].spacing)


PAGE_CLAIMS = {
    "render-your-ct.md": _tutorial_claims,
    "ct-preparation.md": _ct_prep_claims,
    "scatter.md": _scatter_claims,
    "real-cts.md": _real_ct_claims,
}


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
    # ... and so was the subject-source table: every registered source and its keys
    from synthex.subjects import SOURCES

    assert "synthex:subject-reference" not in html
    for name, src in SOURCES.items():
        assert f"<td><code>{name}</code></td>" in html, f"the config page lacks the subject source {name!r}"
        for key in src.entry.model_fields:
            if key not in ("source", "path") or src.entry.model_fields[key].is_required():
                assert f"<td><code>{key}</code></td>" in html, f"the config page lacks {name}.{key}"
    # API pages were rendered from the docstrings
    api = (site / "api" / "projector" / "index.html").read_text()
    assert 'id="projectors.projector.Projector"' in api
    # images of the repository outside docs/ were copied with the site
    assert (site / "_repo" / "benchmarks" / "results" / "physics_renders.png").is_file()
    shutil.rmtree(site)


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.S | re.M)


def test_render_configs_in_the_docs_are_valid(tmp_path):
    """Every YAML render config shown in README.md and docs/*.md resolves against the schema (keys,
    types, ranges), with its CT files stood in for by the shared TotalSegmentator CT and class map
    (a folder of CTs and a folder of label maps hold one CT and its label map, paired by name)."""
    import json

    import yaml

    from synthex.config import resolve_config

    ct = shared_file(CT)
    seg = ct.with_name("example_seg_total_fast.nii.gz")
    classmap = shared_file("ct/totalseg_total_classmap.json")
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    blocks = [(page, b) for page in pages for b in yaml_blocks(page.read_text())]
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
                    if subject[key].endswith("/"):  # a folder of CTs or of label maps: one, named alike
                        dest.mkdir(parents=True, exist_ok=True)
                        dest = dest / "ct01.nii.gz"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        dest.symlink_to(target)
            if isinstance(subject.get("landmarks"), str):
                dest = base / subject["landmarks"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps({"FH_l": [-83.5, 142.5, 127.7], "FH_r": [81.9, 144.2, 124.2]}))
        try:
            cfg = resolve_config(data, base_dir=base)
        except Exception as e:  # noqa: BLE001 - report which page's example broke
            pytest.fail(f"the render config in {page.relative_to(REPO)} is no longer valid: {e}")
        if data.get("subjects"):  # a folder of CTs became one entry per CT, each with its own label map
            for entry in cfg.subjects:
                if entry.source == "ct" and entry.labels is not None:
                    assert Path(entry.labels).is_file(), f"{page.name}: label map of {entry.path} not paired"
