"""What can be trained: the models (datasets: api/routes/datasets.py)."""
from __future__ import annotations

from fastapi import APIRouter

from api.schemas import ModelList, ModelPublic
from core.jobspec import Hyperparameters
from models import MODELS

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
def list_models() -> ModelList:
    defaults = Hyperparameters().model_dump()
    return ModelList(models=[
        ModelPublic(name=m.name, description=m.description,
                    input="any (channels, height, width); adapts to the dataset",
                    default_hyperparameters=defaults) for m in MODELS.values()])
