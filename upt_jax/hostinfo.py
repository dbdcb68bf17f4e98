"""One line naming the machine a measurement was made on (every benchmark table and every shipped
record carries it: speed-ups and even some rates differ between AVX2 and AVX-512 hosts)."""

from __future__ import annotations

import os
import platform

__all__ = ["host"]


def host() -> str:
    """``<device kind> (<n> device(s)); host <CPU model>, <cores> cores, <arch> <ISA flags>``."""
    import jax

    cpu = platform.processor() or platform.machine()
    isa = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        isa = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    except OSError:
        pass
    return (
        f"{jax.devices()[0].device_kind} ({jax.device_count()} device(s)); host {cpu}, "
        f"{os.cpu_count()} cores, {platform.machine()} {isa}".rstrip()
    )
