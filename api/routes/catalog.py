"""What can be trained: models and datasets."""
from __future__ import annotations

from fastapi import APIRouter

from core.catalog import BUILTIN_DATASETS
from core.config import get_settings
from core.jobspec import Hyperparameters
from models import MODELS

router = APIRouter(tags=["catalog"])


@router.get("/models")
def list_models() -> dict:
    defaults = Hyperparameters().model_dump()
    return {"models": [{"name": m.name, "description": m.description,
                        "input": "any (channels, height, width); adapts to the dataset",
                        "default_hyperparameters": defaults} for m in MODELS.values()]}


@router.get("/datasets")
def list_datasets() -> dict:
    settings = get_settings()
    root = settings.resolved_dataset_root
    out = []
    for info in BUILTIN_DATASETS.values():
        item = {"name": info.name, "description": info.description, "shape": list(info.shape),
                "num_classes": len(info.classes), "classes": list(info.classes),
                "counts": {"train": info.train_size, "test": info.test_size},
                "source": "builtin"}
        if info.folder:
            folder = root / info.folder
            present = all((folder / f).exists() or (folder / f"{f}.gz").exists()
                          for f in info.files)
            cached = (settings.cache_dir / f"{info.name}.pt").exists()
            item["location"] = str(folder)
            item["available"] = present or cached or settings.allow_download
            item["status"] = ("ready" if present or cached else
                              "downloads on first use" if settings.allow_download else "missing")
        else:
            item["available"], item["status"] = True, "ready"
        out.append(item)
    return {"datasets": out}
