"""The learned task classifier: a linear model over hashed character 3- and 4-grams (the scheme
``char34-v1`` of schemas/classifier.py), scored with numpy in ~15-25 µs per prompt here (the word
features of a first try cost ~100 µs at p99: one Python call per word). Hashing is arithmetic on
the bytes (no ``hash()``, which PYTHONHASHSEED changes per process), so a model trained in one
process scores the same in every other.

Also the offline trainer (multinomial logistic regression by SGD): ``python -m router.learned
train prompts.jsonl --name NAME`` reads JSON lines ``{"text": ..., "task": ...}`` and prints a
Classifier object for ``llmctl apply -f``."""

from __future__ import annotations

import argparse
import base64
import logging
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from schemas.classifier import Classifier, ClassifierSpec
from schemas.route import Task

log = logging.getLogger(__name__)

#: What of a prompt is read: instructions sit at its head and tail.
HEAD, TAIL = 400, 112
_BASE = np.uint64(257)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of the product are well mixed


def features(text: str, bits: int) -> Any:
    """The hashed 3- and 4-gram buckets of ``text`` (an array of indices in [0, 2**bits))."""
    if len(text) > HEAD + TAIL:
        text = f"{text[:HEAD]}\n{text[-TAIL:]}"
    raw = np.frombuffer(f" {text.lower()} ".encode("utf-8", "replace"), dtype=np.uint8).astype(np.uint64)
    shift = np.uint64(64 - bits)
    if len(raw) < 4:
        raw = np.concatenate((raw, np.full(4 - len(raw), 32, dtype=np.uint64)))
    tri = (raw[:-2] * _BASE + raw[1:-1]) * _BASE + raw[2:]
    quad = tri[:-1] * _BASE + raw[3:]
    return np.concatenate(((tri * _MIX) >> shift, ((quad + np.uint64(1)) * _MIX) >> shift))


class LinearClassifier:
    """Scores a prompt per class; ``__call__`` is a ``router.classify.Classifier``."""

    def __init__(self, classes: Sequence[Task], weights: Any, bias: Any, *, bits: int) -> None:
        self.classes, self.bits = tuple(classes), bits
        self._wt = np.ascontiguousarray(np.asarray(weights, dtype=np.float32).reshape(1 << bits, len(classes)).T)
        self._bias = np.asarray(bias, dtype=np.float32)

    @classmethod
    def of(cls, obj: Classifier) -> LinearClassifier:
        spec = obj.spec
        raw = np.frombuffer(base64.b64decode(spec.weights), dtype="<f2")
        return cls(spec.classes, raw, spec.bias, bits=spec.bits)

    def scores(self, text: str) -> Any:
        return self._wt.take(features(text, self.bits), axis=1).sum(axis=1) + self._bias

    def __call__(self, text: str) -> Task:
        return self.classes[int(self.scores(text).argmax())]

    def spec(self, *, description: str = "") -> ClassifierSpec:
        weights = self._wt.T.astype("<f2").tobytes()
        return ClassifierSpec(bits=self.bits, classes=list(self.classes), weights=base64.b64encode(weights).decode(),
                              bias=[round(float(b), 6) for b in self._bias], description=description)  # fmt: skip


_LOADED: dict[tuple[str, int], LinearClassifier] = {}


def load(obj: Classifier) -> LinearClassifier | None:
    """The classifier of a stored object, decoded once per revision; None (the rules stay in use)
    when it cannot be built, which is logged."""
    key = (obj.name, obj.metadata.revision or 0)
    found = _LOADED.get(key)
    if found is None:
        try:
            found = LinearClassifier.of(obj)
        except (ValueError, TypeError) as exc:
            log.error("classifier %s cannot be used (%s); the rules classify instead", obj.name, exc)
            return None
        if len(_LOADED) >= 16:
            _LOADED.clear()
        _LOADED[key] = found
    return found


def train(
    samples: Iterable[tuple[str, Task]], *, bits: int = 13, epochs: int = 12, rate: float = 0.2, l2: float = 1e-6,
    seed: int = 7,
) -> LinearClassifier:  # fmt: skip
    """Multinomial logistic regression by SGD over the hashed features (a few seconds for thousands)."""
    data = list(samples)
    if not data:
        raise ValueError("no labelled prompts to train on")
    classes = sorted({task for _, task in data}, key=lambda t: list(Task).index(t))
    if len(classes) < 2:
        raise ValueError(f"the prompts are all labelled {classes[0].value}: a classifier needs at least two tasks")
    index = {t: i for i, t in enumerate(classes)}
    rows = [(np.unique(features(text, bits)), index[task]) for text, task in data]
    weights = np.zeros((1 << bits, len(classes)), dtype=np.float64)
    bias = np.zeros(len(classes))
    rng = random.Random(seed)
    for epoch in range(epochs):
        rng.shuffle(rows)
        step = rate / (1 + epoch)
        for idx, label in rows:
            logits = weights[idx].sum(axis=0) + bias
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            probs[label] -= 1.0
            weights[idx] -= step * (probs + l2 * weights[idx])
            bias -= step * probs
    return LinearClassifier(classes, weights.astype(np.float16), bias, bits=bits)


def accuracy(model: LinearClassifier, samples: Iterable[tuple[str, Task]]) -> float:
    pairs = list(samples)
    return sum(model(text) is task for text, task in pairs) / max(1, len(pairs))


def read_samples(lines: Iterable[str]) -> list[tuple[str, Task]]:
    """Labelled prompts from JSON lines ``{"text": ..., "task": ...}``; ValueError naming a bad line."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            out.append((str(item["text"]), Task(item["task"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            tasks = ", ".join(t.value for t in Task)
            raise ValueError(f'line {number}: expected {{"text": ..., "task": one of {tasks}}} ({exc})') from exc
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.learned", description="Train a Classifier object.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("train", help="train on labelled prompts (JSON lines) and print the Classifier (JSON)")
    cmd.add_argument("data", help="JSON lines: {\"text\": ..., \"task\": ...}")
    cmd.add_argument("--name", required=True)
    cmd.add_argument("--bits", type=int, default=13)
    cmd.add_argument("--epochs", type=int, default=12)
    cmd.add_argument("--holdout", type=float, default=0.2, help="share of the prompts kept out to measure accuracy")
    args = parser.parse_args(argv)
    with open(args.data, encoding="utf-8") as handle:
        samples = read_samples(handle)
    random.Random(1).shuffle(samples)
    cut = int(len(samples) * (1 - args.holdout)) if args.holdout > 0 else len(samples)
    model = train(samples[:cut], bits=args.bits, epochs=args.epochs)
    held = accuracy(model, samples[cut:]) if cut < len(samples) else None
    said = f"trained on {cut} prompts of {args.data}"
    if held is not None:
        said += f"; accuracy {held:.1%} on {len(samples) - cut} held out"
    if cut < len(samples):  # the object shipped is trained on everything
        model = train(samples, bits=args.bits, epochs=args.epochs)
    obj = Classifier.model_validate({"kind": "Classifier", "metadata": {"name": args.name}, "spec": model.spec(description=said)})
    sys.stdout.write(obj.model_dump_json(exclude_none=True, exclude={"metadata": {"revision"}}) + "\n")
    sys.stderr.write(said + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
