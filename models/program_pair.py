"""A tenant's architecture as two torch.export programs, one module to train.

A GraphModule from ExportedProgram.module() cannot switch modes (.train() raises "Calling
train() is not supported yet"), and a train-mode export freezes the train-mode choices
(dropout on, BatchNorm on batch statistics, stochastic depth) into its graph. So a model is
a pair: the train-mode program's graph runs while the pair is in train mode, the eval-mode
one's otherwise. Both graphs run in their lifted form (parameters and buffers as inputs):
the one set of tensors lives on the pair itself, under the programs' own names (state_dict
keys are the eager module's), so .to(), state_dict(), optimizers and DDP see an ordinary
module. The programs come from core.program_archive.load_checked (models/ cannot import it).
"""
from __future__ import annotations

import torch
from torch import nn


def _owner(root: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    """The module that holds fqn's tensor (made on the way, empty), and its attribute."""
    *path, leaf = fqn.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module, leaf


class _Graph:
    """One program's lifted graph and how its inputs and outputs map to the pair's tensors
    (held in a plain attribute: it is not a submodule, its tensors are the pair's)."""

    def __init__(self, root: nn.Module, program) -> None:
        from torch.export.graph_signature import InputKind, OutputKind

        self.module = program.graph_module
        self.inputs: list[tuple[nn.Module, str] | None] = []
        for spec in program.graph_signature.input_specs:
            self.inputs.append(None if spec.kind == InputKind.USER_INPUT
                               else _owner(root, spec.target))
        self.updates: list[tuple[nn.Module, str] | None] = []
        for spec in program.graph_signature.output_specs:
            self.updates.append(_owner(root, spec.target)
                                if spec.kind == OutputKind.BUFFER_MUTATION else None)
        self.output = next(i for i, spec in enumerate(program.graph_signature.output_specs)
                           if spec.kind == OutputKind.USER_OUTPUT)
        self.device: torch.device | None = None  # what the graph's device arguments name

    def _follow(self, device: torch.device) -> None:
        """The graph's device arguments (stochastic depth's noise is made by
        `aten.empty(..., device=cpu)`, as exported) made the images' device: the network
        runs on whichever device it is moved to, as the eager module would."""
        from torch.fx.node import map_aggregate

        def moved(value):
            return device if isinstance(value, torch.device) else value

        changed = False
        for node in self.module.graph.nodes:
            if node.op != "call_function":
                continue
            args, kwargs = map_aggregate(node.args, moved), map_aggregate(node.kwargs, moved)
            if args != node.args or kwargs != node.kwargs:
                node.args, node.kwargs, changed = args, kwargs, True
        if changed:
            self.module.recompile()
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device != self.device:
            self._follow(images.device)
        args = [images if slot is None else getattr(*slot) for slot in self.inputs]
        outputs = self.module(*args)
        for slot, value in zip(self.updates, outputs):
            if slot is not None:  # a functional graph returns its buffers' new values
                with torch.no_grad():
                    getattr(*slot).copy_(value)
        return outputs[self.output]


class ProgramPair(nn.Module):
    """forward(images) -> (N, K) scores: the train-mode graph in train mode, the eval-mode
    graph (the train one for a lone program) in eval mode."""

    def __init__(self, train_program, eval_program=None) -> None:
        super().__init__()
        for program in (train_program, eval_program):
            if program is not None:
                self._register(program)
        self.__dict__["_graphs"] = (_Graph(self, train_program),
                                    _Graph(self, eval_program or train_program))
        ops = {getattr(n.target, "_opname", "") for n in train_program.graph.nodes}
        # BatchNorm over one image's features fails in train mode (models.min_train_batch).
        self.min_train_batch = 2 if any("batch_norm" in op for op in ops) else 1

    def _register(self, program) -> None:
        """The program's parameters and buffers on the pair, under their own names (those
        the pair already holds stay: the eval-mode program's are the train-mode one's)."""
        from torch.export.graph_signature import InputKind

        tensors = {**program.state_dict, **program.constants}
        for spec in program.graph_signature.input_specs:
            if spec.kind == InputKind.USER_INPUT:
                continue
            owner, leaf = _owner(self, spec.target)
            if leaf in owner._parameters or leaf in owner._buffers:
                continue
            value = tensors[spec.target]
            if spec.kind == InputKind.PARAMETER:
                owner.register_parameter(leaf, value if isinstance(value, nn.Parameter)
                                         else nn.Parameter(value))
            else:  # buffers, and lifted constants as buffers a state_dict leaves out
                owner.register_buffer(leaf, value, persistent=bool(spec.persistent))

    def set_mode(self, training: bool) -> None:
        """models.set_mode's hook: which graph forward runs."""
        self.train(training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._graphs[0 if self.training else 1](images)
