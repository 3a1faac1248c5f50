"""Configuration store: the ConfigStore protocol, its backends, key paths, informer, leases."""
