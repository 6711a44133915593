"""GET /models lists the built-ins and torchvision's zoo from the size table (?q= filters),
and POST /jobs refuses an image_size a model cannot take or a model over the parameter cap
with a 422 that names the field. In-process (TestClient) on the test database."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import app
from core.config import get_settings
from models import MODEL_NAMES


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:
        yield c


def test_models_lists_the_built_ins_and_at_least_60_torchvision_architectures(client):
    body = client.get("/models").json()
    assert body["max_model_parameters"] == get_settings().max_model_parameters
    by_name = {m["name"]: m for m in body["models"]}
    assert len(by_name) == 84 and len(by_name) - 4 >= 60
    lenet = by_name["lenet"]
    assert lenet["source"] == "builtin" and lenet["family"] == "builtin"
    assert lenet["parameters"] is None and lenet["pretrained_weights"] == []
    assert lenet["input"] == "any (channels, height, width); adapts to the dataset"
    assert lenet["default_hyperparameters"]["log_every"] == 2000
    assert "torchvision.resnet18" in by_name["resnet18"]["description"]  # what it is called
    resnet50 = by_name["torchvision.resnet50"]
    assert {k: resnet50[k] for k in ("source", "family", "parameters", "parameters_per_class",
                                     "min_image_size", "fixed_image_size")} == {
        "source": "torchvision", "family": "resnet", "parameters": 23_528_522,
        "parameters_per_class": 2049, "min_image_size": 1, "fixed_image_size": None}
    assert resnet50["pretrained_weights"] == ["IMAGENET1K_V1", "IMAGENET1K_V2"]
    vit = by_name["torchvision.vit_b_16"]
    assert vit["fixed_image_size"] == [224, 224] and vit["min_image_size"] == 224
    assert "exactly 224x224" in vit["input"]
    assert "at least 75x75" in by_name["torchvision.inception_v3"]["input"]


@pytest.mark.parametrize("q, expected", [
    ("RESNET1", {"torchvision.resnet101", "torchvision.resnet152", "torchvision.resnet18",
                 "torchvision.wide_resnet101_2", "resnet18"}),
    ("vit_", {"torchvision.vit_b_16", "torchvision.vit_b_32", "torchvision.vit_h_14",
              "torchvision.vit_l_16", "torchvision.vit_l_32", "torchvision.maxvit_t"}),
    ("LeNet", {"lenet", "torchvision.googlenet", "torchvision.mobilenet_v2",
               "torchvision.mobilenet_v3_large", "torchvision.mobilenet_v3_small",
               *(f"torchvision.shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0"))}),
    ("torchvision.", {n for n in MODEL_NAMES if n.startswith("torchvision.")}),
    ("nothing-like-it", set()),
])
def test_q_filters_by_name_in_either_case(client, q, expected):
    resp = client.get("/models", params={"q": q})
    assert resp.status_code == 200
    assert {m["name"] for m in resp.json()["models"]} == expected


def test_a_zoo_job_with_an_image_size_below_the_minimum_is_a_422_naming_the_field(client):
    resp = client.post("/jobs", json={"model": "torchvision.inception_v3", "dataset": "digits",
                                      "hyperparameters": {"image_size": [64, 80]}})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["field"] == "hyperparameters.image_size"
    assert problem["msg"].startswith(
        "torchvision.inception_v3 needs images of at least 75x75; allowed: ")


def test_a_model_over_the_parameter_cap_is_a_422_with_its_count_and_the_cap(client):
    resp = client.post("/jobs", json={"model": "torchvision.vit_h_14", "dataset": "mnist"})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["field"] == "model"
    cap = get_settings().max_model_parameters
    assert problem["msg"].startswith(
        f"torchvision.vit_h_14 has 630,777,610 parameters with 10 classes, over this "
        f"server's cap of {cap:,} (TRAINHUB_MAX_MODEL_PARAMETERS)")


def test_an_unknown_model_suggests_the_zoo_name(client):
    resp = client.post("/jobs", json={"model": "resnet50", "dataset": "digits"})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["field"] == "model"
    assert problem["msg"].startswith(
        "unknown model 'resnet50' (did you mean 'torchvision.resnet50'?); allowed: ")
