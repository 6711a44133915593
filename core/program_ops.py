"""The operations a tenant's torch.export program may hold (docs/concepts.md lists them).

An explicit allow-list of ATen operator packets, not "anything in torch.ops.aten": aten also
holds operators that read files (aten.from_file), print, or repoint a tensor at another
storage (aten.set_), none of which a plain CNN or transformer needs. The list covers what
torch.export emits for torchvision's classifiers and nn.Transformer in train and eval mode,
and the common layers beside them. Besides aten, only Python's own arithmetic on sizes
(`_operator.mul` for `x.view(x.size(0) * 8, -1)` and the like) is allowed.
"""
from __future__ import annotations

_GROUPS = {
    "convolution and pooling": (
        "conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d "
        "conv_transpose3d max_pool1d max_pool2d max_pool3d max_pool2d_with_indices avg_pool1d "
        "avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
        "_adaptive_avg_pool2d adaptive_max_pool1d adaptive_max_pool2d upsample_nearest1d "
        "upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d "
        "upsample_trilinear3d _upsample_bilinear2d_aa _upsample_bicubic2d_aa pixel_shuffle "
        "pixel_unshuffle channel_shuffle native_channel_shuffle"),
    "normalisation": (
        "batch_norm native_batch_norm _native_batch_norm_legit "
        "_native_batch_norm_legit_no_training _native_batch_norm_legit_functional layer_norm "
        "native_layer_norm group_norm native_group_norm instance_norm rms_norm"),
    "dropout and stochastic depth": (
        "dropout dropout_ native_dropout feature_dropout feature_dropout_ alpha_dropout "
        "alpha_dropout_ feature_alpha_dropout feature_alpha_dropout_ bernoulli bernoulli_"),
    "activations": (
        "relu relu_ relu6 hardtanh hardtanh_ leaky_relu leaky_relu_ gelu gelu_ silu silu_ "
        "sigmoid sigmoid_ tanh tanh_ hardsigmoid hardsigmoid_ hardswish hardswish_ mish mish_ "
        "elu elu_ selu selu_ celu celu_ softplus prelu _prelu_kernel glu softmax _softmax "
        "log_softmax _log_softmax log_sigmoid threshold threshold_ rrelu rrelu_ "
        "rrelu_with_noise"),
    "matrix products and attention": (
        "linear matmul mm bmm addmm baddbmm einsum t scaled_dot_product_attention"),
    "elementwise arithmetic": (
        "add add_ sub sub_ rsub mul mul_ div div_ neg abs pow sqrt rsqrt exp log log1p expm1 "
        "reciprocal square clamp clamp_ clamp_min clamp_max clip minimum maximum where sign "
        "floor ceil round trunc fmod remainder erf sin cos lerp addcmul addcdiv floor_divide "
        "eq ne lt le gt ge logical_not logical_and logical_or masked_fill masked_fill_"),
    "reductions": (
        "mean sum amax amin max min argmax argmin var std var_mean std_mean norm "
        "linalg_vector_norm "
        "logsumexp prod cumsum all any"),
    "shapes and views": (
        "view reshape _unsafe_view flatten unflatten permute transpose contiguous clone expand "
        "expand_as squeeze unsqueeze cat concat stack split split_with_sizes chunk unbind "
        "narrow select slice index index_select gather repeat tile roll flip pad "
        "constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d "
        "alias detach view_as reshape_as movedim moveaxis swapaxes swapdims unfold tril "
        "triu"),
    "new tensors and conversions": (
        "zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full new_empty "
        "empty empty_like arange scalar_tensor lift_fresh_copy _to_copy to type_as fill_"),
    "sizes and export's own checks": (
        "sym_size sym_numel _assert_tensor_metadata _assert_scalar "
        "sym_constrain_range_for_size"),
}

ALLOWED_ATEN_OPS: dict[str, frozenset[str]] = {
    group: frozenset(names.split()) for group, names in _GROUPS.items()}
ALLOWED_ATEN_PACKETS = frozenset().union(*ALLOWED_ATEN_OPS.values())

# Python's operators on symbolic sizes, as torch.export serialises them.
ALLOWED_OPERATORS = frozenset(
    f"_operator.{name}" for name in "getitem add sub mul floordiv mod neg truediv".split())

# Operators whose behaviour is the module's train/eval choice, frozen into the graph when it
# was exported (a train-mode export updates BatchNorm's running statistics and drops
# activations; an eval-mode one does neither). scaled_dot_product_attention counts only
# with a dropout_p above 0 (core.program_graph).
MODE_DEPENDENT_PACKETS = frozenset(
    "batch_norm native_batch_norm _native_batch_norm_legit "
    "_native_batch_norm_legit_no_training _native_batch_norm_legit_functional "
    "dropout dropout_ native_dropout feature_dropout feature_dropout_ alpha_dropout "
    "alpha_dropout_ feature_alpha_dropout feature_alpha_dropout_ bernoulli bernoulli_ "
    "rrelu rrelu_ rrelu_with_noise".split())

ATEN_PREFIX = "torch.ops.aten."


def op_label(target: str) -> str:
    """How an op is named to users: aten.conv2d.default, _operator.mul."""
    return target[len("torch.ops."):] if target.startswith("torch.ops.") else target


def aten_packet(target: str) -> str | None:
    """conv2d for torch.ops.aten.conv2d.default; None for anything else (an out= overload)."""
    if not target.startswith(ATEN_PREFIX):
        return None
    parts = target[len(ATEN_PREFIX):].split(".")
    if len(parts) != 2 or not all(p.isidentifier() for p in parts):
        return None
    # out= overloads write into a tensor they are given: export never emits them.
    return None if parts[1] == "out" or parts[1].endswith("_out") else parts[0]


def is_allowed(target: str) -> bool:
    return target in ALLOWED_OPERATORS or aten_packet(target) in ALLOWED_ATEN_PACKETS
