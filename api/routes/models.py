"""What can be trained: the models, trainhub's four and torchvision's zoo, read from the
size table without building any (datasets: api/routes/datasets.py)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.schemas import ModelList, ModelPublic
from core.config import get_settings
from core.jobspec import Hyperparameters
from models import MODELS, ModelInfo

router = APIRouter(tags=["models"])

BUILTIN_INPUT = "any (channels, height, width); adapts to the dataset"


def model_public(info: ModelInfo, defaults: dict) -> ModelPublic:
    zoo = info.zoo
    if zoo is None:
        return ModelPublic(name=info.name, description=info.description, input=BUILTIN_INPUT,
                           default_hyperparameters=defaults, source="builtin",
                           family="builtin", parameters=None, parameters_per_class=None,
                           min_image_size=None, fixed_image_size=None, pretrained_weights=[])
    return ModelPublic(
        name=info.name, description=info.description,
        input=f"1 or 3 channels (grayscale repeated to 3), {zoo.input_text}: images of "
              "another size are resized on the device to hyperparameters.image_size",
        default_hyperparameters=defaults, source="torchvision", family=zoo.family,
        parameters=zoo.parameters_at_10, parameters_per_class=zoo.parameters_per_class,
        min_image_size=zoo.min_size,
        fixed_image_size=list(zoo.fixed_size) if zoo.fixed_size else None,
        pretrained_weights=list(zoo.weights))


@router.get("/models", response_model=ModelList)
def list_models(q: Annotated[str | None, Query(
        max_length=100, description="only the models whose name holds this text "
                                    "(either case): resnet, vit_, torchvision.")] = None,
                ) -> ModelList:
    defaults = Hyperparameters().model_dump()
    wanted = (q or "").lower()
    return ModelList(models=[model_public(m, defaults) for m in MODELS.values()
                             if wanted in m.name.lower()],
                     max_model_parameters=get_settings().max_model_parameters)
