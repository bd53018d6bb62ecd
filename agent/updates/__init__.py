"""Signed model updates on the device (DESIGN §11, docs/model-updates.md): TUF client, policy, swap, revert."""

from agent.updates.policy import (
    Choice,
    GoldenResult,
    HealthLimits,
    HealthVerdict,
    PipelineFit,
    choose,
    golden_check,
    in_rollout,
    judge_health,
    reference_time,
)

__all__ = ["Choice", "GoldenResult", "HealthLimits", "HealthVerdict", "PipelineFit", "choose", "golden_check",
           "in_rollout", "judge_health", "reference_time"]
