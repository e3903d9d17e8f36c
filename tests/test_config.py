import io
import json
from pathlib import Path

import pytest
import yaml

from massl.cli import main
from massl.config import (
    PREPROCESS_DEFAULTS,
    PROBE_DEFAULTS,
    ModelConfig,
    TrainConfig,
    as_dict,
    is_resolved,
    model_config,
    resolve_config,
    schema_facts,
    train_config,
)
from massl.errors import ConfigError
from massl.methods import METHODS, PAPER_METHODS, describe, get_method


def test_defaults_are_paper_scale():
    model, train = ModelConfig(), TrainConfig()
    assert model.spatial_dims == 3 and model.channels == [16, 32, 64, 128, 256]
    assert train.patch_size == [32, 128, 128] and train.batch_size == 1
    assert (train.lr_segmentation, train.lr_reconstruction, train.lr_step_iterations) == (1e-2, 1e-3, 500)


@pytest.mark.parametrize("n_labeled, epochs", [(10, 252), (20, 252), (21, 152), (50, 152), (120, 52), (500, 52)])
def test_epoch_budget_follows_released_schedule(n_labeled, epochs):
    assert TrainConfig().epochs_for(n_labeled) == epochs


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key.*'training'.*learning_rate"):
        train_config({"learning_rate": 0.1})


@pytest.mark.parametrize(
    "section, data, key",
    [
        ("training", {"attention_grad": "both"}, "training.attention_grad"),
        ("training", {"batch_size": 0}, "training.batch_size"),
        ("training", {"lr_joint": -1.0}, "training.lr_joint"),
        ("training", {"max_iterations": -5}, "training.max_iterations"),
        ("training", {"autoencoder_max_iterations": 0}, "training.autoencoder_max_iterations"),
        ("training", {"lr_autoencoder": 0.0}, "training.lr_autoencoder"),
        ("training", {"cpu_conv3d": "mkl"}, "training.cpu_conv3d"),
        ("model", {"downsample": "maxpool"}, "model.downsample"),
        ("model", {"spatial_dims": 4}, "model.spatial_dims"),
    ],
)
def test_bad_values_are_named(section, data, key):
    build = train_config if section == "training" else model_config
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(data)


def test_nine_methods_and_their_modes():
    assert len(PAPER_METHODS) == 9 and list(METHODS)[:9] == list(PAPER_METHODS)
    assert METHODS[PAPER_METHODS[-1]].label == "MASSL(alter)"
    assert get_method("massl_l07").rec_channels == 2 and get_method("mssl_alter").rec_channels == 1
    assert get_method("cnn").rec_channels == 0
    assert get_method("pretrain_cnn").needs_autoencoder and not get_method("mssl_l09").needs_autoencoder
    with pytest.raises(ValueError, match="unknown method 'masl_alter'.*massl_alter"):
        get_method("masl_alter")


# The resolution of a workflow config (`massl config`) --------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def smoke():
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


@pytest.mark.parametrize("name", ["smoke.yaml", "config.yaml", "extended.yaml", "paper.yaml", "paper_check.yaml"])
def test_resolution_is_idempotent_and_json_native(name):
    resolved = resolve_config(yaml.safe_load((REPO / "config" / name).read_text()))
    assert resolve_config(resolved) == resolved
    assert json.loads(json.dumps(resolved)) == resolved
    assert is_resolved(resolved) and resolved["library"] == describe()


def test_resolution_fills_every_library_section():
    cfg = resolve_config(smoke())
    assert cfg["training"] == {**as_dict(TrainConfig()), **smoke()["training"]}
    assert cfg["model"] == {**as_dict(ModelConfig()), "spatial_dims": 2}
    for name, ds in cfg["datasets"].items():
        assert ds["training"] == cfg["training"] and ds["model"] == cfg["model"]
        assert ds["preprocess"] == {**PREPROCESS_DEFAULTS[name], "crop_xy": [32, 32]}
        assert (ds["root"], ds["include_lgg"], ds["channel"]) == (None, False, None)
    assert cfg["datasets"]["brats18"]["split"] == {"pool": 12, "validation": 4, "test": 8, "balance_by": None}
    assert cfg["probe"] == {**PROBE_DEFAULTS, "dataset": "brats18", "setting": "4L8U", "n_images": 2, "n_draws": 2,
                            "max_voxels": 2000, "methods": ["cnn", "mssl_alter", "massl_alter"]}


def test_dataset_overrides_give_the_effective_sections():
    raw = smoke()
    raw["datasets"]["wmh17"]["training"] = {"batch_size": 4}
    raw["datasets"]["wmh17"]["model"] = {"channels": [4, 8]}
    cfg = resolve_config(raw)
    assert cfg["datasets"]["wmh17"]["training"] == {**cfg["training"], "batch_size": 4}
    assert cfg["datasets"]["wmh17"]["model"] == {**cfg["model"], "channels": [4, 8]}
    assert cfg["datasets"]["brats18"]["training"]["batch_size"] == 2
    assert resolve_config(cfg) == cfg


def test_probe_setting_is_the_one_probed_and_data_dirs_set_roots(tmp_path):
    raw = smoke()
    raw["probe"]["setting"] = "10L70U"
    raw["brats18_dir"] = str(tmp_path)
    cfg = resolve_config(raw)
    assert cfg["probe"]["setting"] == "12L12U"  # the nearest labeled count of brats18
    assert cfg["datasets"]["brats18"]["root"] == str(tmp_path) and cfg["datasets"]["wmh17"]["root"] is None
    del raw["datasets"]["brats18"]
    raw["probe"]["dataset"] = "wmh17"
    with pytest.raises(ConfigError, match="config key 'brats18_dir' is set but 'datasets' has no 'brats18' entry"):
        resolve_config(raw)


BAD_GRIDS = {
    "unknown key": (lambda c: c["training"].update(learning_rate=0.1),
                    "config key 'training': unknown key(s) in 'training': learning_rate"),
    "dataset override": (lambda c: c["datasets"]["wmh17"].update(training={"dice_over": "voxel"}),
                         "config key 'datasets.wmh17.training': training.dice_over = 'voxel' is not allowed"),
    "geometry": (lambda c: c["training"].update(patch_size=[24, 24]),
                 "config key 'datasets.brats18.training': training.patch_size [24, 24] must have 2 sizes"),
    "more labeled than the pool": (
        lambda c: c["datasets"]["brats18"]["settings"].update({"20L8U": [20, 8]}),
        "config key 'datasets.brats18.settings.20L8U': 20 labeled / 8 unlabeled cannot be drawn from a training "
        "pool of 12 ('datasets.brats18.split.pool')"),
    "setting name": (lambda c: c["datasets"]["brats18"]["settings"].update({"4L8U": [4, 6]}),
                     "config key 'datasets.brats18.settings.4L8U': counts [4, 6] do not match the name "
                     "(expected [4, 8])"),
    "too few cases": (lambda c: c["datasets"]["wmh17"]["split"].update(pool=12),
                      "config key 'datasets.wmh17.split': pool 12 + test 6 + validation 3 needs 21 cases, but "
                      "'datasets.wmh17.synthetic.n_cases' is 18"),
    "missing folder": (lambda c: c["datasets"]["wmh17"].update(root="/no/such/folder"),
                       "config key 'datasets.wmh17.root': folder /no/such/folder not found"),
    "stats row not run": (lambda c: c.update(methods=["cnn", "mssl_alter"], stats={"best": "massl_alter"}),
                          "config key 'stats.best': massl_alter is not one of 'methods'"),
    "probe method not run": (lambda c: c.update(methods=["cnn"]),
                             "config key 'probe.methods': massl_alter, mssl_alter not in 'methods'"),
    "probe images": (lambda c: c["probe"].update(n_images=9),
                     "config key 'probe.n_images': 9 > the 8 test scans of brats18"),
    "probe option": (lambda c: c["probe"].update(score="cv"),
                     "config key 'probe': probe.score must be one of held_out, in_sample, got 'cv'"),
    "preprocess option": (lambda c: c["datasets"]["wmh17"]["preprocess"].update(normalize="minmax"),
                          "config key 'datasets.wmh17.preprocess': datasets.wmh17.preprocess.normalize = 'minmax'"),
    "split key": (lambda c: c["datasets"]["wmh17"]["split"].update(tset=3),
                  "config key 'datasets.wmh17.split': datasets.wmh17.split: unknown key"),
}


@pytest.mark.parametrize("case", BAD_GRIDS, ids=list(BAD_GRIDS))
def test_bad_grid_is_refused_naming_the_key(case):
    edit, message = BAD_GRIDS[case]
    raw = smoke()
    edit(raw)
    with pytest.raises(ConfigError) as error:
        resolve_config(raw)
    assert str(error.value).startswith(message), str(error.value)


def test_massl_config_prints_or_writes_only_when_the_content_changes(tmp_path, capsys, monkeypatch):
    assert main(["config", "--in", str(REPO / "config" / "smoke.yaml")]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == resolve_config(smoke())
    # in the config's own order: the settings' order is the order of the tables' columns
    assert list(json.loads(printed)["datasets"]["brats18"]["settings"]) == ["4L8U", "12L12U"]
    out = tmp_path / "results" / "config.json"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(smoke())))
    assert main(["config", "--in", "-", "--out", str(out)]) == 0
    assert capsys.readouterr().out == "" and json.loads(out.read_text()) == json.loads(printed)
    written = out.stat().st_mtime_ns
    assert main(["config", "--in", str(out), "--out", str(out)]) == 0  # a resolved config: unchanged
    assert out.stat().st_mtime_ns == written
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**smoke(), "probe": {"n_images": 100}}))
    assert main(["config", "--in", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "massl config: error: config key 'probe.n_images': 100 > the 8 test scans of brats18\n"
    assert out.stat().st_mtime_ns == written


def test_massl_describe_and_allocator(capsys, monkeypatch):
    assert main(["describe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == describe()
    assert main(["describe"]) == 0
    text = capsys.readouterr().out
    assert all(m.label in text for m in METHODS.values()) and "autoencoder" in text
    monkeypatch.setenv("MASSL_ALLOCATOR", "default")
    assert main(["allocator", "--shell-prefix"]) == 0
    assert capsys.readouterr().out == ""


def test_schema_facts_are_the_library_s():
    facts = schema_facts()
    assert json.loads(json.dumps(facts)) == facts
    assert facts["choices"]["training"]["cpu_conv3d"] == ["onednn", "torch"]
    assert facts["choices"]["split"]["balance_by"] == [None, "site"]
    assert facts["defaults"]["training"] == as_dict(TrainConfig())
    assert set(facts["defaults"]["probe"]) == {"dataset", "setting", "methods", *PROBE_DEFAULTS}
