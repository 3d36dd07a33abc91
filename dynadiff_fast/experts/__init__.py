"""Experts: neuraloperator FNO configs per system/preset, batched evaluation, and the model zoo."""

from dynadiff_fast._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "make_expert": "configs",
        "expert_config": "configs",
        "evaluate_experts": "evaluate",
        "Zoo": "zoo",
    },
)
