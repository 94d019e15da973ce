"""storm_lib: a replication of STORM (Zhao, Zhang et al., WSDM 2026).

Layers (each a module; see DESIGN.md): ``data`` (prices) -> ``features`` (Alpha158) -> ``panel``
(causal normalisation, labels, protocol splits, windows) -> ``models`` (STORM and the baselines,
one fit/predict interface) -> ``portfolio`` (TopK-Drop) and ``metrics`` (RankIC, APY ... AVO).
"""

__version__ = "0.1.0"
