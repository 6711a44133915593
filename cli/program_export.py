"""`trainhub models upload file.py:Net` on the user's machine: the user's module imported,
its network exported with torch.export in train mode and in eval mode (a dynamic batch
dimension), and both archives checked as the server will check them (core.program_archive)
before anything is sent. The user's Python runs here only: the server gets the graphs."""
from __future__ import annotations

import importlib.util
import io
import logging
import sys
import uuid
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Iterator

from cli.client import CliError, one_line

# The example batch the export traces with: 2, not 1 (torch.export specialises a size of 1,
# and a BatchNorm in train mode refuses a batch of one).
EXAMPLE_BATCH = 2


def is_module_source(text: str) -> bool:
    """`my_model.py:Net` rather than a .pt2 file's path."""
    path, colon, attr = text.rpartition(":")
    return bool(colon) and path.endswith(".py") and attr.isidentifier()


def parse_input_shape(text: str | None) -> tuple[int, int, int]:
    """`3,32,32` as (channels, height, width)."""
    if text is None:
        raise CliError("--input-shape C,H,W is needed to export a module (the shape of one "
                       "image, e.g. 3,32,32)")
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CliError(f"--input-shape {text!r}: give channels,height,width as three positive "
                       "integers, e.g. 3,32,32")
    return shape  # type: ignore[return-value]


def load_network(source: str):
    """The nn.Module `file.py:Name` names: a module instance, or a class or function called
    without arguments. The file is imported with its folder on sys.path (for its siblings)."""
    import torch

    path_text, _, attr = source.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise CliError(f"cannot read {path}: no such file")
    name = f"trainhub_user_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise CliError(f"cannot import {path}: {_reason(exc)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    found = getattr(module, attr, None)
    if found is None:
        raise CliError(f"{path} has no {attr}")
    try:
        network = found if isinstance(found, torch.nn.Module) else found()
    except Exception as exc:
        raise CliError(f"cannot build {source}: {_reason(exc)}") from None
    if not isinstance(network, torch.nn.Module):
        raise CliError(f"{source} is not a torch.nn.Module (nor makes one without arguments)")
    return network


def _reason(exc: BaseException) -> str:
    """An exception's type and its message's first line (torch's run to pages)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return one_line(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, 500)


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.export logs guards and prints the partial graph on failure (to stderr): the
    failure is said in one line."""
    logging.disable(logging.CRITICAL)
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def export(network, source: str, input_shape: tuple[int, int, int], training: bool,
           path: Path) -> None:
    """The network in train or eval mode as a torch.export archive at path."""
    import torch
    from torch.export import Dim

    mode = "train" if training else "eval"
    network.train(training)
    example = (torch.randn(EXAMPLE_BATCH, *input_shape),)
    try:
        with _quiet():
            program = torch.export.export(network, example,
                                          dynamic_shapes=({0: Dim("batch")},))
            torch.export.save(program, path)
    except Exception as exc:
        raise CliError(f"cannot export {source} in {mode} mode: {_reason(exc)}") from None


def check(train: Path, eval_: Path | None):
    """Both archives as the server checks them (with the default limits); the train
    program's ProgramInfo."""
    from core import program_archive

    try:
        info = program_archive.check_archive(train)
        if eval_ is None:
            program_archive.check_single(info)
        else:
            program_archive.check_pair(info, program_archive.check_archive(eval_,
                                                                           field="eval_file"))
    except program_archive.ProgramRejected as exc:
        raise CliError(f"the server would refuse it: {one_line(str(exc))}") from None
    return info


def export_pair(source: str, input_shape: tuple[int, int, int], folder: Path
                ) -> tuple[Path, Path]:
    """file.py:Name exported in both modes under folder and checked: (train, eval)."""
    network = load_network(source)
    stem = source.rpartition(":")[2]
    train, eval_ = folder / f"{stem}-train.pt2", folder / f"{stem}-eval.pt2"
    export(network, source, input_shape, True, train)
    export(network, source, input_shape, False, eval_)
    check(train, eval_)
    return train, eval_
