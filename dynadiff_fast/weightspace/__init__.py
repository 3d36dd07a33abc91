"""Weight space: the weight graph (module <-> ragged node tokens) and its normalisation."""

from dynadiff_fast._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "WeightGraph": "graph",
        "NodeTokens": "graph",
        "WeightNormalizer": "normalization",
    },
)
