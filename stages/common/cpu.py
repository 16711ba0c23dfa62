"""What this CPU is: its model name and the instruction-set flags that decide how fast bfloat16 runs.

Two machines can share a model name ("Intel(R) Xeon(R) Processor" is both a Sapphire Rapids with AMX and an Ice
Lake without bfloat16), so records and the precision choice read the flags too."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# the units that compute bfloat16 natively, which oneDNN uses: AMX (Sapphire Rapids on) and AVX512_BF16 (Cooper
# Lake, Zen 4 on); without them TensorFlow emulates bfloat16, several times slower than float32
BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
NOTED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # what a benchmark record keeps


def _cpuinfo(path: Path | None) -> list[str] | None:
    try:
        return (path or CPUINFO).read_text().splitlines()
    except OSError:  # not Linux
        return None


def cpu_model(path: Path | None = None) -> str | None:
    for line in _cpuinfo(path) or []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags(path: Path | None = None) -> set[str] | None:
    """Every processor's flags (the `flags` lines of /proc/cpuinfo, or `path`); None where there is no such file
    (macOS, Windows): unknown, not absent."""
    lines = _cpuinfo(path)
    if lines is None:
        return None
    flags: set[str] = set()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


def native_bfloat16(flags: set[str] | None) -> bool | None:
    """Whether the CPU computes bfloat16 natively (AMX or AVX512_BF16); None: unknown."""
    return None if flags is None else bool(flags & BFLOAT16_FLAGS)
