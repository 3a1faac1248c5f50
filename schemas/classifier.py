"""The ``Classifier`` kind: a learned task classifier the router may use instead of its rules, a
linear model over hashed character n-grams (``char34-v1``: the lower-cased UTF-8 bytes of the
prompt's first 400 and last 112 characters with a space around, every 3- and 4-gram hashed to
``bits`` bits). Trained offline (``python -m router.learned train``); its weights travel base64
encoded (little-endian float16, one row of ``classes`` per feature)."""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import ConfigObject, Strict
from schemas.route import Task

MAX_BITS = 14


class ClassifierSpec(Strict):
    features: Literal["char34-v1"] = Field(default="char34-v1", description="The feature scheme (hashing) it was trained with.")
    bits: int = Field(ge=8, le=MAX_BITS, description="Features are hashed to 2**bits buckets.")
    classes: list[Task] = Field(min_length=2, max_length=5, description="The tasks it tells apart, in the weights' order.")
    weights: str = Field(description="base64 of 2**bits x len(classes) little-endian float16 weights, feature-major.")
    bias: list[float] = Field(description="One per class.")
    description: str = Field(default="", max_length=2000, description="What it was trained on, and how well it did.")

    @model_validator(mode="after")
    def _shape(self) -> ClassifierSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes name a task twice")
        if Task.EMBEDDING in self.classes:
            raise ValueError("'embedding' is never inferred from a prompt; leave it out of classes")
        if len(self.bias) != len(self.classes):
            raise ValueError(f"bias has {len(self.bias)} values for {len(self.classes)} classes")
        try:
            raw = base64.b64decode(self.weights, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"weights are not base64 ({exc})") from None
        want = (1 << self.bits) * len(self.classes) * 2
        if len(raw) != want:
            raise ValueError(
                f"weights hold {len(raw)} bytes; 2**{self.bits} features x {len(self.classes)} classes of float16 "
                f"take {want}: the file does not match its bits and classes"
            )
        values = struct.unpack(f"<{len(raw) // 2}e", raw)
        if not all(math.isfinite(v) for v in values) or not all(math.isfinite(b) for b in self.bias):
            raise ValueError("weights and bias must be finite numbers")
        return self


class Classifier(ConfigObject):
    """A learned task classifier (routes name it in ``quality.classifier``)."""

    plural: ClassVar[str] = "classifiers"
    kind: Literal["Classifier"] = "Classifier"
    spec: ClassifierSpec
