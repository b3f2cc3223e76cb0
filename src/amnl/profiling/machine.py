"""Moved to :mod:`amnl.machine` (training reads the machine too, and the pipeline does not import
the profiler); these names stay importable from here for the benchmark scripts."""

from amnl.machine import (  # noqa: F401
    CPUINFO,
    ISA_FLAGS,
    LIBRARIES,
    cpu_flags,
    cpu_name,
    describe,
    isa_summary,
    machine_info,
    native_bf16,
)
