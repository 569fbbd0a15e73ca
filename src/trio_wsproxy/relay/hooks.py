"""Asking the application's back end: the connect, join and publish hooks (DESIGN.md §9).

The relay asks; the back end decides (``docs/backend.md``). Each hook is an HTTP POST of
a JSON body (:mod:`trio_wsproxy.protocol.hooks`), answered by a JSON object, over kept-
alive connections (:mod:`.hookclient`: h11, whose calls cost a fifth of httpx's; a
publish hook costs one request per message, not one connection).

- **Time**: the back end has ``hook_timeout`` seconds to answer, a wait for a free call
  included; what waits is the one connection, join or message that asked, never another
  group (each session awaits its own hooks in its own task).
- **Bounded**: at most ``max_hook_calls`` calls in flight per node; more wait their turn
  (within their timeout), so a slow back end cannot make the relay open connections to
  it without bound.
- **Failure is a decision too**: a call that times out, fails (a connection error, a
  status other than 2xx) or is answered with something the relay cannot act on is
  decided by the hook's failure policy: refuse (the default: 503 for a connection, an
  error event for a join or a message), or allow.
- **Visible**: every call is counted by hook and outcome with its latency (``/metrics``);
  every refusal is logged at INFO with the hook's latency; failures at WARNING, once per
  :data:`FAILURE_LOG_INTERVAL` per hook (the rest are counted).
"""

from __future__ import annotations

import logging
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..protocol.hooks import (
    CONNECT,
    HookAnswer,
    HookAnswerError,
    HookRequest,
    parse_answer,
    request_body,
)
from ..protocol.printable import printable
from ..protocol.tokens import allows
from .hookclient import HookCallError, HookClient
from .webhooks import endpoint_label

if TYPE_CHECKING:
    from ..protocol.handshake import Join
    from .config import RelayConfig
    from .counters import Counters

logger = logging.getLogger("trio_wsproxy.relay")

#: The least time between two warnings about one hook's failures (the rest are counted).
FAILURE_LOG_INTERVAL = 10.0
#: The status of a refusal the failure policy made (the back end could not be asked).
FAILURE_STATUS = 503


def _optional_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class Grant:
    """What the connect hook gave a member: the groups it may join (names, or
    ``prefix*``; None: as without the hook) and its ``info`` (shown in presence)."""

    groups: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    info: dict[str, Any] | None = attrs.field(default=None, eq=False)
    #: The id the member's URL asked for, when the hook gave it another (its token, if
    #: any, names that one).
    renamed_from: str | None = None

    def allows(self, group: str) -> bool:
        """Whether the member may join ``group`` as far as the back end said."""
        return self.groups is None or allows(self.groups, group)


#: A member the connect hook said nothing about (or no connect hook).
NO_GRANT = Grant()


def connect_request(
    join: Join, remote: str, headers: tuple[str, ...], cookies: tuple[str, ...]
) -> HookRequest:
    """The connect hook's request for ``join``: with the headers and cookies of its
    upgrade request that the allow-lists name (and no others)."""
    shown = {name: join.headers[name] for name in headers if name in join.headers}
    jar: dict[str, str] = {}
    if cookies and "cookie" in join.headers:
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(join.headers["cookie"])
        except CookieError:
            parsed = SimpleCookie()
        jar = {name: parsed[name].value for name in cookies if name in parsed}
    return HookRequest(
        hook=CONNECT,
        id=join.id,
        group=join.group,
        remote=remote,
        subprotocol=join.subprotocol,
        headers=shown,
        cookies=jar,
    )


class Hooks:
    """The relay's calls to the back end's hooks; :meth:`run` owns the HTTP client."""

    def __init__(self, config: RelayConfig, counters: Counters) -> None:
        self._timeout = config.hook_timeout
        self._limit = config.max_hook_calls
        self._calls = trio.CapacityLimiter(config.max_hook_calls)
        self._counters = counters
        self._client: HookClient | None = None
        self._warned: dict[str, float] = {}

    @staticmethod
    def wanted(config: RelayConfig) -> bool:
        """Whether ``config`` sets any hook (relay-wide or in a namespace)."""
        return any((config.connect_hook, config.join_hook, config.publish_hook)) or any(
            ns.join_hook or ns.publish_hook for ns in config.namespaces
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the pooled HTTP client until cancelled."""
        client = HookClient()
        self._client = client
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._client = None
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def ask(self, url: str, request: HookRequest, allow_on_failure: bool) -> HookAnswer:
        """The back end's answer to ``request`` at ``url``; when it cannot be had, what
        the failure policy decides (``allow_on_failure``). Never raises for the back
        end's sake."""
        hook = request.hook
        started = trio.current_time()
        failure: str | None = None
        answer: HookAnswer | None = None
        with trio.move_on_after(self._timeout):
            try:
                async with self._calls:
                    client = self._client
                    if client is None:
                        raise HookCallError("the relay is not running its hooks")
                    status, body = await client.post(url, request_body(request))
                if not 200 <= status < 300:
                    failure = f"answered {status}"
                else:
                    answer = parse_answer(body, hook)
            except (HookCallError, HookAnswerError) as exc:
                failure = str(exc) or type(exc).__name__
        latency = trio.current_time() - started
        self._counters.hook_latency(hook, latency)
        if answer is None:
            outcome = "failed" if failure is not None else "timeout"
            self._counters.hook_calls[hook, outcome] += 1
            what = failure or f"no answer within {self._timeout:g}s"
            self._warn(hook, url, what, allow_on_failure)
            if allow_on_failure:
                return HookAnswer(allow=True)
            reason = (
                f"the application's back end did not answer ({hook} hook)"
                if failure is None
                else f"the application's back end failed ({hook} hook)"
            )
            return HookAnswer(allow=False, status=FAILURE_STATUS, reason=reason)
        if not answer.allow:
            self._counters.hook_calls[hook, "refused"] += 1
            logger.info(
                "the %s hook refused %s in %s: %d %s (%.0f ms)",
                hook,
                printable(request.id),
                printable(request.group),
                answer.status,
                answer.reason,
                latency * 1000,
                extra={
                    "hook": hook,
                    "member": printable(request.id),
                    "group": printable(request.group),
                    "status": answer.status,
                    "reason": answer.reason,
                    "latency_ms": round(latency * 1000, 1),
                },
            )
        elif answer.text is not None or answer.binary is not None:
            self._counters.hook_calls[hook, "replaced"] += 1
        else:
            self._counters.hook_calls[hook, "allowed"] += 1
        return answer

    def _warn(self, hook: str, url: str, what: str, allow_on_failure: bool) -> None:
        now = trio.current_time()
        if now - self._warned.get(hook, -FAILURE_LOG_INTERVAL) < FAILURE_LOG_INTERVAL:
            return
        self._warned[hook] = now
        logger.warning(
            "the %s hook %s: %s; its failure policy %s (more failures in the next %gs are "
            "only counted: trio_wsproxy_hook_calls)",
            hook,
            endpoint_label(url),
            what,
            "allows" if allow_on_failure else "refuses",
            FAILURE_LOG_INTERVAL,
            extra={"hook": hook},
        )
