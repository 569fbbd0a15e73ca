"""Distributed group registries: relay nodes that share one Redis form one relay.
Implements the relay's registry interface; built on ``relay/`` interfaces and
``protocol/``."""
