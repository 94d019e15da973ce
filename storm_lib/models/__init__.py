"""Return models. Every model has the same shape (scikit-learn style):

``model.fit(panel, protocol)`` then ``model.predict(panel, split="test")`` -> a score frame
(date x ticker), so evaluation code is written once for STORM and every baseline.
"""

from .base import ModelOutput, ReturnModel, TorchReturnModel

__all__ = ["ModelOutput", "ReturnModel", "TorchReturnModel"]
