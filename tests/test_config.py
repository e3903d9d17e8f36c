import pytest

from massl.config import ModelConfig, TrainConfig, model_config, train_config
from massl.errors import ConfigError
from massl.methods import METHODS, get_method


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
    assert len(METHODS) == 9
    assert [m.label for m in METHODS.values()][-1] == "MASSL(alter)"
    assert get_method("massl_l07").rec_channels == 2 and get_method("mssl_alter").rec_channels == 1
    assert get_method("cnn").rec_channels == 0
    assert get_method("pretrain_cnn").needs_autoencoder and not get_method("mssl_l09").needs_autoencoder
    with pytest.raises(ValueError, match="unknown method 'masl_alter'.*massl_alter"):
        get_method("masl_alter")
