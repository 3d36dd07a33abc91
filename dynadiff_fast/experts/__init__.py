"""Experts: neuraloperator FNO configs per system/preset, batched evaluation (BatchedFNO, BatchedMLP: E experts
run as one module), and the model zoo."""

from dynadiff_fast._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "make_expert": "configs",
        "expert_config": "configs",
        "evaluate_experts": "evaluate",
        "Zoo": "zoo",
        "BatchedFNO": "batched_fno",
        "BatchedMLP": "batched_mlp",
        "StackedExperts": "stacked",
        "experts_type": "stacked",
    },
)
