"""Pure pydantic contracts shared by every process: configuration kinds, node status, change sets.

No I/O and no imports from other project packages (enforced by import-linter).
"""

from schemas.classifier import Classifier
from schemas.common import ConfigObject, Metadata
from schemas.experiment import Experiment
from schemas.model import Model
from schemas.nodepool import NodePool
from schemas.rag import RagCollection
from schemas.registry import KINDS, AnyConfig, kind_for_class, parse_object
from schemas.route import Route
from schemas.status import NodeRegistration, NodeStatus

__all__ = [
    "KINDS",
    "AnyConfig",
    "Classifier",
    "ConfigObject",
    "Experiment",
    "Metadata",
    "Model",
    "NodePool",
    "NodeRegistration",
    "NodeStatus",
    "RagCollection",
    "Route",
    "kind_for_class",
    "parse_object",
]
