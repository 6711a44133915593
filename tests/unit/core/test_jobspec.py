"""The job spec: the defaults, bounds and enums docs/concepts.md documents, validated with
pydantic."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.builtin_datasets import DATASET_NAMES
from core.config import get_settings
from core.errors import FieldError
from core.jobspec import Hyperparameters, JobSpec, check_parameter_cap
from models import BUILTIN_MODEL_NAMES, MODEL_NAMES

DOCUMENTED_DEFAULTS = {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.001,
                       "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
                       "loss": "cross_entropy", "scheduler": "none", "seed": 0,
                       "log_every": 2000, "validation_fraction": 0.0, "world_size": 1,
                       "compile": False, "amp": "off", "channels_last": False,
                       "augment": None, "image_size": None, "freeze": "none"}
MINIMAL = {"model": "lenet", "dataset": "digits"}


def error_locs(excinfo) -> list[tuple]:
    return [tuple(err["loc"]) for err in excinfo.value.errors()]


def test_defaults_are_the_documented_ones():
    assert Hyperparameters().model_dump() == DOCUMENTED_DEFAULTS
    spec = JobSpec(**MINIMAL)
    assert spec.hyperparameters.model_dump() == DOCUMENTED_DEFAULTS
    assert spec.device == "auto" and spec.name is None


def test_model_and_dataset_alone_are_a_valid_spec():
    spec = JobSpec.model_validate(MINIMAL)
    assert (spec.model, spec.dataset) == ("lenet", "digits")
    resolved = spec.resolved()
    assert resolved == {"name": "lenet-digits", "model": "lenet", "dataset": "digits",
                        "hyperparameters": DOCUMENTED_DEFAULTS, "device": "auto",
                        "init_from": None, "pretrained": None,
                        "max_runtime_seconds": None}
    named = JobSpec(**MINIMAL, name="mine").resolved()
    assert named["name"] == "mine"


def test_the_documented_example_body_is_valid():
    body = {"name": "lenet-cifar10", "model": "lenet", "dataset": "cifar10",
            "hyperparameters": dict(DOCUMENTED_DEFAULTS), "device": "auto"}
    assert JobSpec.model_validate(body).resolved() == {**body, "init_from": None,
                                                       "pretrained": None,
                                                       "max_runtime_seconds": None}


@pytest.mark.parametrize("field", ["model", "dataset"])
def test_model_and_dataset_are_required(field):
    body = dict(MINIMAL)
    del body[field]
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate(body)
    assert (field,) in error_locs(excinfo)


BAD_BOUNDS = [("epochs", 0), ("epochs", 1001), ("batch_size", 0), ("batch_size", 65537),
              ("lr", 0), ("lr", -0.1), ("lr", 10.5), ("momentum", 1), ("momentum", -0.1),
              ("weight_decay", 1.5), ("weight_decay", -0.5), ("log_every", 0),
              ("validation_fraction", 0.6), ("validation_fraction", -0.1),
              ("seed", -1), ("seed", 2**32), ("world_size", 0), ("world_size", 9),
              ("compile", "maybe"), ("channels_last", 2), ("augment", "flip"),
              ("augment", True)]


@pytest.mark.parametrize("field, value", BAD_BOUNDS)
def test_out_of_bounds_hyperparameters_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValidationError) as excinfo:
        Hyperparameters(**{field: value})
    assert error_locs(excinfo) == [(field,)]
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {field: value}})
    assert error_locs(excinfo) == [("hyperparameters", field)]


GOOD_EDGES = [("epochs", 1), ("epochs", 1000), ("batch_size", 1), ("batch_size", 65536),
              ("lr", 10), ("lr", 1e-9), ("momentum", 0), ("momentum", 0.999),
              ("weight_decay", 0), ("weight_decay", 1), ("log_every", 1),
              ("validation_fraction", 0.5), ("seed", 2**32 - 1)]


@pytest.mark.parametrize("field, value", GOOD_EDGES)
def test_values_on_the_bounds_are_accepted(field, value):
    assert getattr(Hyperparameters(**{field: value}), field) == value


@pytest.mark.parametrize("field, good, bad", [
    ("optimizer", ["sgd", "adam", "adamw"], ["rmsprop", "SGD", ""]),
    ("loss", ["cross_entropy", "mse"], ["nll", "l1"]),
    ("scheduler", ["none", "step", "cosine", "onecycle"], ["linear", None]),
    ("amp", ["off", "bf16", "fp16"], ["on", "fp32", True, None, "BF16"]),
    ("freeze", ["none", "backbone"], ["head", "all", True, None, "Backbone"]),
])
def test_hyperparameter_enums(field, good, bad):
    for value in good:
        assert getattr(Hyperparameters(**{field: value}), field) == value
    for value in bad:
        with pytest.raises(ValidationError) as excinfo:
            JobSpec.model_validate({**MINIMAL, "hyperparameters": {field: value}})
        assert error_locs(excinfo) == [("hyperparameters", field)]
        message = str(excinfo.value)
        for allowed in good:
            assert repr(allowed) in message  # the message lists the allowed values


@pytest.mark.parametrize("field, good, bad", [
    ("device", ["auto", "cpu", "cuda"], ["gpu", "cuda:0", "tpu"]),
    # The message lists the built-ins by name, and the zoo as torchvision.<name>.
    ("model", list(BUILTIN_MODEL_NAMES), ["vgg16", "LeNet", "", "resnet50"]),
    ("dataset", list(DATASET_NAMES), ["imagenet", "MNIST", ""]),
])
def test_spec_enums(field, good, bad):
    for value in good:
        assert getattr(JobSpec.model_validate({**MINIMAL, field: value}), field) == value
    for value in bad:
        with pytest.raises(ValidationError) as excinfo:
            JobSpec.model_validate({**MINIMAL, field: value})
        assert error_locs(excinfo) == [(field,)]
        message = str(excinfo.value)
        for allowed in good:
            assert allowed in message


def test_unknown_fields_are_rejected_at_both_levels():
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "epochs": 3})
    assert error_locs(excinfo) == [("epochs",)]
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {"learning_rate": 0.1}})
    assert error_locs(excinfo) == [("hyperparameters", "learning_rate")]
    with pytest.raises(ValidationError):
        Hyperparameters(amp=True)


@pytest.mark.parametrize("params", [
    {"optimizer": "adam", "nesterov": True},
    {"optimizer": "adamw", "nesterov": True},
    {"optimizer": "sgd", "nesterov": True, "momentum": 0},
])
def test_nesterov_needs_sgd_with_momentum(params):
    with pytest.raises(ValidationError, match="nesterov"):
        Hyperparameters(**params)
    with pytest.raises(ValidationError, match="nesterov"):
        JobSpec.model_validate({**MINIMAL, "hyperparameters": params})


def test_world_size_goes_up_to_8_and_must_divide_the_global_batch():
    assert Hyperparameters(batch_size=64, world_size=8).world_size == 8
    assert Hyperparameters(batch_size=6, world_size=3).world_size == 3
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {"batch_size": 30,
                                                              "world_size": 4}})
    assert error_locs(excinfo) == [("hyperparameters", "world_size")]
    message = excinfo.value.errors()[0]["msg"]
    assert "batch_size 30" in message and "allowed: 1, 2, 3, 5, 6" in message


def test_nesterov_with_sgd_momentum_is_valid():
    hp = Hyperparameters(optimizer="sgd", nesterov=True, momentum=0.9)
    assert hp.nesterov and hp.optimizer == "sgd"


def test_wrong_types_are_rejected():
    for field, value in [("epochs", "two"), ("epochs", 2.5), ("nesterov", "maybe"),
                         ("lr", "fast")]:
        with pytest.raises(ValidationError) as excinfo:
            Hyperparameters(**{field: value})
        assert error_locs(excinfo) == [(field,)]


def test_name_is_bounded():
    assert JobSpec(**MINIMAL, name="x" * 200).name == "x" * 200
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(**MINIMAL, name="x" * 201)
    assert error_locs(excinfo) == [("name",)]


INT_FIELDS = ["epochs", "batch_size", "seed", "log_every"]
FLOAT_FIELDS = ["lr", "momentum", "weight_decay", "validation_fraction"]


@pytest.mark.parametrize("field", INT_FIELDS + FLOAT_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number(field, value):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {field: value}})
    assert error_locs(excinfo) == [("hyperparameters", field)]
    assert "not a boolean" in str(excinfo.value)
    with pytest.raises(ValidationError, match="not a boolean"):
        JobSpec.model_validate({**MINIMAL, "max_runtime_seconds": value})


@pytest.mark.parametrize("field", INT_FIELDS + FLOAT_FIELDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "-inf"])
def test_nan_and_infinities_are_not_finite_numbers(field, value):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {field: value}})
    assert [e["msg"] for e in excinfo.value.errors()] == ["must be a finite number"]
    assert error_locs(excinfo) == [("hyperparameters", field)]
    with pytest.raises(ValidationError, match="must be a finite number"):
        JobSpec.model_validate({**MINIMAL, "max_runtime_seconds": value})


def test_numbers_otherwise_keep_pydantics_lax_parsing():
    hp = Hyperparameters(epochs=2.0, lr=1, momentum="0.5", seed="7")
    assert (hp.epochs, hp.lr, hp.momentum, hp.seed) == (2, 1.0, 0.5, 7)
    assert JobSpec(**MINIMAL, max_runtime_seconds=None).max_runtime_seconds is None


@pytest.mark.parametrize("name", ["nul\x00inside", "lone \ud800 surrogate", "\udfff"])
def test_a_name_the_database_cannot_store_is_refused(name):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(**MINIMAL, name=name)
    assert error_locs(excinfo) == [("name",)]
    assert excinfo.value.errors()[0]["type"] == "string_not_storable"
    assert JobSpec(**MINIMAL, name="tab\tand ünïcode ✓").name == "tab\tand ünïcode ✓"


@pytest.mark.parametrize("field", ["model", "dataset"])
def test_an_unknown_value_is_echoed_cut(field):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, field: "z" * 20_000})
    message = excinfo.value.errors()[0]["msg"]
    assert len(message) < 300 and "z" * 64 in message and "z" * 65 not in message


def test_the_json_schema_enumerates_models_and_datasets():
    schema = JobSpec.model_json_schema()["properties"]
    names, program_ids = schema["model"]["anyOf"]
    assert names["enum"] == list(MODEL_NAMES)
    assert program_ids["pattern"] == "^[0-9a-f]{32}$"
    names, upload_ids = schema["dataset"]["anyOf"]
    assert names["enum"] == list(DATASET_NAMES)
    assert upload_ids["pattern"] == "^[0-9a-f]{32}$"
    bounds = schema["max_runtime_seconds"]["anyOf"][0]
    assert (bounds["minimum"], bounds["maximum"]) == (1, 365 * 24 * 3600)


# ---- augment ---------------------------------------------------------------------------------

def test_augment_object_defaults_and_bounds():
    aug = Hyperparameters(augment={"random_crop_padding": 4, "horizontal_flip": True}).augment
    assert (aug.random_crop_padding, aug.horizontal_flip) == (4, True)
    assert Hyperparameters(augment={}).augment.model_dump() == {"random_crop_padding": 0,
                                                                "horizontal_flip": False}
    assert Hyperparameters(augment={"random_crop_padding": 16}).augment.random_crop_padding == 16
    resolved = JobSpec.model_validate({**MINIMAL, "hyperparameters": {
        "augment": {"horizontal_flip": True}}}).resolved()
    assert resolved["hyperparameters"]["augment"] == {"random_crop_padding": 0,
                                                      "horizontal_flip": True}


@pytest.mark.parametrize("augment, loc, words", [
    ({"random_crop_padding": 17}, "random_crop_padding", "less than or equal to 16"),
    ({"random_crop_padding": -1}, "random_crop_padding", "greater than or equal to 0"),
    ({"random_crop_padding": True}, "random_crop_padding", "not a boolean"),
    ({"random_crop_padding": 2.5}, "random_crop_padding", "integer"),
    ({"horizontal_flip": "sometimes"}, "horizontal_flip", "boolean"),
    ({"vertical_flip": True}, "vertical_flip", "Extra inputs are not permitted"),
])
def test_bad_augment_is_rejected_naming_the_field(augment, loc, words):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec.model_validate({**MINIMAL, "hyperparameters": {"augment": augment}})
    assert error_locs(excinfo) == [("hyperparameters", "augment", loc)]
    assert words in excinfo.value.errors()[0]["msg"]


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_every_amp_is_valid_on_every_device(device):
    """fp16 autocast and its GradScaler work on the CPU too (torch 2.x): nothing refused."""
    for amp in ("off", "bf16", "fp16"):
        spec = JobSpec.model_validate({**MINIMAL, "device": device,
                                       "hyperparameters": {"amp": amp, "compile": True,
                                                           "channels_last": True}})
        assert spec.hyperparameters.amp == amp and spec.hyperparameters.compile


@pytest.mark.parametrize("given, stored", [(7, "7"), ("7", "7"), (0, "0"), ("best", "best"),
                                           ("latest", "latest")])
def test_init_from_checkpoint_takes_an_epoch_as_a_number_or_text(given, stored):
    job_id = "a" * 32
    spec = JobSpec(model="lenet", dataset="digits",
                   init_from={"job_id": job_id, "checkpoint": given}).resolved()
    assert spec["init_from"] == {"job_id": job_id, "checkpoint": stored}


@pytest.mark.parametrize("bad", [-1, 10**6, True, 1.5, "first"])
def test_init_from_checkpoint_refuses_what_is_not_latest_best_or_an_epoch(bad):
    with pytest.raises(ValidationError) as refused:
        JobSpec(model="lenet", dataset="digits",
                init_from={"job_id": "a" * 32, "checkpoint": bad})
    assert refused.value.errors()[0]["loc"] == ("init_from", "checkpoint")


# ---- torchvision models: image_size and the parameter cap --------------------------------

@pytest.fixture
def cap(monkeypatch):
    def set_cap(value: int) -> None:
        monkeypatch.setenv("TRAINHUB_MAX_MODEL_PARAMETERS", str(value))
        get_settings.cache_clear()
    yield set_cap
    get_settings.cache_clear()


def test_every_model_under_the_cap_is_a_valid_model_value(cap):
    cap(0)
    for name in MODEL_NAMES:
        assert JobSpec(model=name, dataset="digits").model == name


@pytest.mark.parametrize("given, stored", [(None, None), (64, [64, 64]), ([64, 48], [64, 48]),
                                           ((80, 75), [80, 75])])
def test_image_size_is_stored_as_height_and_width(given, stored):
    spec = JobSpec(model="torchvision.squeezenet1_1", dataset="cifar10",
                   hyperparameters={"image_size": given})
    assert spec.resolved()["hyperparameters"]["image_size"] == stored


@pytest.mark.parametrize("model, size, words", [
    ("torchvision.inception_v3", 74, "torchvision.inception_v3 needs images of at least 75x75"),
    ("torchvision.inception_v3", [300, 40], "at least 75x75"),
    ("torchvision.vit_b_16", 256, "takes images of exactly 224x224; allowed: 224"),
    ("torchvision.maxvit_t", [224, 223], "exactly 224x224"),
    ("lenet", 32, "applies to torchvision models only: lenet adapts its layers"),
])
def test_an_image_size_the_model_cannot_take_is_refused_naming_the_field(model, size, words):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model=model, dataset="cifar10", hyperparameters={"image_size": size})
    assert error_locs(excinfo) == [("hyperparameters", "image_size")]
    assert words in excinfo.value.errors()[0]["msg"]


@pytest.mark.parametrize("bad", [0, -3, 1025, True, [32], [32, 32, 3], "32", [32.5, 32]])
def test_image_size_bounds_and_types(bad):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model="torchvision.resnet18", dataset="cifar10",
                hyperparameters={"image_size": bad})
    assert all(loc[:2] == ("hyperparameters", "image_size") for loc in error_locs(excinfo))


def test_a_model_over_the_parameter_cap_is_refused_with_the_numbers(cap):
    cap(200_000_000)
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model="torchvision.vit_h_14", dataset="cifar10")
    assert error_locs(excinfo) == [("model",)]
    assert excinfo.value.errors()[0]["msg"] == (
        "torchvision.vit_h_14 has 630,777,610 parameters with 10 classes, over this server's "
        "cap of 200,000,000 (TRAINHUB_MAX_MODEL_PARAMETERS); allowed: a model with fewer "
        "(GET /models lists each one's count)")
    assert JobSpec(model="torchvision.vit_b_16", dataset="cifar10")  # 86M
    cap(0)  # no cap
    assert JobSpec(model="torchvision.vit_h_14", dataset="cifar10")


def test_the_cap_counts_the_dataset_s_classes(cap):
    # vit_l_16: 303,311,882 parameters at 10 classes, 1,025 more per class.
    cap(303_311_882)
    assert JobSpec(model="torchvision.vit_l_16", dataset="mnist")
    check_parameter_cap("torchvision.vit_l_16", 10)
    with pytest.raises(FieldError) as refused:
        check_parameter_cap("torchvision.vit_l_16", 11)
    assert refused.value.field == "model"
    assert "303,312,907 parameters with 11 classes" in refused.value.message
    # An upload's classes are read by the API: the spec alone checks at 2, the fewest.
    cap(303_311_882 - 8 * 1025)
    assert JobSpec(model="torchvision.vit_l_16", dataset="a" * 32)
    check_parameter_cap("lenet", 10**6)  # built-ins follow the dataset: never over


# ---- torchvision models: pretrained weights and freeze ---------------------------------------

ZOO_MODEL = "torchvision.resnet50"  # weights IMAGENET1K_V1 and IMAGENET1K_V2


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2"])
def test_pretrained_takes_default_or_a_weights_name_the_table_lists(weights):
    spec = JobSpec(model=ZOO_MODEL, dataset="cifar10", pretrained=weights,
                   hyperparameters={"freeze": "backbone"})
    resolved = spec.resolved()
    assert resolved["pretrained"] == weights  # DEFAULT is resolved by the worker
    assert resolved["hyperparameters"]["freeze"] == "backbone"


@pytest.mark.parametrize("model, weights, words", [
    (ZOO_MODEL, "IMAGENET1K_V3", "torchvision.resnet50 has no weights 'IMAGENET1K_V3'; "
                                 "allowed: DEFAULT (torchvision's default for it), "
                                 "IMAGENET1K_V1, IMAGENET1K_V2"),
    (ZOO_MODEL, "default", "has no weights 'default'"),
    ("torchvision.vit_h_14", "IMAGENET1K_V1", "allowed: DEFAULT (torchvision's default for "
                                              "it), IMAGENET1K_SWAG_E2E_V1, "
                                              "IMAGENET1K_SWAG_LINEAR_V1"),
    ("lenet", "DEFAULT", "lenet has no published weights; allowed: leave pretrained out, or "
                         "a torchvision.<name> model"),
    ("resnet18", "IMAGENET1K_V1", "resnet18 has no published weights"),
])
def test_weights_the_model_lacks_are_refused_naming_pretrained(model, weights, words):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model=model, dataset="cifar10", pretrained=weights)
    assert error_locs(excinfo) == [("pretrained",)]
    assert words in excinfo.value.errors()[0]["msg"]


@pytest.mark.parametrize("bad", [1, True, ["DEFAULT"], {"name": "DEFAULT"}, "x" * 101])
def test_pretrained_is_text(bad):
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model=ZOO_MODEL, dataset="cifar10", pretrained=bad)
    assert error_locs(excinfo) == [("pretrained",)]


def test_pretrained_and_init_from_together_are_refused_naming_both():
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model=ZOO_MODEL, dataset="cifar10", pretrained="DEFAULT",
                init_from={"job_id": "0" * 32})
    assert error_locs(excinfo) == [("pretrained",)]
    message = excinfo.value.errors()[0]["msg"]
    assert message.startswith("pretrained and init_from both say what the job starts from")


def test_freeze_backbone_is_for_torchvision_models_only():
    with pytest.raises(ValidationError) as excinfo:
        JobSpec(model="cnn", dataset="fashion_mnist", hyperparameters={"freeze": "backbone"})
    assert error_locs(excinfo) == [("hyperparameters", "freeze")]
    assert excinfo.value.errors()[0]["msg"] == (
        "applies to torchvision models only: cnn has no classifier head of its own to train "
        "alone; allowed: 'none'")
    assert JobSpec(model="cnn", dataset="fashion_mnist", hyperparameters={"freeze": "none"})
    # Without pretrained too: init_from's weights, say, or a fresh network's.
    assert JobSpec(model=ZOO_MODEL, dataset="cifar10", hyperparameters={"freeze": "backbone"})


def test_the_json_schema_lists_every_weights_name():
    schema = JobSpec.model_json_schema()["properties"]["pretrained"]
    names, null = schema["anyOf"]
    assert null == {"type": "null"} and schema["default"] is None
    assert names["enum"][0] == "DEFAULT"
    assert {"IMAGENET1K_V1", "IMAGENET1K_V2", "IMAGENET1K_SWAG_E2E_V1",
            "IMAGENET1K_FEATURES"} <= set(names["enum"])
