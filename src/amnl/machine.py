"""One description of the machine for every report: CPU model, cores, ISA flags, library
versions, load."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
#: CPU flags that decide which precisions run natively (x86: AVX-512, VNNI, BF16, AMX).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: Libraries whose versions every report records (when installed).
LIBRARIES = ("torch", "onnxruntime", "onnx", "numpy")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has (Linux x86; empty elsewhere)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return [f for f in ISA_FLAGS if f in flags]


def machine_info(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores, ISA flags, thread count, library versions, load average, GPU name.

    Args:
        device: the device the report measures (``cuda...`` adds the GPU's name).
        threads: threads the measurement used (default: torch's current count, if torch is
            imported).
    """
    import sys

    torch = sys.modules.get("torch")
    if threads is None and torch is not None:
        threads = torch.get_num_threads()
    info: dict[str, Any] = {
        "cpu": cpu_name(), "cpu_family": _cpuinfo_field("cpu family"),
        "cpu_model": _cpuinfo_field("model\t"), "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(), "threads": threads,
        "python": platform.python_version(), "platform": platform.platform(), "device": device,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    for mod in LIBRARIES:  # read from the installed metadata: importing torch costs 200+ MB
        try:
            info[mod] = version(mod)
        except PackageNotFoundError:
            pass
    if device.startswith("cuda") and torch is not None:
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for a table title or a training summary: ``CPU, N cores, T threads``."""
    line = info["cpu"]
    if info.get("cpu_family"):
        line += f" (family {info['cpu_family']}, model {info['cpu_model']})"
    if info.get("cpu_flags") is not None:
        line += f", {isa_summary(info['cpu_flags'])}"
    line += f", {info['cores']} cores"
    if info.get("threads"):
        line += f", {info['threads']} threads"
    if info.get("gpu"):
        line += f", {info['gpu']}"
    return line


#: The x86 flags that set a CPU's matrix-multiply peaks, as :func:`isa_summary` names them.
PEAK_FLAGS = (("VNNI", "avx512_vnni"), ("BF16", "avx512_bf16"), ("AMX", "amx_int8"))


def isa_summary(flags: list[str]) -> str:
    """``AVX-512 VNNI: yes, BF16: yes, AMX: no``: the flags that set the peaks (``AVX2 only``
    on a CPU without AVX-512; empty where neither is listed, e.g. ARM)."""
    have = set(flags)
    if not have & {"avx2", "avx512f"}:
        return ""
    if "avx512f" not in have:
        return "AVX2 only (no AVX-512)" + (", AVX-VNNI" if "avx_vnni" in have else "")
    return ", ".join(f"{'AVX-512 ' if name == 'VNNI' else ''}{name}: {'yes' if flag in have else 'no'}"
                     for name, flag in PEAK_FLAGS)


#: CPU flags under which oneDNN runs bf16 matrix multiplies natively (x86).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(device: str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and why (for messages).

    CPU: an x86 flag of :data:`BF16_FLAGS` (without them oneDNN emulates bf16, about 40x
    slower than fp32 on an AVX2-only CPU). CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    if device.startswith("cuda"):
        import torch

        ok = bool(torch.cuda.is_bf16_supported())
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bf16"
    flags = set((_cpuinfo_field("flags") or "").split())
    have = [f for f in BF16_FLAGS if f in flags]
    if have:
        return True, f"this CPU has {', '.join(have)}"
    return False, f"this CPU ({cpu_name()}) has none of {', '.join(BF16_FLAGS)}"
