"""Which Keras dtype policy a model computes in: `auto` picks the fastest one this machine computes natively.

`resolve_precision` is the pure choice, from the CPU's flags and the GPU's compute capability; `machine_precision`
reads them from this machine; `slow_policy_warning` names an explicit policy this machine only emulates.
"""

from __future__ import annotations

from stages.common.cpu import BFLOAT16_FLAGS, cpu_flags

AUTO = "auto"  # the params value; the others are Keras dtype policies, taken as they are
BFLOAT16_GPU, FLOAT16_GPU = (8, 0), (7, 0)  # Ampere on: bfloat16 tensor cores; Volta/Turing: float16 ones


def resolve_precision(
    requested: str, cpu_flags: set[str] | frozenset[str] | None, gpu_compute_capability: tuple[int, ...] | None
) -> str:
    """The Keras dtype policy for `requested`: an explicit policy as it is; `auto`, on a GPU (its CUDA compute
    capability; (0, 0) where TensorFlow reports none) mixed_bfloat16 from 8.0, mixed_float16 on 7.x, else float32;
    on a CPU (its flags; None where they cannot be read) mixed_bfloat16 with AMX or AVX512_BF16, else float32."""
    if requested != AUTO:
        return requested
    if gpu_compute_capability is not None:
        if tuple(gpu_compute_capability) >= BFLOAT16_GPU:
            return "mixed_bfloat16"
        return "mixed_float16" if tuple(gpu_compute_capability) >= FLOAT16_GPU else "float32"
    return "mixed_bfloat16" if cpu_flags and cpu_flags & BFLOAT16_FLAGS else "float32"


def gpu_compute_capability() -> tuple[int, ...] | None:
    """The compute capability of the GPU TensorFlow places work on (its first); None without a GPU, (0, 0) for one
    TensorFlow reports none for (not CUDA)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0))


def machine_precision(requested: str) -> str:
    """`requested` resolved for this machine (an explicit policy is returned as it is, without looking)."""
    if requested != AUTO:
        return requested
    return resolve_precision(requested, cpu_flags(), gpu_compute_capability())


def slow_policy_warning(
    policy: str, cpu_flags: set[str] | frozenset[str] | None, gpu_compute_capability: tuple[int, ...] | None
) -> str | None:
    """Why `policy` (explicit) is slower here than float32, or None: float16 without a GPU, bfloat16 on a CPU
    without AMX or AVX512_BF16 (or one whose flags cannot be read)."""
    if gpu_compute_capability is not None:
        return None
    if policy == "mixed_float16":
        return "mixed_float16 without a GPU: float16 on a CPU is slower, not faster"
    if policy == "mixed_bfloat16" and cpu_flags is None:
        return "mixed_bfloat16 on a CPU whose flags cannot be read (no /proc/cpuinfo): bfloat16 may be emulated here"
    if policy == "mixed_bfloat16" and not cpu_flags & BFLOAT16_FLAGS:
        return "mixed_bfloat16 on a CPU without AMX or AVX512_BF16: bfloat16 is emulated here, slower than float32"
    return None
