"""The typed Trio client: connection, reconnect and failover, dispatch to typed handlers,
request/reply. Built on ``protocol/`` only."""
