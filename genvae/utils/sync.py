"""Whether a training step may read a tensor back to the host.

On an accelerator, turning a tensor into a Python value (``bool``, ``int``, ``float``, ``item``, ``tolist``)
makes the host wait for the device: once per training step, that wait is a stall per step (issue #20, item 1).
In host memory (a CPU run) the same read costs nothing. Model code that wants a host-side decision in a step
(a validity check of its input, a data-dependent branch) asks :func:`reads_are_free` and takes a device-only
path where it is not.

``SIMULATE_ACCELERATOR = True`` makes CPU tensors take the accelerator's paths: tests use it to count the
host reads a GPU step would make (tests/test_logging.py) and to run the device paths on a CPU.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["SIMULATE_ACCELERATOR", "reads_are_free"]

SIMULATE_ACCELERATOR = False


def reads_are_free(tensor: Tensor) -> bool:
    """Whether reading ``tensor`` to the host costs no wait for a device: it lives in host memory (and no
    test is simulating an accelerator)."""
    return tensor.device.type == "cpu" and not SIMULATE_ACCELERATOR
