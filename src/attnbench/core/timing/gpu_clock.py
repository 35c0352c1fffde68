"""The GPU's state around the timed calls (NVML): SM clock, power, temperature, and who else used the card.

A GPU under sustained load lowers its SM clock to stay within its power limit (an H200 from 1980 to ~1680 MHz at
~685 W), which moves absolute times by ~10%; another process on the card shares its SMs. Neither shows in a
median. NVML (the `nvidia-ml-py` package, the library `nvidia-smi` reads) says both: the clock is read before and
after the timed calls, and the driver's own clock samples in between where it keeps them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# A job whose SM clock fell by more than this share of its clock at the start of timing is tagged `clock_drop`.
CLOCK_DROP_SHARE = 0.05
_PROCESSOR_CLK_SAMPLES = 5  # NVML_PROCESSOR_CLK_SAMPLES


def _nvml():
    """The pynvml module, initialised once; None where NVML cannot be used (no package, no driver)."""
    global _NVML
    if _NVML is False:
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML = pynvml
        except Exception as e:  # noqa: BLE001 - no NVML: the clocks are not recorded, the job runs
            log.info("GPU clocks are not recorded: NVML is not available (%s)", e)
            _NVML = None
    return _NVML


_NVML = False


@dataclass(frozen=True)
class GpuState:
    sm_clock_mhz: int
    max_sm_clock_mhz: int
    power_w: float
    temperature_c: int
    processes: int  # processes holding a compute context on the card
    timestamp_us: int  # the driver's clock: samples after it belong to what follows


def handle(device: torch.device):
    """The NVML handle of the job's GPU; None off CUDA or without NVML."""
    nvml = _nvml() if device.type == "cuda" else None
    if nvml is None:
        return None
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception as e:  # noqa: BLE001
        log.info("GPU clocks are not recorded: NVML does not know GPU %s (%s)", uuid, e)
        return None


def read(gpu) -> GpuState | None:
    if gpu is None:  # off CUDA: NVML is not even loaded (nor its "not available" said)
        return None
    nvml = _nvml()
    try:
        return GpuState(
            sm_clock_mhz=nvml.nvmlDeviceGetClockInfo(gpu, nvml.NVML_CLOCK_SM),
            max_sm_clock_mhz=nvml.nvmlDeviceGetMaxClockInfo(gpu, nvml.NVML_CLOCK_SM),
            power_w=nvml.nvmlDeviceGetPowerUsage(gpu) / 1000,
            temperature_c=nvml.nvmlDeviceGetTemperature(gpu, nvml.NVML_TEMPERATURE_GPU),
            processes=len(nvml.nvmlDeviceGetComputeRunningProcesses(gpu)),
            timestamp_us=_latest_sample_us(gpu),
        )
    except Exception as e:  # noqa: BLE001
        log.info("GPU clocks are not recorded: %s", e)
        return None


def _clock_samples(gpu, since_us: int) -> list[int]:
    """The driver's SM clock samples (MHz) after `since_us`; empty where the driver keeps none."""
    nvml = _nvml()
    try:
        _, samples = nvml.nvmlDeviceGetSamples(gpu, _PROCESSOR_CLK_SAMPLES, since_us)
    except Exception:  # noqa: BLE001 - not every driver or virtual GPU keeps samples
        return []
    return [int(s.sampleValue.uiVal) for s in samples if s.timeStamp > since_us]


def _latest_sample_us(gpu) -> int:
    nvml = _nvml()
    try:
        _, samples = nvml.nvmlDeviceGetSamples(gpu, _PROCESSOR_CLK_SAMPLES, 0)
    except Exception:  # noqa: BLE001
        return 0
    return max((int(s.timeStamp) for s in samples), default=0)


def during(gpu, start: GpuState, end: GpuState) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and tags of the GPU's state over the timed calls, from its state at their start and end."""
    clocks = [start.sm_clock_mhz, *_clock_samples(gpu, start.timestamp_us), end.sm_clock_mhz]
    metrics = {"gpu_sm_clock_mhz": float(end.sm_clock_mhz), "gpu_sm_clock_start_mhz": float(start.sm_clock_mhz),
               "gpu_sm_clock_min_mhz": float(min(clocks)), "gpu_max_sm_clock_mhz": float(start.max_sm_clock_mhz),
               "gpu_power_w": end.power_w, "gpu_temperature_c": float(end.temperature_c),
               "gpu_clock_samples": float(len(clocks))}
    tags = {}
    if min(clocks) < (1 - CLOCK_DROP_SHARE) * start.sm_clock_mhz:
        tags["clock_drop"] = (f"the SM clock fell from {start.sm_clock_mhz} to {min(clocks)} MHz while it was timed "
                              f"(more than {100 * CLOCK_DROP_SHARE:.0f}%): the card was lowering its clock")
    others = max(start.processes, end.processes) - 1  # this worker holds one context
    if others > 0:
        tags["gpu.shared"] = (f"{others} other process{'es' if others > 1 else ''} held a context on this GPU "
                              "while it was timed")
    return metrics, tags
