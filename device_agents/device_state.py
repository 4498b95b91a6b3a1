"""Thermal and CPU-frequency state of a Linux/Android device, read from plain sysfs files.

Two ways in, one set of rules:

* `read_state(root="/")` reads the files on this machine (the local agent; `root` lets
  tests point it at a fake tree).
* `STATE_COMMAND` is one POSIX sh line (works under Android's toybox/mksh sh) that prints
  the same files as ``path=value`` lines; the ADB agent runs it on the phone in one shell
  round trip and hands the text to `parse_state_output`.

Files read (missing or unreadable ones are skipped, never an exception):
``/sys/class/thermal/thermal_zone*/{type,temp}`` (temp in millidegrees C) and
``/sys/devices/system/cpu/cpu*/cpufreq/{scaling_cur_freq,scaling_max_freq,
cpuinfo_max_freq,scaling_governor}`` (kHz), and the per-core ``cpuN`` lines of ``/proc/stat``
(busy and total clock ticks since boot): two snapshots give how busy each core was during a
batch (`busy_fraction`). Why: a core shares caches, memory bandwidth and (SMT, a VM's vCPUs)
execution units with its neighbours, as a phone's big core shares its cluster with background
apps; a batch that records what the other cores did can be told apart from one measured on an
otherwise idle device (docs/predict.md, "Co-runners").

Throttling rule (`is_throttled`), "throttled" when any of:

1. a thermal zone reads above ``TEMP_LIMIT_C`` (85 C: where phone SoCs start thermal
   mitigation; skin/battery zones sit far below). Readings outside [-40, 150] C are
   treated as broken sensors and ignored (unused zones report 0, -273 or garbage).
2. a core's ``scaling_max_freq`` is capped below ``FREQ_FRACTION`` (90%) of its
   ``cpuinfo_max_freq``: this is how Android's thermal HAL and the kernel's cpufreq
   cooling devices throttle, whatever the governor.
3. a core that should run at max - its governor is ``performance`` - runs below
   ``FREQ_FRACTION`` of ``cpuinfo_max_freq``. Under ``schedutil``/``ondemand`` an idle core
   at low frequency is normal, so rule 3 does not apply to them.
"""
from __future__ import annotations

import glob
import os
import re

from device_agents.contract import DeviceState

TEMP_LIMIT_C = 85.0
FREQ_FRACTION = 0.9
_PLAUSIBLE_C = (-40.0, 150.0)

_THERMAL = "/sys/class/thermal"
_CPU = "/sys/devices/system/cpu"
_CPUFREQ_FILES = ("scaling_cur_freq", "scaling_max_freq", "cpuinfo_max_freq", "scaling_governor")

# One line, no bashisms: an unmatched glob stays literal and fails the -r test; a file the
# shell user may not read (some thermal zones on Android) makes cat fail and is skipped.
STATE_COMMAND = (
    "for f in /sys/class/thermal/thermal_zone*/type /sys/class/thermal/thermal_zone*/temp "
    + " ".join(f"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/{name}" for name in _CPUFREQ_FILES)
    + '; do [ -r "$f" ] && v=$(cat "$f" 2>/dev/null) && echo "$f=$v"; done; '
    + "sed -n 's|^\\(cpu[0-9][0-9]*\\) *\\(.*\\)|/proc/stat/\\1=\\2|p' /proc/stat 2>/dev/null; true"
)

_ZONE_RE = re.compile(r"^/sys/class/thermal/thermal_zone(\d+)/(type|temp)$")
_STAT_RE = re.compile(r"^/proc/stat/cpu(\d+)$")
#: /proc/stat columns after the name: user nice system idle iowait irq softirq steal (guest time
#: is inside user). Busy = user + nice + system + irq + softirq; steal is time the hypervisor
#: gave away, not this guest's work.
_BUSY_COLUMNS, _IDLE_COLUMNS = (0, 1, 2, 5, 6), (3, 4)
_CPU_RE = re.compile(r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/(\w+)$")


def read_state(root: str = "/") -> DeviceState:
    """The state of this machine (or of a fake sysfs tree under `root`)."""
    patterns = [f"{_THERMAL}/thermal_zone*/type", f"{_THERMAL}/thermal_zone*/temp"]
    patterns += [f"{_CPU}/cpu[0-9]*/cpufreq/{name}" for name in _CPUFREQ_FILES]
    files: dict[str, str] = {}
    try:
        with open(os.path.join(root, "proc/stat"), encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, rest = line.strip().partition(" ")
                if re.fullmatch(r"cpu\d+", name):
                    files[f"/proc/stat/{name}"] = rest.strip()
    except OSError:
        pass
    for pattern in patterns:
        for path in glob.glob(os.path.join(root, pattern.lstrip("/"))):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    files["/" + os.path.relpath(path, root)] = f.read().strip()
            except OSError:
                continue
    return state_from_files(files)


def parse_state_output(text: str) -> DeviceState:
    """Parse what `STATE_COMMAND` printed (``path=value`` lines; other lines are ignored)."""
    files: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, value = line.strip().partition("=")
        if sep and path.startswith(("/sys/", "/proc/stat/")):
            files[path] = value.strip()
    return state_from_files(files)


def state_from_files(files: dict[str, str]) -> DeviceState:
    """Build a `DeviceState` from sysfs path -> content; the one place the rules live."""
    zone_type: dict[int, str] = {}
    zone_temp: dict[int, float] = {}
    cpu: dict[int, dict[str, str]] = {}
    busy: dict[str, int] = {}
    total: dict[str, int] = {}
    for path, value in files.items():
        if m := _ZONE_RE.match(path):
            zone = int(m.group(1))
            if m.group(2) == "type":
                zone_type[zone] = value
            elif (temp := _temperature_c(value)) is not None:
                zone_temp[zone] = temp
        elif m := _CPU_RE.match(path):
            cpu.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif (m := _STAT_RE.match(path)) and (ticks := _ticks(value)) is not None:
            busy[f"cpu{m.group(1)}"], total[f"cpu{m.group(1)}"] = ticks

    temperatures: dict[str, float] = {}
    for zone in sorted(zone_temp):
        name = zone_type.get(zone) or f"thermal_zone{zone}"
        if name in temperatures:  # several zones may share a type (e.g. "cpu-thermal")
            name = f"{name}#{zone}"
        temperatures[name] = zone_temp[zone]

    cur, cap, top, governors = {}, {}, {}, {}
    for core in sorted(cpu):
        entry = cpu[core]
        key = f"cpu{core}"
        for table, name in ((cur, "scaling_cur_freq"), (cap, "scaling_max_freq"), (top, "cpuinfo_max_freq")):
            if (value := _int(entry.get(name))) is not None:
                table[key] = value
        if entry.get("scaling_governor"):
            governors[key] = entry["scaling_governor"]

    throttled = is_throttled(temperatures, cur, cap, top, governors)
    return DeviceState(
        temperatures_c=temperatures,
        cpu_freq_khz=cur,
        governor=",".join(dict.fromkeys(governors.values())),
        throttled=throttled,
        cpu_max_freq_khz=top,
        cpu_busy_ticks=dict(sorted(busy.items(), key=lambda item: int(item[0][3:]))),
        cpu_total_ticks=dict(sorted(total.items(), key=lambda item: int(item[0][3:]))),
    )


def busy_fraction(before: DeviceState, after: DeviceState) -> dict[str, float]:
    """Per core ("cpuN"), the share of the time between two snapshots it was busy (0..1); a
    core missing from either snapshot, or without ticks in between, is left out."""
    out = {}
    for core, total in after.cpu_total_ticks.items():
        elapsed = total - before.cpu_total_ticks.get(core, total)
        if elapsed > 0 and core in before.cpu_busy_ticks and core in after.cpu_busy_ticks:
            out[core] = min(1.0, max(0.0, (after.cpu_busy_ticks[core] - before.cpu_busy_ticks[core]) / elapsed))
    return out


def others_busy(before: DeviceState, after: DeviceState, measured: str) -> float | None:
    """How busy the cores OTHER than `measured` (a core list such as "1" or "4-7,8", as
    `DeviceInfo.cpu_core`) were during a batch: the busiest one's share (0..1); None when the
    snapshots have no ticks or the benchmark was not pinned (`measured` empty)."""
    cores = _core_set(measured)
    shares = [share for core, share in busy_fraction(before, after).items() if int(core[3:]) not in cores]
    return max(shares) if cores and shares else None


def _core_set(text: str) -> set[int]:
    """"1" / "4-7,8" -> {1} / {4, 5, 6, 7, 8}; anything else -> set()."""
    cores: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return set()
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def _ticks(value: str) -> tuple[int, int] | None:
    """(busy, total) ticks of one /proc/stat cpu line's columns; None when malformed."""
    try:
        columns = [int(v) for v in value.split()[:8]]
    except ValueError:
        return None
    if len(columns) < 5:
        return None
    busy = sum(columns[i] for i in _BUSY_COLUMNS if i < len(columns))
    return busy, busy + sum(columns[i] for i in _IDLE_COLUMNS)


def is_throttled(
    temperatures_c: dict[str, float],
    cur_khz: dict[str, int],
    cap_khz: dict[str, int],
    max_khz: dict[str, int],
    governors: dict[str, str],
) -> bool:
    """The rule of the module docstring."""
    lo, hi = _PLAUSIBLE_C
    if any(lo <= t <= hi and t > TEMP_LIMIT_C for t in temperatures_c.values()):
        return True
    for core, top in max_khz.items():
        if top <= 0:
            continue
        if core in cap_khz and cap_khz[core] < FREQ_FRACTION * top:
            return True
        if governors.get(core) == "performance" and core in cur_khz and cur_khz[core] < FREQ_FRACTION * top:
            return True
    return False


def fastest_cores(max_freq_khz: dict, threads: int) -> list[int]:
    """The `threads` cores with the highest ``cpuinfo_max_freq`` (kHz), across clusters; ascending.

    `max_freq_khz` maps core -> kHz, keys as ints or "cpuN" (`DeviceState.cpu_max_freq_khz`).
    On a three-cluster SoC (Pixel 8: cpu8 2.91 GHz prime, cpu4-7 2.37 GHz, cpu0-3 1.7 GHz)
    4 threads get the prime core and the three fastest big ones (cpu5-8, mask ``1e0``), not
    the prime core alone, where 4 threads would share one core. Among cores of one frequency
    the highest-numbered come first (core 0 takes most interrupts and housekeeping), so
    1 thread gets the last core of the fastest cluster, as before. Fewer cores than threads:
    every core. [] when the device printed no frequencies (then the batch runs unpinned).
    """
    freqs = {int(str(core).removeprefix("cpu")): int(f) for core, f in max_freq_khz.items()}
    ranked = sorted(freqs, key=lambda core: (freqs[core], core), reverse=True)
    return sorted(ranked[:max(1, threads)])


def _temperature_c(value: str) -> float | None:
    raw = _int(value)
    if raw is None:
        return None
    # millidegrees is the sysfs ABI; a few old kernels print whole degrees.
    return raw / 1000.0 if abs(raw) >= 1000 else float(raw)


def _int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None
