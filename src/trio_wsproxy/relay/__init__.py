"""The relay on one node: listeners, sessions and their mailboxes, fan-out, groups and
the registry interface, metrics. Built on ``protocol/`` only; a distributed registry
(``backplane/``) plugs in behind :class:`~trio_wsproxy.GroupRegistry`."""
