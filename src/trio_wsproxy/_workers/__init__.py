"""Several relay processes on one port: ``trio-wsproxy serve --workers N``.

A supervisor reserves the port, runs N ``trio-wsproxy serve --reuse-port`` processes
that listen on it together (the kernel spreads new connections across them), restarts
a worker that dies, and stops them all on SIGINT or SIGTERM (and kills them all at once
on a second one). Groups span the workers through the backplane; the supervisor itself
knows nothing of groups or members.

``/metrics`` answers for the whole relay whichever worker takes the scrape: the
supervisor gives each worker a private endpoint, a Unix socket in a directory of its own
(``--worker-dir``, ``--worker-index``, ``--worker-count``: internal flags, set by the
supervisor alone), reads every worker's figures there when asked on its own socket, and
adds them up (:func:`~trio_wsproxy.relay.metrics.render_whole_relay`), keeping what it
last heard from each so that the relay's counters never go down.

One concept per module:

- ``supervise``: the worker processes: starting, restarting, stopping them
  (:func:`~.supervise.serve_workers`), and the flags that make a worker.
- ``signals``: how SIGINT and SIGTERM stop a relay or a supervisor, the second at once.
- ``endpoint``: where the private endpoints are (:class:`~.endpoint.WorkerLink`) and the
  small HTTP/1.1 server and client they speak.
- ``figures``: the whole relay's figures: the supervisor's memory of each worker and its
  sum (:class:`~.figures.WholeRelay`), a worker's report and its ``/metrics``
  (:func:`~.figures.serve_worker`).

What a worker reports is a wire format, so it lives in the pure layer:
:mod:`trio_wsproxy.protocol.workers`.
"""
