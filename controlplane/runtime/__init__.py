"""The control plane's composition root: from settings to running subsystems. ``ControlPlane``
builds the core (store, database, configuration service, views and informers, tokens and keys)
and each subsystem this replica's roles ask for; ``start()`` starts their loops, ``close()``
stops them. The API (``controlplane.api.app``) receives what its routes use and nothing else."""

from controlplane.runtime.plane import ControlPlane

__all__ = ["ControlPlane"]
