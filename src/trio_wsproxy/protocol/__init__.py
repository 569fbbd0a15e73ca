"""The sans-I/O layer: every wire format and protocol decision of the package, as plain
functions and frozen classes that import neither trio nor sockets.

The handshake, WebSocket frames, the typed envelope and .NET type names, tokens, close
codes, RESP2, the backplane's node-to-node messages, and the policies (backoff) that the
layers above carry out. Tested on their own, without a network.
"""
