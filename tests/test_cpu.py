"""What the CPU is (stages/common/cpu.py), and benchmark records that keep it."""

from __future__ import annotations

from benchmarks.common import check_record, machine
from benchmarks.render import cpu_kind
from stages.common.cpu import cpu_flags, cpu_model, native_bfloat16

ICE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""
SAPPHIRE_RAPIDS = ICE_LAKE.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_tile")


def test_the_same_model_name_with_other_flags_is_another_kind_of_cpu(tmp_path):
    ice, sapphire = tmp_path / "ice", tmp_path / "sapphire"
    ice.write_text(ICE_LAKE)
    sapphire.write_text(SAPPHIRE_RAPIDS)
    assert cpu_model(ice) == cpu_model(sapphire) == "Intel(R) Xeon(R) Processor @ 2.80GHz"
    assert native_bfloat16(cpu_flags(ice)) is False
    assert native_bfloat16(cpu_flags(sapphire)) is True
    assert cpu_flags(tmp_path / "missing") is None and native_bfloat16(None) is None  # unknown, not absent


def test_a_record_keeps_the_cpus_flags_and_the_results_page_names_its_bfloat16():
    m = machine()
    assert isinstance(m["cpu_flags"], list) and set(m["cpu_flags"]) <= set(cpu_flags() or ())
    record = {
        "figure": "text.example",
        "workload": "text",
        "description": "an example",
        "value": 1.0,
        "spread": None,
        "seeds": None,
        "per_seed": None,
        "unit": "",
        "fastai": None,
        "command": "python -m benchmarks.text",
        "commit": "0" * 40,
        "date": "2026-12-08T00:00:00+00:00",
        "machine": m,
        "note": None,
    }
    assert check_record(record) == []
    assert cpu_kind({"cpu_flags": ["avx512f", "avx512_bf16", "amx_bf16"]}) == "; AMX + AVX512_BF16"
    assert cpu_kind({"cpu_flags": ["avx2"]}) == "; no bfloat16 instructions"
    assert cpu_kind({}) == ""  # records from before the flags were kept
