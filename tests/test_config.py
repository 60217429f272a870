"""Tests of the typed config: defaults, presets, precedence, `--set` parsing, rejections."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvae.config import (
    PRESETS,
    Config,
    ModelConfig,
    all_keys,
    load_config,
    parse_override,
    set_key,
    to_yaml,
    validate,
)
from cvae.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _yaml(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ defaults


def test_defaults_are_the_labs():
    cfg = Config()
    t, d, v = cfg.train, cfg.data, cfg.validation
    assert t.batch_size == 2
    assert t.lr == 1e-3
    assert t.epochs == 70
    assert t.lr_milestones == [2, 5]
    assert t.lr_gamma == 0.1
    assert t.tfr == 1.0
    assert t.tfr_sde == 10
    assert t.tfr_d_step == 0.1
    assert t.kl_anneal_type == "Cyclical"
    assert t.kl_anneal_cycle == 10
    assert t.kl_anneal_ratio == 1.0
    assert t.per_save == 3
    assert d.partial == 1.0
    assert d.clip_len == 16
    assert v.val_len == 630
    assert (d.height, d.width) == (32, 64)
    assert cfg.model.output_activation == "none"
    validate(cfg)  # the defaults themselves are valid


def test_defaults_are_not_shared_between_instances():
    a, b = Config(), Config()
    a.train.lr_milestones.append(9)
    assert b.train.lr_milestones == [2, 5]


def test_load_config_without_anything_is_the_defaults():
    assert load_config().to_dict() == Config().to_dict()


@pytest.mark.parametrize(
    "preset, dims",
    [("lab", (128, 32, 12, 192)), ("small", (32, 16, 8, 48))],
)
def test_presets_set_model_dims(preset, dims):
    cfg = load_config(preset=preset)
    m = cfg.model
    assert (m.frame_channels, m.label_channels, m.latent_channels, m.decoder_channels) == dims
    assert m.preset == preset
    assert (cfg.data.height, cfg.data.width, cfg.data.clip_len) == (32, 64, 16)
    assert cfg.validation.val_len == 630


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="model.preset"):
        load_config(preset="huge")
    assert "huge" not in PRESETS


# ---------------------------------------------------------------------------- precedence


def test_preset_overrides_defaults():
    assert Config().model.frame_channels == 128
    assert load_config(preset="small").model.frame_channels == 32


def test_yaml_overrides_preset(tmp_path):
    path = _yaml(tmp_path, "model:\n  preset: small\n  frame_channels: 64\ntrain:\n  epochs: 5\n")
    cfg = load_config(path)
    assert cfg.model.preset == "small"
    assert cfg.model.frame_channels == 64  # the file beats the preset
    assert cfg.model.label_channels == 16  # the rest comes from the preset
    assert cfg.train.epochs == 5


def test_preset_flag_beats_the_files_preset_but_not_its_keys(tmp_path):
    path = _yaml(tmp_path, "model:\n  preset: small\n  decoder_channels: 64\n")
    cfg = load_config(path, preset="lab")
    assert cfg.model.preset == "lab"
    assert cfg.model.frame_channels == 128  # lab preset
    assert cfg.model.decoder_channels == 64  # the file still overrides a preset key


def test_set_model_preset_selects_the_preset():
    cfg = load_config(overrides=["model.preset=small"])
    assert cfg.model.preset == "small"
    assert cfg.model.frame_channels == 32


def test_shortcuts_override_yaml_and_set_overrides_shortcuts(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 5\n  batch_size: 4\nrun:\n  seed: 3\n")
    cfg = load_config(path, shortcuts={"train.epochs": 7, "run.seed": None})
    assert cfg.train.epochs == 7  # shortcut beats the file
    assert cfg.run.seed == 3  # a shortcut left as None does not touch the key
    assert cfg.train.batch_size == 4
    cfg = load_config(path, overrides=["train.epochs=9"], shortcuts={"train.epochs": 7})
    assert cfg.train.epochs == 9  # --set beats the shortcut


def test_layers_come_after_the_file_and_before_shortcuts_and_set(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 5\n  batch_size: 4\n  lr: 0.01\n")
    layers = [("space.yaml", {"train.epochs": 6, "train.batch_size": 2}),
              ("later.yaml", {"train.batch_size": 3})]
    cfg = load_config(path, layers=layers)
    assert cfg.train.epochs == 6  # a layer beats the file
    assert cfg.train.batch_size == 3  # a later layer beats an earlier one
    assert cfg.train.lr == 0.01  # keys no layer names keep the file's value
    cfg = load_config(path, overrides=["train.epochs=9"], shortcuts={"train.epochs": 7},
                      layers=layers)
    assert cfg.train.epochs == 9  # --set beats the shortcut, which beats the layer
    assert load_config(path, shortcuts={"train.epochs": 7}, layers=layers).train.epochs == 7


def test_a_bad_layer_value_names_the_layer(tmp_path):
    with pytest.raises(ConfigError, match="space.yaml.*train.epochs"):
        load_config(layers=[("space.yaml", {"train.epochs": "many"})])


def test_later_set_wins():
    cfg = load_config(overrides=["train.epochs=3", "train.epochs=4"])
    assert cfg.train.epochs == 4


# ---------------------------------------------------------------------------- --set values


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.epochs=3", "train.epochs", 3),
        ("train.lr=0.5", "train.lr", 0.5),
        ("train.lr=1.0e-3", "train.lr", 1e-3),
        ("train.augment=true", "train.augment", True),
        ("train.augment=false", "train.augment", False),
        ("train.lr_milestones=[1, 4]", "train.lr_milestones", [1, 4]),
        ("train.lr_milestones=[]", "train.lr_milestones", []),
        ("data.root=some/folder", "data.root", "some/folder"),
        (" train.epochs = 3", "train.epochs", 3),
        ("run.out=", "run.out", ""),
    ],
)
def test_parse_override_values(text, key, value):
    assert parse_override(text) == (key, value)
    assert type(parse_override(text)[1]) is type(value)


def test_set_values_land_typed_in_the_config():
    cfg = load_config(overrides=[
        "train.epochs=3", "train.lr=0.25", "train.augment=true", "train.lr_milestones=[1, 4]",
        "train.tfr=1", "data.root=x/y",
    ])
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 0.25
    assert cfg.train.augment is True
    assert cfg.train.lr_milestones == [1, 4]
    assert cfg.train.tfr == 1.0 and isinstance(cfg.train.tfr, float)  # int accepted for float
    assert cfg.data.root == "x/y"


def test_set_accepts_exponent_floats():
    cfg = load_config(overrides=["train.lr=3e-4"])
    assert cfg.train.lr == pytest.approx(3e-4)


def test_yaml_accepts_exponent_floats(tmp_path):
    cfg = load_config(_yaml(tmp_path, "train:\n  lr: 3e-4\n"))
    assert cfg.train.lr == pytest.approx(3e-4)


@pytest.mark.parametrize("text", ["train.epochs", "=3", "  =3"])
def test_malformed_set_is_rejected(text):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override(text)


# ------------------------------------------------------------------------------ rejections


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=overrides)
    return str(exc.value)


def test_unknown_key_names_it_and_suggests():
    msg = _error(["train.epoch=3"])
    assert "'train.epoch'" in msg
    assert "did you mean 'train.epochs'" in msg


def test_unknown_section_names_it():
    msg = _error(["trian.epochs=3"])
    assert "unknown key 'trian.epochs'" in msg
    assert "did you mean 'train.epochs'" in msg


def test_key_without_section_is_unknown():
    assert "unknown key 'epochs'" in _error(["epochs=3"])


def test_unknown_key_in_yaml_names_the_file_and_the_key(tmp_path):
    path = _yaml(tmp_path, "train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert "train.learning_rate" in str(exc.value)


def test_unknown_section_in_yaml(tmp_path):
    path = _yaml(tmp_path, "optimiser:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'optimiser'"):
        load_config(path)


def test_yaml_section_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(_yaml(tmp_path, "train: 3\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_yaml_top_level_that_is_not_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_yaml(tmp_path, text))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train.epochs=abc", "an integer"),  # string for int
        ("train.epochs=true", "an integer"),  # bool for int
        ("train.epochs=2.5", "an integer"),  # float for int
        ("train.lr=fast", "a number"),
        ("train.lr=true", "a number"),
        ("train.augment=1", "true or false"),
        ("train.bf16=1", "true or false"),  # the key train.precision replaced
        ("train.lr_milestones=3", "a list of int"),
        ("train.lr_milestones=[1, x]", "an integer"),  # the bad item
        ("data.root=[1, 2]", "a string"),
    ],
)
def test_wrong_type_names_the_key(text, expected):
    key = text.split("=")[0]
    msg = _error([text])
    assert key in msg
    assert expected in msg


def test_wrong_type_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size = '2'.*an integer"):
        load_config(_yaml(tmp_path, "train:\n  batch_size: '2'\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("train.epochs=-1", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=0", "train.lr"),
        ("train.tfr=1.5", "train.tfr"),
        ("train.tfr=-0.1", "train.tfr"),
        ("train.tfr_d_step=2", "train.tfr_d_step"),
        ("train.kl_anneal_ratio=1.5", "train.kl_anneal_ratio"),
        ("train.kl_anneal_ratio=-0.5", "train.kl_anneal_ratio"),
        ("train.kl_anneal_cycle=0", "train.kl_anneal_cycle"),
        ("test.samples=0", "test.samples"),
        ("train.kl_weight=-0.5", "train.kl_weight"),
        ("train.kl_warmup=-1", "train.kl_warmup"),
        ("train.free_bits=-1", "train.free_bits"),
        ("train.edge_weight=-0.1", "train.edge_weight"),
        ("train.ema_decay=1", "train.ema_decay"),
        ("train.ema_decay=-0.1", "train.ema_decay"),
        ("validation.threads=-2", "validation.threads"),
        ("data.partial=0", "data.partial"),
        ("data.partial=1.5", "data.partial"),
        ("data.partial=-0.2", "data.partial"),
        ("train.kl_anneal_type=Linear", "train.kl_anneal_type"),
        ("train.kl_anneal_type=cyclical", "train.kl_anneal_type"),
        ("data.height=2", "data.height"),
        ("data.width=3", "data.width"),
        ("data.clip_len=1", "data.clip_len"),
        ("model.frame_channels=12", "model.frame_channels"),
        ("model.latent_channels=6", "model.latent_channels"),
        ("model.latent_cell=3", "model.latent_cell"),
        ("model.latent_cell=-1", "model.latent_cell"),
        ("model.label_channels=3", "model.label_channels"),
        ("model.decoder_channels=20", "model.decoder_channels"),
        ("model.output_activation=tanh", "model.output_activation"),
        ("model.init=xavier", "model.init"),
        ("train.chunk_frames=-2", "train.chunk_frames"),
        ("train.lr_milestones=[5, 2]", "train.lr_milestones"),
        ("train.lr_milestones=[-1]", "train.lr_milestones"),
        ("validation.val_len=1", "validation.val_len"),
        ("validation.short_len=-1", "validation.short_len"),
        ("validation.best_by=val_loss", "validation.best_by"),
        ("test.seq_len=0", "test.seq_len"),
        ("run.device=tpu", "run.device"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(text, key):
    value = text.split("=", 1)[1]
    msg = _error([text])
    assert msg.startswith(f"{key} = ")
    assert value in msg


def test_ratio_bounds_are_inclusive():
    cfg = load_config(overrides=[
        "train.tfr=0", "train.kl_anneal_ratio=0", "data.partial=1", "train.tfr_d_step=1",
    ])
    assert (cfg.train.tfr, cfg.train.kl_anneal_ratio, cfg.data.partial) == (0.0, 0.0, 1.0)
    cfg = load_config(overrides=["train.tfr=1", "train.kl_anneal_ratio=1", "data.partial=0.01"])
    assert cfg.data.partial == 0.01


def test_short_horizon_is_a_training_clip_unless_set():
    assert load_config(overrides=["data.clip_len=80"]).validation.short_horizon(80) == 79
    cfg = load_config(overrides=["data.clip_len=80", "validation.short_len=15"])
    assert cfg.validation.short_horizon(cfg.data.clip_len) == 15


def test_smallest_frame_the_model_takes_is_accepted():
    cfg = load_config(overrides=["data.height=4", "data.width=4"])
    assert (cfg.data.height, cfg.data.width) == (4, 4)


def test_fused_channels_must_be_a_multiple_of_4():
    # 8 + 2 + 4 = 14: each width is fine on its own, the sum is not
    msg = _error(["model.frame_channels=8", "model.label_channels=2", "model.latent_channels=4"])
    assert msg.startswith("model.label_channels = 2")
    assert "14" in msg


def test_each_kl_anneal_type_is_accepted():
    for kind in ("Monotonic", "Cyclical", "None"):
        assert load_config(overrides=[f"train.kl_anneal_type={kind}"]).train.kl_anneal_type == kind


def test_bad_yaml_syntax_is_one_config_error(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 3\n  lr: [0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert "not valid YAML" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert "not found" in str(exc.value)


def test_empty_yaml_file_is_the_defaults(tmp_path):
    assert load_config(_yaml(tmp_path, "")).to_dict() == Config().to_dict()


def test_validate_catches_a_value_set_in_code():
    cfg = Config()
    cfg.train.epochs = -3
    with pytest.raises(ConfigError, match=r"^train\.epochs = -3"):
        validate(cfg)


def test_set_key_checks_type():
    cfg = Config()
    set_key(cfg, "train.epochs", 4)
    assert cfg.train.epochs == 4
    with pytest.raises(ConfigError, match="train.epochs"):
        set_key(cfg, "train.epochs", "4")
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        set_key(cfg, "train.nope", 4)


# ---------------------------------------------------------------------- dicts and files


def test_to_dict_from_dict_round_trip():
    cfg = load_config(preset="small", overrides=["train.epochs=4", "train.lr_milestones=[1]"])
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.train.lr_milestones == [1]


def test_from_dict_validates():
    values = Config().to_dict()
    values["train"]["tfr"] = 2.0
    with pytest.raises(ConfigError, match="train.tfr"):
        Config.from_dict(values)


def test_to_yaml_loads_back(tmp_path):
    cfg = load_config(preset="small", overrides=["train.epochs=4", "train.lr=0.25"])
    path = _yaml(tmp_path, to_yaml(cfg))
    assert load_config(path) == cfg


def test_all_keys_cover_every_section():
    keys = all_keys()
    assert "train.epochs" in keys and "model.preset" in keys and "run.out" in keys
    assert {k.split(".")[0] for k in keys} == {"data", "model", "train", "validation", "test",
                                               "run"}
    assert len(keys) == len(set(keys))


def test_shipped_train_config_loads():
    cfg = load_config(REPO / "config" / "train.yaml")
    assert cfg.model.preset == "small"
    assert cfg.model.frame_channels == 32  # from the small preset
    assert cfg.train.epochs == 70
    assert cfg.train.lr_milestones == [2, 5]
    assert cfg.train.kl_anneal_type == "Cyclical"
    assert cfg.data.clip_len == 16


def test_shipped_test_config_loads():
    cfg = load_config(REPO / "config" / "test.yaml")
    assert cfg.test.seq_len == 630
    assert cfg.test.gif_fps == 20
    assert cfg.run.out == "runs/test"


def test_model_config_defaults_are_the_lab_preset():
    m = ModelConfig()
    lab = PRESETS["lab"]
    assert m.frame_channels == lab["model.frame_channels"]
    assert m.label_channels == lab["model.label_channels"]
    assert m.latent_channels == lab["model.latent_channels"]
    assert m.decoder_channels == lab["model.decoder_channels"]


def test_set_preset_to_a_list_is_a_config_error():
    with pytest.raises(ConfigError, match="model.preset"):
        load_config(overrides=["model.preset=[a]"])


def test_later_set_preset_wins():
    cfg = load_config(overrides=["model.preset=small", "model.preset=lab"])
    assert cfg.model.preset == "lab"
    assert cfg.model.frame_channels == 128


@pytest.mark.parametrize("old, precision", [("true", "bf16"), ("false", "fp32")])
def test_the_old_bf16_switch_reads_as_the_precision_it_ran_at(old, precision):
    """train.bf16 (a bool in older configs and checkpoints) is train.precision now."""
    assert load_config(overrides=[f"train.bf16={old}"]).train.precision == precision
    assert Config.from_dict({"train": {"bf16": old == "true"}}).train.precision == precision
    assert load_config().train.precision == "auto"  # bf16 on a GPU, fp32 on a CPU
