"""Which cores a phone's batch is pinned to (`device_state.fastest_cores`, `AdbAgent._cpus_for`): the
`threads` fastest cores by `cpuinfo_max_freq` across clusters, from the phone's cpufreq listing as
`device_state.STATE_COMMAND` prints it (parsed by the real `parse_state_output`)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint.fixtures import authorized_endpoint  # noqa: E402

from device_agents.adb_agent import open_agent  # noqa: E402
from device_agents.device_state import fastest_cores, parse_state_output  # noqa: E402


def listing(max_khz: dict[int, int]) -> str:
    """What STATE_COMMAND prints on a phone with these per-core max frequencies (kHz), shuffled by core."""
    lines = []
    for core in sorted(max_khz, key=lambda c: (c * 5) % 11):
        base = f"/sys/devices/system/cpu/cpu{core}/cpufreq"
        lines += [f"{base}/cpuinfo_max_freq={max_khz[core]}", f"{base}/scaling_max_freq={max_khz[core]}",
                  f"{base}/scaling_cur_freq={max_khz[core] // 2}", f"{base}/scaling_governor=schedutil"]
    return "\n".join(["/sys/class/thermal/thermal_zone0/type=cpu-1-0", "/sys/class/thermal/thermal_zone0/temp=41000",
                      *lines, "/system/bin/sh: noise"]) + "\n"


# Pixel 8 (Tensor G3): 4 little at 1.70 GHz, 4 mid at 2.37 GHz, 1 prime (cpu8) at 2.91 GHz
PIXEL_8 = {**{c: 1704000 for c in range(4)}, **{c: 2367000 for c in range(4, 8)}, 8: 2914000}
# Snapdragon 8 Gen 2: 3 little (cpu0-2) 2.02 GHz, 4 mid (cpu3-6) 2.80 GHz, prime cpu7 3.19 GHz
SD_8_GEN_2 = {**{c: 2016000 for c in range(3)}, **{c: 2803200 for c in range(3, 7)}, 7: 3187200}
# a two-cluster phone: 4 little, 4 big at one frequency
TWO_CLUSTERS = {**{c: 1800000 for c in range(4)}, **{c: 2400000 for c in range(4, 8)}}


def cores(max_khz: dict[int, int], threads: int) -> list[int]:
    return fastest_cores(parse_state_output(listing(max_khz)).cpu_max_freq_khz, threads)


def mask(cpus: list[int]) -> str:
    return format(sum(1 << c for c in cpus), "x")


def test_three_cluster_socs_get_prime_plus_big_cores_not_the_prime_core_alone():
    assert cores(PIXEL_8, 1) == [8]
    assert cores(PIXEL_8, 4) == [5, 6, 7, 8] and mask(cores(PIXEL_8, 4)) == "1e0"  # docs/phone.md's mask
    assert cores(PIXEL_8, 2) == [7, 8]
    assert cores(SD_8_GEN_2, 4) == [4, 5, 6, 7] and mask(cores(SD_8_GEN_2, 4)) == "f0"
    assert cores(SD_8_GEN_2, 6) == [2, 3, 4, 5, 6, 7]  # past the big cores: the fastest little ones


def test_two_clusters_and_more_threads_than_cores():
    assert cores(TWO_CLUSTERS, 1) == [7]  # highest-numbered big core (core 0 takes the interrupts)
    assert cores(TWO_CLUSTERS, 4) == [4, 5, 6, 7]
    assert cores(TWO_CLUSTERS, 2) == [6, 7]
    assert cores(TWO_CLUSTERS, 16) == list(range(8))
    assert fastest_cores({}, 4) == []  # no cpufreq readable: unpinned


def test_the_agent_pins_to_them_unless_a_core_is_forced(tmp_path):
    state = parse_state_output(listing(PIXEL_8))
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = open_agent(serial, key_path=key, workdir=tmp_path / "work", transport="adb-shell", auth_timeout_s=2,
                           backoff_s=0.05, settle_max_s=0, runtime="tflite")
        forced = open_agent(serial, key_path=key, workdir=tmp_path / "work2", transport="adb-shell", auth_timeout_s=2,
                            backoff_s=0.05, settle_max_s=0, runtime="tflite", cpu_core=3)
        try:
            assert agent._cpus_for(4, state) == "5,6,7,8" and agent._cpus_for(1, state) == "8"
            assert forced._cpus_for(4, state) == "3"
        finally:
            agent.close()
            forced.close()
