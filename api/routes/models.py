"""What can be trained: the caller's own programs (POST /models, checked torch.export
archives; HTTP adapters over core.programs), then trainhub's four and torchvision's zoo, read
from the size table without building any (datasets: api/routes/datasets.py)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.auth import TenantDep
from api.deps import SessionDep
from api.errors import responses
from api.schemas import ModelList, ModelPublic, ProgramPublic
from core import programs
from core.config import get_settings
from core.dataset_uploads import MAX_NAME
from core.jobspec import Hyperparameters
from core.tables import Program
from core.tenancy import get_owned, visible
from models import MODELS, ModelInfo

router = APIRouter(tags=["models"])

BUILTIN_INPUT = "any (channels, height, width); adapts to the dataset"


def model_public(info: ModelInfo, defaults: dict) -> ModelPublic:
    zoo = info.zoo
    if zoo is None:
        return ModelPublic(id=info.name, name=info.name, description=info.description,
                           input=BUILTIN_INPUT, default_hyperparameters=defaults,
                           source="builtin", family="builtin", parameters=None,
                           parameters_per_class=None, min_image_size=None,
                           fixed_image_size=None, pretrained_weights=[])
    return ModelPublic(
        id=info.name, name=info.name, description=info.description,
        input=f"1 or 3 channels (grayscale repeated to 3), {zoo.input_text}: images of "
              "another size are resized on the device to hyperparameters.image_size",
        default_hyperparameters=defaults, source="torchvision", family=zoo.family,
        parameters=zoo.parameters_at_10, parameters_per_class=zoo.parameters_per_class,
        min_image_size=zoo.min_size,
        fixed_image_size=list(zoo.fixed_size) if zoo.fixed_size else None,
        pretrained_weights=list(zoo.weights))


def program_public(row: Program) -> ProgramPublic:
    return ProgramPublic(
        id=row.id, name=row.name, input_shape=row.input_shape, num_classes=row.num_classes,
        parameter_count=row.parameter_count, ops=row.ops, source_filename=row.source_filename,
        eval_source_filename=row.eval_source_filename, sha256=row.sha256,
        size_bytes=row.size_bytes, owner=row.owner, created_at=row.created_at)


def program_entry(row: Program, defaults: dict) -> ModelPublic:
    """A program as GET /models lists it beside the built-ins."""
    channels, height, width = row.input_shape
    return ModelPublic(
        id=row.id, name=row.name,
        description=f"your own architecture: a torch.export program "
                    f"({row.source_filename or 'uploaded'}), {row.num_classes} classes",
        input=f"{channels} channels, exactly {height}x{width}",
        default_hyperparameters=defaults, source="program", family="program",
        parameters=row.parameter_count, parameters_per_class=None, min_image_size=None,
        fixed_image_size=[height, width], pretrained_weights=[], program=program_public(row))


@router.get("/models", response_model=ModelList)
def list_models(session: SessionDep, tenant: TenantDep, q: Annotated[str | None, Query(
        max_length=100, description="only the models whose name holds this text "
                                    "(either case): resnet, vit_, torchvision.")] = None,
                ) -> ModelList:
    """The caller's own programs (an admin's: everyone's), newest first, then the built-ins
    and torchvision's zoo."""
    defaults = Hyperparameters().model_dump()
    wanted = (q or "").lower()
    own = session.scalars(visible(select(Program), Program, tenant)
                          .order_by(Program.created_at.desc())).all()
    return ModelList(models=[program_entry(r, defaults) for r in own
                             if wanted in r.name.lower()]
                     + [model_public(m, defaults) for m in MODELS.values()
                        if wanted in m.name.lower()],
                     max_model_parameters=get_settings().max_model_parameters)


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ProgramPublic,
             responses=responses(409, 413, 422))
def upload_model(
    session: SessionDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File(description="the train-mode torch.export archive (.pt2): "
                                                 "torch.export.save of the module in train "
                                                 "mode, with a dynamic batch dimension")],
    eval_file: Annotated[UploadFile | None, File(
        description="the eval-mode archive of the same module (same parameters and "
                    "buffers); may be left out when the train graph has no mode-dependent "
                    "op (dropout, batch norm, ...)")] = None,
    name: Annotated[str | None, Form(max_length=MAX_NAME)] = None,
) -> Response:
    """Checked (each archive's entries and graph, then the pair) before anything loads it,
    in a thread of the API: a 422 naming `file` or `eval_file` says why one is refused."""
    uploads = [programs.Upload(field, f.file, f.size, f.filename)
               for field, f in ((programs.TRAIN_FIELD, file), (programs.EVAL_FIELD, eval_file))
               if f is not None]
    row = programs.accept_program(session, tenant, uploads[0],
                                  uploads[1] if len(uploads) > 1 else None, name,
                                  get_settings())
    return JSONResponse(program_public(row).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/models/{row.id}"})


@router.get("/models/{model_id}", response_model=ProgramPublic, responses=responses(404))
def read_model(model_id: str, session: SessionDep, tenant: TenantDep) -> ProgramPublic:
    """One of the caller's programs (GET /models lists the built-ins)."""
    return program_public(get_owned(session, Program, model_id, tenant))


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=responses(404, 409))
def delete_model(model_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    programs.delete_program(session, model_id, tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
