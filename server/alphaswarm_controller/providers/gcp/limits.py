"""Cloud Run's limits on one instance's CPU and memory, and what they imply, before any call.

Sources (checked against the current pages; the emulator enforces the same table):

* https://cloud.google.com/run/docs/configuring/services/cpu, "vCPU and memory table":
  0.08-1 vCPU in steps of 0.001, else exactly 1, 2, 4, 6 or 8; memory 0.08 vCPU up to
  512 MiB, 0.5 vCPU up to 1 GiB, 1 vCPU up to 4 GiB, 2 up to 8 GiB, 4 from 2 to 16 GiB,
  6 from 4 to 24 GiB, 8 from 4 to 32 GiB. Below 1 vCPU: "Maximum concurrency must be
  set to 1", "The billing settings must be set to request-based billing" and "You must
  use the first generation execution environment".
* https://cloud.google.com/run/docs/configuring/services/memory-limits: 128 MiB (first
  generation) or 512 MiB (second generation) to 32 GiB.
* google/cloud/run/v2/k8s.min.proto ``ResourceRequirements.cpu_idle``: "if
  ResourceRequirements is set, the caller must explicitly set this field to true" for
  request-based billing; revision_template.proto ``max_instance_request_concurrency``:
  default 80 when CPU >= 1.

Unspecified limits default to 1 vCPU and 512 MiB, each raised to what the other one
needs (``cpu: "4"`` alone gets 2 GiB, ``memory: "6Gi"`` alone gets 2 vCPU), so a spec that
names one limit never fails for the default of the other.

Below 1 vCPU the provider does what Cloud Run requires instead of failing: concurrency 1,
request-based billing (``cpu_idle``: the instance gets CPU only while it handles a
request) and the first generation environment. At 1 vCPU or more it asks for
instance-based billing (CPU always allocated), so a replica keeps running between
requests like a replica on any other backend; concurrency stays Cloud Run's default 80.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.cloud import run_v2

from alphaswarm_core.providers.protocol import FieldViolation, Resources

MiB = 2**20
GiB = 2**30
MIN_CPU_MILLI = 80
WHOLE_CPUS = (1000, 2000, 4000, 6000, 8000)
MIN_MEMORY = 128 * MiB
GEN2_MIN_MEMORY = 512 * MiB
MAX_MEMORY = 32 * GiB
DEFAULT_CPU_MILLI = 1000
DEFAULT_MEMORY = 512 * MiB
DEFAULT_CONCURRENCY = 80
#: (whole vCPUs in millicores, least memory, most memory), from the vCPU and memory table.
WHOLE_CPU_MEMORY = {
    1000: (MIN_MEMORY, 4 * GiB),
    2000: (MIN_MEMORY, 8 * GiB),
    4000: (2 * GiB, 16 * GiB),
    6000: (4 * GiB, 24 * GiB),
    8000: (4 * GiB, 32 * GiB),
}
#: Below 1 vCPU: (least millicores, most memory) rows of the same table.
FRACTIONAL_CPU_MEMORY = ((500, 1 * GiB), (MIN_CPU_MILLI, 512 * MiB))

_ENVIRONMENT = run_v2.ExecutionEnvironment
_GEN1 = _ENVIRONMENT(_ENVIRONMENT.EXECUTION_ENVIRONMENT_GEN1)
ANY_ENVIRONMENT = _ENVIRONMENT(_ENVIRONMENT.EXECUTION_ENVIRONMENT_UNSPECIFIED)


@dataclass(frozen=True, slots=True)
class InstanceShape:
    """What one Cloud Run instance of a spec gets, defaults resolved."""

    cpu_milli: int
    memory: int

    @property
    def fractional(self) -> bool:
        return self.cpu_milli < 1000

    @property
    def concurrency(self) -> int:
        return 1 if self.fractional else DEFAULT_CONCURRENCY

    @property
    def request_based_billing(self) -> bool:
        """``cpu_idle``: CPU only while a request is handled (required below 1 vCPU)."""
        return self.fractional

    @property
    def execution_environment(self) -> run_v2.ExecutionEnvironment:
        """First generation where the second cannot run it; else Cloud Run's choice."""
        if self.fractional or self.memory < GEN2_MIN_MEMORY:
            return _GEN1
        return ANY_ENVIRONMENT

    @property
    def cpu_text(self) -> str:
        return str(self.cpu_milli // 1000) if self.cpu_milli % 1000 == 0 else f"{self.cpu_milli}m"

    @property
    def memory_text(self) -> str:
        return f"{self.memory // MiB}Mi" if self.memory % MiB == 0 else str(self.memory)


def _least_cpu_for(memory: int) -> int:
    for cpu in WHOLE_CPUS:
        if memory <= WHOLE_CPU_MEMORY[cpu][1]:
            return cpu
    return WHOLE_CPUS[-1]


def shape(resources: Resources) -> InstanceShape:
    """The instance a spec asks for; assumes ``violations(resources)`` is empty."""
    cpu, memory = resources.cpu_millicores(), resources.memory_bytes()
    if cpu is None:
        cpu = max(DEFAULT_CPU_MILLI, _least_cpu_for(memory or DEFAULT_MEMORY))
    if memory is None:
        least = WHOLE_CPU_MEMORY[cpu][0] if cpu in WHOLE_CPU_MEMORY else MIN_MEMORY
        memory = max(DEFAULT_MEMORY, least)
    return InstanceShape(cpu, memory)


def violations(resources: Resources, prefix: str = "spec.resources") -> list[FieldViolation]:
    """What Cloud Run would reject in ``resources``, as field violations."""
    found: list[FieldViolation] = []
    cpu, memory = resources.cpu_millicores(), resources.memory_bytes()
    if cpu is not None and not (MIN_CPU_MILLI <= cpu < 1000 or cpu in WHOLE_CPUS):
        found.append(
            FieldViolation(
                f"{prefix}.cpu",
                "Cloud Run allows 0.08 to 1 vCPU (in steps of 0.001) or exactly 1, 2, 4, 6 or 8",
            )
        )
        return found
    if memory is not None and not MIN_MEMORY <= memory <= MAX_MEMORY:
        found.append(FieldViolation(f"{prefix}.memory", "Cloud Run allows 128Mi to 32Gi"))
        return found
    if cpu is None or memory is None:
        return found  # the default of the other limit is chosen to fit
    if cpu in WHOLE_CPU_MEMORY:
        least, most = WHOLE_CPU_MEMORY[cpu]
        if not least <= memory <= most:
            found.append(
                FieldViolation(
                    f"{prefix}.memory",
                    f"{cpu // 1000} vCPU on Cloud Run takes {_size(least)} to {_size(most)} "
                    "of memory",
                )
            )
        return found
    for least_cpu, most in FRACTIONAL_CPU_MEMORY:
        if cpu >= least_cpu:
            if memory > most:
                found.append(
                    FieldViolation(
                        f"{prefix}.memory",
                        f"below 1 vCPU, Cloud Run allows at most {_size(most)} "
                        f"with {least_cpu / 1000:g} vCPU or more (512Mi below 0.5, "
                        "1Gi below 1)",
                    )
                )
            break
    return found


def _size(size: int) -> str:
    return f"{size // GiB}Gi" if size % GiB == 0 else f"{size // MiB}Mi"
