"""core.program_archive on real torch.export archives (tests/programs.py) and hostile ones:
each refusal is a ProgramRejected saying why, and nothing from a file ever runs (the crafted
pickles and expressions would leave a marker file; torch.export.load does run them)."""
from __future__ import annotations

import logging
import pickle
import struct
import tracemalloc
import zipfile

import pytest
import torch
from torch import nn

from core.program_archive import (
    ProgramLimits,
    ProgramRejected,
    check_archive,
    check_pair,
    check_single,
    load_checked,
    load_checked_pair,
)
from core.program_ops import ALLOWED_ATEN_PACKETS, MODE_DEPENDENT_PACKETS
from tests import programs
from tests.programs import CLASSES, SHAPE, export, images, nodes, rewrite, save


@torch.library.custom_op("trainhub_tests::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x):
    return torch.empty_like(x)


def torch_export_load(path):
    """torch.export.load, its fallback's warning silenced (its format string is broken)."""
    serde_log = logging.getLogger("torch._export.serde.serialize")
    serde_log.disabled = True
    try:
        return torch.export.load(path)
    finally:
        serde_log.disabled = False


@pytest.fixture
def pair(tmp_path):
    return programs.residual_pair(tmp_path)


def refused(path, *words, limits=ProgramLimits(), field="file") -> ProgramRejected:
    with pytest.raises(ProgramRejected) as caught:
        check_archive(path, limits, field=field)
    message = str(caught.value)
    assert caught.value.field == field
    for word in words:
        assert word in message, message
    return caught.value


# ---- archives that are taken -----------------------------------------------------------------

def test_a_train_and_eval_pair_is_checked_and_described(pair):
    train, eval_ = (check_archive(p) for p in pair)
    eager = programs.residual_net()
    assert train.input_shape == SHAPE and train.num_classes == CLASSES
    assert list(train.parameters) == [n for n, _ in eager.named_parameters()]
    assert train.parameters == {n: tuple(p.shape) for n, p in eager.named_parameters()}
    assert list(train.buffers) == [n for n, _ in eager.named_buffers()]
    assert train.parameter_count == sum(p.numel() for p in eager.parameters())
    assert "aten.conv2d.default" in train.ops and train.ops == sorted(train.ops)
    assert train.mode_dependent_ops == ["aten.batch_norm.default", "aten.bernoulli_.float",
                                        "aten.dropout.default"]
    assert eval_.mode_dependent_ops == ["aten.batch_norm.default", "aten.dropout.default"]
    check_pair(train, eval_)
    with pytest.raises(ProgramRejected, match="aten.batch_norm.default, aten.bernoulli_.float"):
        check_single(train)


def test_a_lone_program_without_mode_dependent_ops_is_taken(tmp_path):
    path = save(export(programs.PlainNet(), training=True), tmp_path / "plain.pt2")
    info = check_archive(path)
    assert info.mode_dependent_ops == [] and info.num_classes == CLASSES
    check_single(info)
    train, eval_ = load_checked_pair(path)
    assert eval_ is None and isinstance(train, torch.export.ExportedProgram)


def test_load_checked_gives_the_program_the_eager_module_computes(pair):
    eager = programs.residual_net().eval()
    program = load_checked(pair[1])
    x = images(3, seed=5)
    assert torch.equal(program.module()(x), eager(x))
    assert program.example_inputs is None  # the sample inputs were never read


def test_the_allow_list_is_aten_and_holds_every_mode_dependent_op():
    assert MODE_DEPENDENT_PACKETS <= ALLOWED_ATEN_PACKETS
    assert all(hasattr(torch.ops.aten, name) for name in ALLOWED_ATEN_PACKETS)
    assert not {"from_file", "set_", "as_strided", "resize_", "_local_scalar_dense"} & (
        ALLOWED_ATEN_PACKETS)


# ---- not an archive --------------------------------------------------------------------------

def test_a_pickle_renamed_pt2_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt2"
    path.write_bytes(pickle.dumps(programs.LeavesMarker(marker)))
    refused(path, "not a torch.export archive")
    path.write_bytes(programs.marker_pickle(marker))  # torch.save's own format: a zip
    refused(path, "not a torch.export archive")
    with pytest.raises(ProgramRejected):
        load_checked(path)
    assert not marker.exists()


def test_a_truncated_file_is_refused(pair, tmp_path):
    data = pair[0].read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        path = tmp_path / "cut.pt2"
        path.write_bytes(data[:cut])
        refused(path, "not a torch.export archive")


def test_a_file_over_the_size_cap_is_refused(pair):
    refused(pair[0], "the limit is 1000", limits=ProgramLimits(max_file_bytes=1000))


# ---- pickles and code inside a real archive --------------------------------------------------

def test_crafted_sample_inputs_never_run(pair, tmp_path):
    marker = tmp_path / "ran"
    path = rewrite(pair[1], tmp_path / "evil.pt2",
                   replace={"data/sample_inputs/model.pt": programs.marker_pickle(marker)})
    assert check_archive(path).num_classes == CLASSES
    program = load_checked(path)
    program.module()(images(2))
    assert not marker.exists()
    torch_export_load(path)  # the threat is real: torch's own loader runs it
    assert marker.exists()


def test_pickled_weights_are_refused(tmp_path):
    from torch.testing._internal.two_tensor import TwoTensor

    net = programs.PlainNet()
    net.head.weight = nn.Parameter(TwoTensor(net.head.weight.detach(),
                                             net.head.weight.detach()))
    path = save(export(net, training=False), tmp_path / "subclass.pt2")
    refused(path, "head.weight", "use_pickle")


def test_a_legacy_pickled_weights_file_is_refused(pair, tmp_path):
    path = rewrite(pair[0], tmp_path / "legacy.pt2", add={"data/weights/model.pt": b"x"})
    refused(path, "pickle", "data/weights/model.pt")


def test_guards_code_in_the_graph_never_runs(pair, tmp_path):
    marker = tmp_path / "ran"

    def add_guard(document):
        document["guards_code"] = [f"open({str(marker)!r}, 'w') is None"]

    path = rewrite(pair[1], tmp_path / "guard.pt2", graph=add_guard)
    program = load_checked(path)
    program.module()(images(2))
    assert not marker.exists()
    with pytest.raises(AssertionError):
        torch_export_load(path).module()(images(2))
    assert marker.exists()


def test_a_size_expression_that_is_code_is_refused(pair, tmp_path):
    marker = tmp_path / "ran"

    def inject(document):
        size = document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]
        size["as_expr"]["expr_str"] = (f"open({str(marker)!r}, 'w') and "
                                       + size["as_expr"]["expr_str"])

    path = rewrite(pair[1], tmp_path / "expr.pt2", graph=inject)
    refused(path, "size expression")
    with pytest.raises(ProgramRejected):
        load_checked(path)
    assert not marker.exists()


def test_a_node_name_that_is_not_an_identifier_is_refused(pair, tmp_path):
    def rename(document):
        nodes(document)[0]["name"] = "conv2d; open('x', 'w')"

    refused(rewrite(pair[1], tmp_path / "name.pt2", graph=rename), "not a plain identifier")


def test_custom_objects_and_aotinductor_code_are_refused(pair, tmp_path):
    refused(rewrite(pair[0], tmp_path / "obj.pt2", add={"data/constants/custom_obj_0": b"x"}),
            "custom object")
    refused(rewrite(pair[0], tmp_path / "so.pt2",
                    add={"data/aotinductor/model/model.so": b"\x7fELF"}), "AOTInductor")


# ---- ops ---------------------------------------------------------------------------------------

class CustomOpNet(programs.PlainNet):
    def forward(self, x):
        return super().forward(torch.ops.trainhub_tests.double(x))


def test_an_op_outside_aten_is_refused_by_name(tmp_path):
    path = save(export(CustomOpNet(), training=False), tmp_path / "custom.pt2")
    refused(path, "trainhub_tests.double.default", "outside torch.ops.aten")


def test_an_aten_op_off_the_allow_list_is_refused(pair, tmp_path):
    def swap(document):
        node = next(n for n in nodes(document) if n["target"].endswith("relu.default"))
        node["target"] = "torch.ops.aten.from_file.default"

    refused(rewrite(pair[1], tmp_path / "file.pt2", graph=swap), "aten.from_file.default")


# ---- sizes -------------------------------------------------------------------------------------

def test_a_declared_5_gb_weight_is_refused_before_reading(pair, tmp_path):
    def grow(config):
        meta = config["config"]["head.weight"]["tensor_meta"]
        meta["sizes"], meta["strides"] = [{"as_int": 1_250_000_000}], [{"as_int": 1}]

    path = rewrite(pair[0], tmp_path / "5gb.pt2", weights=grow)
    refused(path, "declares 5000", "bytes of weights", "the limit is 2147483648")


def _zip_bomb(source, target, unpacked: int):
    rewrite(source, target)
    with zipfile.ZipFile(target, "a", zipfile.ZIP_DEFLATED) as zf:
        root = zf.namelist()[0].split("/")[0]
        with zf.open(f"{root}/extra/bomb", "w") as entry:
            for _ in range(unpacked // 2**20):
                entry.write(bytes(2**20))
    return target


def test_a_zip_bomb_is_refused_from_its_headers(pair, tmp_path):
    path = _zip_bomb(pair[0], tmp_path / "bomb.pt2", 64 * 2**20)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        refused(path, "unpacks to", limits=ProgramLimits(max_unpacked_bytes=32 * 2**20))
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()


def _declare_size(path, entry: str, size: int) -> None:
    """Rewrite the sizes the zip's headers give an entry (local and central)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(entry))
    struct.pack_into("<I", data, info.header_offset + 22, size)
    name = info.filename.encode()
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


def test_an_entry_whose_header_lies_is_refused_while_streaming(pair, tmp_path):
    with zipfile.ZipFile(pair[0]) as zf:
        declared = next(i.file_size for i in zf.infolist() if i.filename.endswith("weight_0"))
    big = {"archive_format": b"pt2" + bytes(16 * 2**20),
           "data/weights/weight_0": bytes(16 * 2**20)}
    format_liar = rewrite(pair[0], tmp_path / "format.pt2",
                          replace={"archive_format": big["archive_format"]})
    _declare_size(format_liar, "archive_format", 3)
    weight_liar = rewrite(pair[0], tmp_path / "weight.pt2",
                          replace={"data/weights/weight_0": big["data/weights/weight_0"]})
    _declare_size(weight_liar, "weight_0", declared)
    assert check_archive(weight_liar).num_classes == CLASSES  # its headers are fine
    tracemalloc.start()
    try:
        refused(format_liar, "corrupt", "archive_format")
        with pytest.raises(ProgramRejected, match="corrupt.*weight_0"):
            load_checked(weight_liar)
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()


def test_a_weight_entry_no_config_names_is_refused(pair, tmp_path):
    path = rewrite(pair[0], tmp_path / "extra.pt2", add={"data/weights/weight_99": bytes(8)})
    refused(path, "weight_99", "configs do not name")


# ---- what the program takes and gives --------------------------------------------------------

def test_an_input_that_is_not_an_image_batch_is_refused(tmp_path):
    flat = save(export(nn.Linear(8, CLASSES), True, example=torch.randn(4, 8)), tmp_path / "a")
    refused(flat, "(N, C, H, W)")
    static = save(export(programs.PlainNet(), True, dynamic=False), tmp_path / "b.pt2")
    refused(static, "not dynamic", "Dim('batch')")


class ColumnNet(programs.PlainNet):
    def forward(self, x):
        return super().forward(x).unsqueeze(2)


class TwoOutputs(programs.PlainNet):
    def forward(self, x):
        return super().forward(x), x.mean()


def test_an_output_that_is_not_n_by_k_is_refused(tmp_path):
    refused(save(export(ColumnNet(), True), tmp_path / "c.pt2"), "(N, K)")
    refused(save(export(TwoOutputs(), True), tmp_path / "t.pt2"), "returns 2 outputs")


def test_a_pair_from_different_modules_is_refused_naming_the_tensors(pair, tmp_path):
    train = check_archive(pair[0])
    narrow = programs.ResidualNet(channels=6)
    other = check_archive(save(export(narrow, False), tmp_path / "narrow.pt2"), field="eval_file")
    with pytest.raises(ProgramRejected) as caught:
        check_pair(train, other)
    assert caught.value.field == "eval_file"
    assert "block.conv.weight is (8, 8, 3, 3) in train mode, (6, 6, 3, 3) in eval mode" in (
        str(caught.value))
    plain = check_archive(save(export(programs.PlainNet(), False), tmp_path / "plain.pt2"))
    with pytest.raises(ProgramRejected, match="missing block.bn.bias, block.bn.weight, block.conv.weight"):
        check_pair(train, plain)
    with pytest.raises(ProgramRejected, match="eval-mode program is not"):
        load_checked_pair(pair[0], tmp_path / "plain.pt2")


class EmptyNet(programs.PlainNet):
    def forward(self, x):
        scores = super().forward(x)
        return (torch.empty(x.shape[0], CLASSES) + x.new_empty(x.shape[0], CLASSES)
                + torch.empty_like(scores))


def test_uninitialised_memory_is_never_handed_out(tmp_path):
    path = save(export(EmptyNet(), training=False), tmp_path / "empty.pt2")
    assert {"aten.empty.memory_format", "aten.new_empty.default",
            "aten.empty_like.default"} <= set(check_archive(path).ops)
    program = load_checked(path)
    targets = {str(n.target) for n in program.graph.nodes}
    assert not {t for t in targets if "empty" in t}
    garbage = torch.full((64, 1024), float("nan"))  # left for the allocator to hand out
    del garbage
    assert torch.equal(program.module()(images(3)), torch.zeros(3, CLASSES))


def test_out_overloads_are_refused(pair, tmp_path):
    def to_out(document):
        node = next(n for n in nodes(document) if n["target"].endswith("relu.default"))
        node["target"] = "torch.ops.aten.relu.out"

    refused(rewrite(pair[1], tmp_path / "out.pt2", graph=to_out), "aten.relu.out")


def test_docs_list_exactly_the_allowed_ops():
    from pathlib import Path

    from core.program_ops import ALLOWED_ATEN_OPS

    text = (Path(__file__).resolve().parents[3] / "docs" / "concepts.md").read_text()
    table = text.split("<!-- program-ops:")[1].split("<!-- /program-ops -->")[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ")]
    listed = {group.strip(): {op.strip(" `") for op in ops.split(",")}
              for group, ops in rows[1:]}
    assert listed == {group: set(ops) for group, ops in ALLOWED_ATEN_OPS.items()}


def _paths(value, path=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield path + (key,)
            yield from _paths(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:3]):
            yield path + (index,)
            yield from _paths(child, path + (index,))


def test_a_graph_of_the_wrong_types_is_refused_not_a_crash(pair, tmp_path):
    """Values of other JSON types than torch.export writes, one at a time, at 80 places
    drawn from the graph and the weights config: each a ProgramRejected or taken."""
    import json
    import random

    with zipfile.ZipFile(pair[1]) as zf:
        graph = json.loads(zf.read("archive/models/model.json"))
        config = json.loads(zf.read("archive/data/weights/model_weights_config.json"))
    draw = random.Random(7)
    places = [("graph", p) for p in draw.sample(list(_paths(graph)), 60)] + [
        ("weights", p) for p in draw.sample(list(_paths(config)), 20)]
    for n, (which, place) in enumerate(places):
        wrong = draw.choice([None, 7, "s", [], {}, [{"x": 1}], 1e308])

        def edit(document, place=place, wrong=wrong):
            for key in place[:-1]:
                document = document[key]
            document[place[-1]] = wrong

        path = rewrite(pair[1], tmp_path / f"{n}.pt2", **{which: edit})
        try:
            check_archive(path)
        except ProgramRejected:
            pass
