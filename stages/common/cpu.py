"""What this CPU is: its model name and the instruction-set flags that decide how fast bfloat16 runs.

Two machines can share a model name ("Intel(R) Xeon(R) Processor" is both a Sapphire Rapids with AMX and an Ice
Lake without bfloat16), so records and the precision choice read the flags too."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")  # oneDNN computes bfloat16 natively with either
NOTED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # what a benchmark record keeps


def _cpuinfo(path: Path) -> list[str] | None:
    try:
        return path.read_text().splitlines()
    except OSError:  # not Linux
        return None


def cpu_model(path: Path = CPUINFO) -> str | None:
    for line in _cpuinfo(path) or []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags(path: Path = CPUINFO) -> set[str] | None:
    """The first processor's flags; None where they cannot be read (not Linux): unknown, not absent."""
    for line in _cpuinfo(path) or []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def native_bfloat16(flags: set[str] | None) -> bool | None:
    """Whether the CPU computes bfloat16 natively (AMX or AVX512_BF16); None: unknown."""
    return None if flags is None else any(flag in flags for flag in BFLOAT16_FLAGS)
