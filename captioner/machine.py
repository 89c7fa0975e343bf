"""What machine a run measured its times on: CPU model, the vector/matrix instructions that decide
TensorFlow's speed on it, and how many CPUs the run could use. Recorded beside training and evaluation
figures (training.json, metrics.json) so model cards state it instead of assuming it."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU flags that change how fast TensorFlow runs here (x86: AVX2/FMA, AVX-512, bfloat16, AMX; Arm: NEON, SVE).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")
CPUINFO = Path("/proc/cpuinfo")


def describe_machine(cpuinfo: str | None = None, cpus: int | None = None, arch: str | None = None) -> dict:
    """``{"cpu", "arch", "cpus", "flags"}`` of this machine (or of the given /proc/cpuinfo text).

    ``cpus``: the CPUs this process may run on (its affinity mask), else ``os.cpu_count()``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # the first processor's entry
    present = set((fields.get("flags") or fields.get("features") or "").split())
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 0
    arch = arch or platform.machine() or "unknown"
    return {"cpu": fields.get("model name") or platform.processor() or f"unknown {arch} CPU", "arch": arch,
            "cpus": int(cpus), "flags": [f for f in RELEVANT_FLAGS if f in present]}


def format_machine(machine: dict | None) -> str:
    """One phrase for a model card: ``"Intel(R) Xeon(R) Processor, 2 CPUs (x86_64; avx2, fma)"``."""
    if not machine:
        return "an unrecorded machine"
    cpus = machine.get("cpus")
    flags = ", ".join(machine.get("flags") or [])
    detail = "; ".join(x for x in (machine.get("arch"), flags) if x)
    return (str(machine.get("cpu") or "an unknown CPU") + (f", {cpus} CPU{'s' if cpus != 1 else ''}" if cpus else "")
            + (f" ({detail})" if detail else ""))
