"""The catalogue of configuration kinds: plural names (URL and key segments) to classes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from schemas.classifier import Classifier
from schemas.common import ConfigObject
from schemas.experiment import Experiment
from schemas.model import Model
from schemas.nodepool import NodePool
from schemas.rag import RagCollection
from schemas.route import Route

AnyConfig = Annotated[Model | Route | RagCollection | Experiment | NodePool | Classifier, Field(discriminator="kind")]

#: plural (as in ``/api/v1/config/<plural>`` and ``/<ns>/v1/config/<plural>/<name>``) -> class.
KINDS: dict[str, type[ConfigObject]] = {
    cls.plural: cls for cls in (Model, Route, RagCollection, Experiment, NodePool, Classifier)
}
#: ``kind`` field value -> plural.
PLURAL_OF_KIND: dict[str, str] = {cls.model_fields["kind"].default: plural for plural, cls in KINDS.items()}

_ANY: TypeAdapter[Model | Route | RagCollection | Experiment | NodePool | Classifier] = TypeAdapter(AnyConfig)


def parse_object(data: Any) -> ConfigObject:
    """Validate a document whose ``kind`` field selects the class (raises pydantic.ValidationError)."""
    return _ANY.validate_python(data)


def kind_for_class(obj: ConfigObject) -> str:
    """Plural name of an object's kind."""
    return type(obj).plural
