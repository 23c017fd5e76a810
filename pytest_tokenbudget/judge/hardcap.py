"""The hard cost cap: refuse a live request *before it leaves the process* once it would cross the cap.

A :class:`HardCap` is a recorder preflight hook (see ``capture/recorder.py``). For each request it

1. lets through what will not reach the network: mocked transports, and requests the active vcrpy
   cassette will replay (asked with vcrpy's own ``Cassette.can_play_response_for``, the test vcrpy
   itself applies; when a cassette is active but the request cannot be rebuilt for it — aiohttp and
   botocore hand over only the JSON body — the request is let through);
2. estimates its cost: input tokens with :mod:`pytest_tokenbudget.tokens.tokenizer`, output tokens from the
   request's ``max_tokens`` / ``max_output_tokens`` / ``max_completion_tokens`` (0 when absent: set
   one for a tight cap), priced like any call;
3. raises :class:`TokenBudgetExceeded` when the live spend so far plus the estimate exceeds the cap.

Requests that are in flight at the same moment are not reserved against each other: concurrency
can overshoot the cap by the requests already admitted.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .. import units as fmt
from ..model import Call, Status, Usage, Verdict
from ..request_body import request_bytes, request_json

if TYPE_CHECKING:
    from ..capture.recorder import Exchange

CostOf = Callable[[str, str, Usage, str], "float | None"]
"""``cost_of(provider, model, usage, host)``: USD, or None when the price is unknown."""

_OUTPUT_KEYS = (
    "max_tokens",
    "max_output_tokens",
    "max_completion_tokens",
    "maxOutputTokens",
    "maxTokens",
    "num_predict",
)
_NESTED = ("generationConfig", "generation_config", "config", "inferenceConfig", "options")
_ESTIMATED_APIS = {"openai.chat", "openai.responses", "anthropic.messages", "openai.embeddings"}


class TokenBudgetExceeded(BaseException):
    """A live LLM request refused by the hard cost cap before it left the process.

    It derives from ``BaseException`` (like ``pytest.fail``'s outcome) so that SDK retry loops,
    which catch ``Exception`` and retry or wrap it, do not swallow it.
    """

    def __init__(self, message: str, *, limit: float, spent: float, estimate: float, model: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.spent = spent
        self.estimate = estimate
        self.model = model


class CassetteWatch:
    """Knows the vcrpy cassettes that are active (entered and not yet exited).

    vcrpy's patches are process-wide, so is this record: one patch of
    ``CassetteContextDecorator._patch_generator``, shared by every watch, removed by :meth:`uninstall`.
    """

    _ORIGINAL = "_tokenbudget_hardcap_patch_generator"
    _active: ClassVar[list[Any]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def active(self) -> list[Any]:
        with self._lock:
            return list(self._active)

    def refresh(self) -> None:
        """Patch vcrpy when it has been imported (cheap to call often)."""
        module = sys.modules.get("vcr.cassette")
        decorator = getattr(module, "CassetteContextDecorator", None) if module is not None else None
        if decorator is None or hasattr(decorator, self._ORIGINAL):
            return
        original = decorator._patch_generator
        active, lock = self._active, self._lock

        def _patch_generator(self: Any, cassette: Any) -> Iterator[Any]:
            with lock:
                active.append(cassette)
            try:
                yield from original(self, cassette)
            finally:
                with lock:
                    if cassette in active:
                        active.remove(cassette)

        setattr(decorator, self._ORIGINAL, original)
        decorator._patch_generator = _patch_generator

    def uninstall(self) -> None:
        module = sys.modules.get("vcr.cassette")
        decorator = getattr(module, "CassetteContextDecorator", None) if module is not None else None
        if decorator is not None and hasattr(decorator, self._ORIGINAL):
            decorator._patch_generator = getattr(decorator, self._ORIGINAL)
            delattr(decorator, self._ORIGINAL)

    def stays_local(self, request: Any) -> bool:
        """True when the innermost active cassette replays ``request`` or refuses to record it."""
        with self._lock:
            cassette = self._active[-1] if self._active else None
        if cassette is None:
            return False
        vcr_request = _vcr_request(request)
        if vcr_request is None:
            return True  # cannot ask: never stop a request a cassette may serve
        if cassette.can_play_response_for(vcr_request):
            return True
        # A write-protected cassette raises CannotOverwriteExistingCassetteException instead of sending.
        return bool(cassette.write_protected and cassette.filter_request(vcr_request))


def _vcr_request(request: Any) -> Any:
    """vcrpy's view of an httpx/httpx2 or requests request; None for other shapes."""
    from vcr.request import Request as VcrRequest

    method = getattr(request, "method", None)
    url = getattr(request, "url", None)
    if not method or url is None:
        return None
    if hasattr(request, "stream"):  # httpx / httpx2
        body = request_bytes(request)
        if body is None:  # RequestNotRead: a streaming body vcrpy would read itself
            return None
        return VcrRequest(method, str(url), body, request.headers)
    if hasattr(request, "body") and hasattr(request, "prepare_body"):  # requests.PreparedRequest
        return VcrRequest(method, str(url), request.body, dict(request.headers))
    return None


def output_ceiling(body: Mapping[str, Any]) -> int:
    """The output tokens a request allows itself (0 when it sets no limit)."""
    found = [body.get(key) for key in _OUTPUT_KEYS]
    for name in _NESTED:
        nested = body.get(name)
        if isinstance(nested, Mapping):
            found.extend(nested.get(key) for key in _OUTPUT_KEYS)
    numbers = [n for n in found if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    return max(numbers, default=0)


def estimate_usage(api: str, body: Mapping[str, Any], model: str) -> Usage:
    """Input tokens by the tokenizer, output tokens by the request's own ceiling."""
    from ..tokens.tokenizer import count, estimate_request

    try:
        if api in _ESTIMATED_APIS:
            input_tokens = estimate_request(api, body, model).total
        else:
            input_tokens = count(json.dumps(body, ensure_ascii=False), model).tokens
    except ValueError:  # a body shape the estimator does not know: count its text
        input_tokens = count(json.dumps(body, ensure_ascii=False), model).tokens
    return Usage(input_tokens=input_tokens, output_tokens=output_ceiling(body))


class HardCap:
    """The preflight hook and its record of live spend and refused requests."""

    def __init__(
        self, limit: float, cost_of: CostOf, *, note: str = "", verdicts: list[Verdict] | None = None
    ) -> None:
        self.limit = limit
        self.cost_of = cost_of
        self.note = note  # e.g. "per xdist worker: $0.50 of $2"
        self.watch = CassetteWatch()
        self.verdicts: list[Verdict] = verdicts if verdicts is not None else []  # refusals, unpriced models
        self._live: list[Call] = []
        self._unpriced: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, call: Call) -> None:
        """Ledger listener: remember live calls (their price is read later, once set)."""
        if call.source == "live":
            with self._lock:
                self._live.append(call)

    @property
    def spent(self) -> float:
        """Live spend so far over priced calls."""
        with self._lock:
            return sum(c.cost_usd for c in self._live if c.cost_usd is not None)

    def __call__(self, exchange: Exchange, request: Any) -> None:
        """Refuse ``request`` with :class:`TokenBudgetExceeded`; nothing else ever leaves here (a
        failure of the cap's own is a verdict once per kind, and the request goes ahead)."""
        __tracebackhide__ = True  # pytest shows the refusal, not the plugin's frames
        try:
            self._check(exchange, request)
        except TokenBudgetExceeded:
            raise
        except Exception as exc:
            self._failed(exchange, exc)

    def _failed(self, exchange: Exchange, exc: Exception) -> None:
        """The cap could not judge a request: say so once per kind of error, never raise."""
        try:
            key = f"error {type(exc).__name__}"
            with self._lock:
                if key in self._unpriced:
                    return
                self._unpriced.add(key)
            self.verdicts.append(
                Verdict(
                    name=f"hard-cap {key}",
                    kind="hard-cap",
                    metric="cost_usd",
                    limit=self.limit,
                    actual=0.0,
                    status=Status.UNKNOWN,
                    message=f"hard cost cap could not judge a request ({type(exc).__name__}): let through",
                    nodeid=exchange.owner.nodeid,
                )
            )
        except Exception:  # nothing of the cap's may reach the request
            pass

    def _check(self, exchange: Exchange, request: Any) -> None:
        __tracebackhide__ = True
        if exchange.source != "live":
            return
        self.watch.refresh()
        if self.watch.stays_local(request):
            return
        route = exchange.route
        body = request_json(request) or {}
        model = str(body.get("model") or body.get("modelId") or route.model_hint or "unknown")
        usage = estimate_usage(route.api, body, model)
        estimate = self.cost_of(route.provider, model, usage, route.host)
        owner = exchange.owner
        if estimate is None:
            key = f"{route.provider}/{model}"
            if key not in self._unpriced:
                self._unpriced.add(key)
                self.verdicts.append(
                    Verdict(
                        name=f"hard-cap {key}",
                        kind="hard-cap",
                        metric="cost_usd",
                        limit=self.limit,
                        actual=self.spent,
                        status=Status.UNKNOWN,
                        message=f"hard cost cap cannot price {key}: its live requests are not capped",
                        nodeid=owner.nodeid,
                    )
                )
            return
        spent = self.spent
        if spent + estimate <= self.limit:
            return
        cap = fmt.money(self.limit) + (f" ({self.note})" if self.note else "")
        message = (
            f"hard cost cap: refused a live {route.api} request to {model} "
            f"from {owner.nodeid} ({owner.phase}): "
            f"spent {fmt.money(spent)} + estimated {fmt.money(estimate)} "
            f"(input {fmt.tokens(usage.input_tokens)}, output ≤{fmt.tokens(usage.output_tokens)}) > {cap}"
        )
        self.verdicts.append(
            Verdict(
                name=f"hard-cap {owner.nodeid}",
                kind="hard-cap",
                metric="cost_usd",
                limit=self.limit,
                actual=spent + estimate,
                status=Status.EXCEEDED,
                message=message,
                nodeid=owner.nodeid,
            )
        )
        raise TokenBudgetExceeded(message, limit=self.limit, spent=spent, estimate=estimate, model=model)
