"""Block-wise CPU offload of a frozen LoRA base (`offload: blocks`).

The frozen weights of the transformer's blocks live in pinned CPU memory. Just before a block's
forward they are copied to the device, and just after it the block gets its CPU weights back, so
the device holds the frozen weights of one block at a time (plus those autograd still needs for
backward). What trains never moves: the LoRA adapters, their gradients, the optimiser state and
the EMA stay on the device, as does the rest of the transformer (patch and text embeddings, the
output head: a few percent of its weights).

A visit swaps objects, never `param.data`: the forward pre-hook sets fresh Parameters over device
copies in place of the block's frozen ones, and the forward hook sets the CPU ones back. What
autograd saved for backward (a norm's weight as that very object, a Linear's as a view of it) is
then a device copy, which stays valid, and alive, until backward has used it, whatever the hooks
do to the block meanwhile.
Gradient checkpointing is required (the config refuses offload without it): its first forward
saves nothing, and backward runs each block's forward again, which the same hooks copy in again,
so a block's weights are on the device only while its forward or its backward runs. Without it,
autograd would hold every block's copies until backward: correct, but no memory saved. The
forward hook runs even when a forward raises (`always_call`), as checkpointing's recomputation
does once it has what backward needs (its early stop).

Why not diffusers' group offloading (`diffusers.hooks.apply_group_offloading`, 0.42): it is
written for inference. It moves a group by assigning `param.data`, which also moves the weights
autograd saved as themselves (the norms' weights: layer_norm and rms_norm save theirs, a Linear
saves a transposed view, which keeps its old storage) back to the CPU before backward uses them;
and it moves the trained adapters with their block, so they are back on the CPU when backward
makes their gradients on the GPU and when the optimiser steps.

The copies run on the compute stream from pinned memory (the host does not wait, the GPU does:
no prefetch on a side stream). Per step and block that is two copies of its frozen weights (the
forward and its recomputation): 93 MB each for a 1.3B block in bf16, 0.7 GB for a 14B block.
PyTorch's pinned-memory allocator rounds each tensor up to a power of two, so the host holds about
1.5 times the blocks' weights (1.3B: 4 GB for 2.8; 14B: 43 GB for 28).
"""

from __future__ import annotations

import torch
from torch import nn


def blocks_of(transformer: nn.Module) -> list[nn.Module]:
    """The transformer's blocks: the modules of its ModuleLists (Wan: `blocks`), the groups
    diffusers' block-level offloading takes too."""
    return [block for child in transformer.children() if isinstance(child, nn.ModuleList) for block in child]


class BlockOffload:
    """Offloads the frozen weights of `transformer`'s blocks (see the module docstring) from the
    moment it is made; `remove()` puts them back on `device` for good."""

    def __init__(self, transformer: nn.Module, device: torch.device | str):
        self.device = torch.device(device)
        self.visits = [_Visit(block, self.device) for block in blocks_of(transformer)]

    def remove(self) -> None:
        for visit in self.visits:
            visit.remove()
        self.visits = []


class _Visit:
    """The hooks that bring one block's frozen weights to the device for each of its forwards."""

    def __init__(self, block: nn.Module, device: torch.device):
        self.device = device
        # (module that owns the weight, its attribute name, the weight in CPU memory)
        self.frozen = []
        for name, param in block.named_parameters():
            if not param.requires_grad:
                owner, _, attribute = name.rpartition(".")
                param.data = _host_copy(param.data, pin=device.type == "cuda")
                self.frozen.append((block.get_submodule(owner), attribute, param))
        self.handles = [
            block.register_forward_pre_hook(self.onload),
            block.register_forward_hook(self.offload, always_call=True),
        ]

    def onload(self, block: nn.Module, args) -> None:
        for owner, attribute, param in self.frozen:
            copy = param.detach().to(self.device, non_blocking=True)
            setattr(owner, attribute, nn.Parameter(copy, requires_grad=False))

    def offload(self, block: nn.Module, args, output) -> None:
        for owner, attribute, param in self.frozen:
            setattr(owner, attribute, param)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.offload(None, None, None)  # in case a forward stopped between the hooks (out of memory)
        for _, _, param in self.frozen:
            param.data = param.data.to(self.device)


def _host_copy(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    """`tensor` in CPU memory, pinned when it is to be copied to a GPU (copies from pinned memory
    are asynchronous and faster)."""
    if tensor.device.type == "cpu" and not pin:
        return tensor
    return torch.empty_like(tensor, device="cpu", pin_memory=pin).copy_(tensor)
