"""Weight space: stacked experts (BatchedFNO, BatchedMLP), the weight graph (module <-> ragged node tokens),
normalisation."""

from dynadiff_fast._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "BatchedFNO": "batched_fno",
        "BatchedMLP": "batched_mlp",
        "StackedExperts": "stacked",
        "experts_type": "stacked",
        "WeightGraph": "graph",
        "NodeTokens": "graph",
        "WeightNormalizer": "normalization",
    },
)
