"""Return models. Every model has the same shape (scikit-learn style):

``model.fit(panel, protocol)`` then ``model.predict(panel, split="test")`` -> a score frame
(date x ticker), so evaluation code is written once for STORM and every baseline.

``make_model(name, **kw)`` builds any of :data:`MODEL_NAMES` (the paper's rows).
"""

from importlib import import_module

from .base import ModelOutput, ReturnModel, TorchReturnModel

# name -> (module, class, fixed keyword arguments)
_REGISTRY = {
    "storm": ("storm", "StormModel", {"variant": "storm"}),
    "storm_wo_ts": ("storm", "StormModel", {"variant": "wo_ts"}),
    "storm_wo_cs": ("storm", "StormModel", {"variant": "wo_cs"}),
    "lightgbm": ("lightgbm", "LightGBMModel", {}),
    "lstm": ("sequence", "LSTMModel", {}),
    "transformer": ("sequence", "TransformerModel", {}),
    "cafactor": ("cafactor", "CAFactorModel", {}),
    "factorvae": ("factorvae", "FactorVAE", {}),
    "hirevae": ("hirevae", "HireVAE", {}),
}
MODEL_NAMES = tuple(_REGISTRY)

#: version of each model's method; bump when a model's code changes what it computes. It enters the run
#: identity (storm_lib.run.identity, only when > 1, so version-1 run directories keep their hashes) and
#: run.json; load_results keeps only the newest version's runs. STORM 2: cosine codebooks with the
#: MAGVIT-v2 entropy penalty, DeepSets alignment at weight 0.1, identity-query w/o-TS (issue 16).
#: STORM 3: the alignment's negatives are only windows that share no day with the anchor (the ablations
#: have no alignment, so they stay at 2).
MODEL_VERSIONS = {name: 1 for name in _REGISTRY} | {"storm": 4, "storm_wo_ts": 2, "storm_wo_cs": 2}


def model_version(name: str) -> int:
    """:data:`MODEL_VERSIONS` of ``name`` (1 for names outside the registry, e.g. the market row)."""
    return MODEL_VERSIONS.get(name, 1)


def model_class(name: str) -> type:
    """The class behind registry name ``name``."""
    try:
        module, cls, _ = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}") from None
    return getattr(import_module(f"{__name__}.{module}"), cls)


def option_keys(name: str) -> set[str]:
    """The keywords :func:`make_model` accepts for ``name`` (the registry's fixed ones excluded)."""
    return model_class(name).option_keys() - set(_REGISTRY[name][2])


def make_model(name: str, **kwargs) -> ReturnModel:
    """A fresh, unfitted model by registry name, e.g. ``make_model("storm", profile="cpu", seed=3)``.

    An unknown keyword is a ``TypeError`` naming the valid ones (never passed on or ignored)."""
    cls = model_class(name)
    fixed = _REGISTRY[name][2]
    bad = sorted(set(kwargs) - option_keys(name))
    if bad:
        raise TypeError(f"make_model({name!r}): unknown keyword argument(s) {bad}; valid: "
                        f"{', '.join(sorted(option_keys(name))) if name != 'lightgbm' else cls.option_help()}")
    return cls(**fixed, **kwargs)


__all__ = ["MODEL_NAMES", "MODEL_VERSIONS", "ModelOutput", "ReturnModel", "TorchReturnModel", "make_model", "model_class",
           "model_version", "option_keys"]
