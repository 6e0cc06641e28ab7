"""CPU time and resident memory of processes, and the machine's CPU, read from Linux /proc.

CPU seconds are utime + stime of every thread of the process (`/proc/<pid>/stat`, in clock
ticks of `SC_CLK_TCK`, usually 10 ms); resident memory is `VmRSS` of `/proc/<pid>/status`.
A process that has exited raises `ProcessGone`, naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = 1.0 / os.sysconf("SC_CLK_TCK")


class ProcessGone(RuntimeError):
    """The process has exited, so it cannot be measured."""


@dataclass(frozen=True)
class MachineCpu:
    """CPU seconds of the whole machine since boot, summed over its cores."""

    busy: float
    total: float


def _read(path: str, what: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"{what} has exited ({path} is gone)") from None


def cpu_seconds(pid: int, name: str = "") -> float:
    """utime + stime of all threads of `pid`, in seconds."""
    return _stat_cpu(f"/proc/{pid}/stat", name or f"process {pid}")


def main_thread_cpu_seconds(pid: int, name: str = "") -> float:
    """utime + stime of the main thread of `pid` (the event loop of a Python server)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat", name or f"process {pid}")


def _stat_cpu(path: str, what: str) -> float:
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = _read(path, what).rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK  # fields 14 and 15: utime, stime


def rss_bytes(pid: int, name: str = "") -> int:
    """The resident set size of `pid`, in bytes."""
    for line in _read(f"/proc/{pid}/status", name or f"process {pid}").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessGone(f"{name or f'process {pid}'} has no VmRSS (a zombie?)")


def machine_cpu() -> MachineCpu:
    """The first line of /proc/stat: busy and total CPU seconds over all cores."""
    values = [int(v) for v in _read("/proc/stat", "/proc/stat").splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    total = sum(values[:8])
    idle = values[3] + values[4]
    return MachineCpu(busy=(total - idle) * _TICK, total=total * _TICK)


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    for line in _read("/proc/cpuinfo", "/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown CPU"


def memory_gib() -> float:
    """The machine's memory (MemTotal), in GiB."""
    for line in _read("/proc/meminfo", "/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0
