"""The render config: defaults, validation errors that name the key, typo hints, flags, --print-config."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from synthex.cli import cli
from synthex.config import ConfigError, load_config, rendering_config, resolve_config, schema_reference


def test_default_config_is_a_small_hip_dataset_from_the_bundled_real_ct():
    cfg = load_config()
    assert cfg.task == "hip"
    assert cfg.classes == [
        "hemipelvis_left",
        "hemipelvis_right",
        "vertebrae",
        "upper_sacrum",
        "femur_left",
        "femur_right",
    ]  # SyntheX's 6 hip classes (REFERENCE.md)
    assert len(cfg.landmarks) == 14  # 7 landmarks, left and right
    assert cfg.subjects[0].source == "bundled_pelvis" and cfg.subjects[0].deform.count == 7
    assert cfg.n == 48
    # 48 images over the CT and its 7 deformed instances: 6 views each
    assert cfg.views.per_subject == 6


@pytest.mark.parametrize(
    "data, key, hint",
    [
        ({"veiws": {}}, "veiws", "did you mean 'views'"),
        ({"views": {"alpha_dg": [0, 1]}}, "views.alpha_dg", "did you mean 'alpha_deg'"),
        ({"materials": {"density_jitte": 0.1}}, "materials.density_jitte", "did you mean 'density_jitter'"),
        ({"physics": {"kvpp": [60, 80]}}, "physics.kvpp", "did you mean 'kvp'"),
        ({"randomization": {"image": "strong"}}, "randomization", "known keys"),
        ({"subjects": [{"source": "pelvis", "cout": 3}]}, "subjects[0].cout", "did you mean 'count'"),
        ({"physics": {"scatter_modle": "monte_carlo"}}, "physics.scatter_modle", "did you mean 'scatter_model'"),
        # a misspelled value: the models (or presets) it may be
        ({"physics": {"scatter_model": "monte-carlo"}}, "physics.scatter_model", "'fast', 'monte_carlo' or 'none'"),
        ({"physics": {"detector": "flat_panel_gso"}}, "physics.detector", "'flat_panel_gos'"),
    ],
)
def test_a_typo_names_the_key_and_suggests_the_closest(data, key, hint):
    with pytest.raises(ConfigError) as e:
        resolve_config(data)
    assert repr(key) in str(e.value) and hint in str(e.value)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"image": {"size": 4}}, "image.size"),
        ({"image": {"size": [64, 64, 3]}}, "image.size"),
        ({"views": {"beta_deg": [10, -10]}}, "views.beta_deg"),
        ({"views": {"alpha_deg": [-200, 0]}}, "views.alpha_deg"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"n": 2.5}, "n"),
        ({"physics": {"kvp": [70, 400]}}, "physics.kvp"),
        ({"physics": {"model": "spectrall"}}, "physics.model"),
        ({"geometry": {"sid": 1200, "sdd": 1000}}, "geometry.sid"),
        ({"physics": {"model": "spectrall"}}, "physics.model"),
        ({"materials": {"density_jitter": float("nan")}}, "materials.density_jitter"),
        ({"projector": {"mode": "siddon"}}, "projector.mode"),
        ({"physics": {"scatter_photons": 10}}, "physics.scatter_photons"),
        ({"task": "knee"}, "task"),
        ({"subjects": [{"source": "pelvis_phantom"}]}, "subjects[0].source"),
        ({"subjects": [{"source": "pelvis", "count": 0}]}, "subjects[0].count"),
    ],
)
def test_out_of_range_or_wrong_type_names_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        resolve_config(data)
    assert repr(key) in str(e.value)


def test_ct_subject_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"subjects\[0\]\.path.*file not found"):
        resolve_config({"subjects": [{"source": "ct", "path": str(tmp_path / "missing.nii.gz")}]})
    with pytest.raises(ConfigError, match=r"subjects\[0\]\.path' is required"):
        resolve_config({"subjects": [{"source": "ct"}]})


def test_each_task_has_its_subject_source_and_custom_needs_classes():
    assert resolve_config({"task": "covid"}).subjects[0].source == "chest_lesions"
    assert resolve_config({"task": "tool"}).subjects[0].source == "bundled_pelvis"  # + the task's tool
    with pytest.raises(ConfigError, match="task 'custom' has no built-in subjects"):
        resolve_config({"task": "custom", "classes": ["a"]})
    with pytest.raises(ConfigError, match="did you mean 'kwire'"):
        resolve_config({"task": "tool", "subjects": [{"source": "pelvis_tool", "tool": "kwir"}]})
    with pytest.raises(ConfigError, match="'classes'"):
        resolve_config({"task": "custom", "subjects": [{"source": "pelvis"}]})


def test_n_and_views_per_subject():
    cfg = resolve_config({"views": {"per_subject": 5}, "subjects": [{"source": "pelvis", "count": 3}]})
    assert cfg.n == 15
    cfg = resolve_config({"n": 10, "subjects": [{"source": "pelvis", "count": 3}]})
    assert cfg.views.per_subject == 4  # ceil(10 / 3)
    with pytest.raises(ConfigError, match="'n'"):
        resolve_config({"n": 16, "views": {"per_subject": 5}, "subjects": [{"source": "pelvis", "count": 3}]})


def test_runtime_keys_do_not_change_the_rendering_config():
    a = resolve_config({"dataset": {"workers": 1}, "output": "a"})
    b = resolve_config({"dataset": {"workers": 4}, "output": "b", "projector": {"device": "cpu"}})
    assert rendering_config(a) == rendering_config(b)
    assert rendering_config(a) != rendering_config(resolve_config({"seed": 1}))


def test_every_key_is_documented():
    rows = schema_reference()
    assert len(rows) > 20 and all(doc for _, _, doc in rows)


def test_yaml_file_and_flags(tmp_path):
    path = tmp_path / "hip.yaml"
    path.write_text("seed: 3\nimage:\n  size: [48, 40]\nviews:\n  alpha_deg: [-10, 10]\n")
    cfg = load_config(path, {"n": 7})
    assert cfg.seed == 3 and cfg.image.size == (48, 40) and cfg.n == 7
    assert cfg.views.alpha_deg == (-10.0, 10.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_print_config_shows_the_resolved_config_with_flag_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: hip\nseed: 1\n")
    result = CliRunner().invoke(cli, ["render", str(path), "--n", "5", "--size", "32", "--seed", "9", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed == load_config(path, {"n": 5, "image.size": 32, "seed": 9}).to_json()
    assert printed["seed"] == 9 and printed["image"]["size"] == 32
    # the printed config is itself a valid config that resolves to the same thing
    assert resolve_config(printed).to_json() == printed
    assert not (tmp_path / "synthex-dataset").exists()


def test_cli_reports_a_config_error_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("views:\n  beta_deg: [0, 120]\n")
    result = CliRunner().invoke(cli, ["render", str(path), "--out", str(tmp_path / "ds")])
    assert result.exit_code != 0
    assert "'views.beta_deg'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_the_docs_config_page_documents_every_key():
    """docs/config.md's reference table is generated from the schema by docs/hooks.py: the page
    must keep the marker, and the table must name every key with a default and a doc."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("synthex_docs_hooks", repo / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (repo / "docs" / "config.md").read_text()
    assert hooks.CONFIG_MARKER in page, "docs/config.md lost the config-reference marker"
    rendered = hooks.expand_config_reference(page)
    rows = [line for line in rendered.splitlines() if line.startswith("| `")]
    keys = [key for key, _, _ in schema_reference()]
    missing = [key for key in keys if not any(row.startswith(f"| `{key}` |") for row in rows)]
    assert not missing, f"docs/config.md's generated table lacks config keys {missing}"
    undocumented = [key for key, _, doc in schema_reference() if not str(doc).strip()]
    assert not undocumented, f"config keys without a doc string: {undocumented}"
    # defaults are shown as the YAML/JSON a user would write (the default task is SyntheX's hip task)
    assert '| `task` | `"hip"` |' in rendered


def test_the_benchmark_configs_are_valid():
    """Configs committed under benchmarks/configs stay in step with the schema."""
    from pathlib import Path

    import benchmarks.realism as bench

    configs = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        try:  # paths into ../shared/data point at the shared data wherever it is (a clone elsewhere, a worktree)
            bench.bench_config(path)
        except bench.SharedDataMissing:
            continue  # that config needs the shared CTs, absent here; the others are still checked
