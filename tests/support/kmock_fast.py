"""kmock's KubernetesEmulator without its O(n) hot spots and with the metadata a real API server
stamps: for the operator's scale benchmark (bench/bench_operator.py) and its kmock tests (kopf's
indexes key objects by uid, which plain kmock never sets).

kmock 0.8 (site-packages is never edited; this subclasses it) answers every request in time that
grows with the traffic so far, which made the 100- and 500-run operator benchmarks measure the
emulator instead of the operator:

* Dispatch (`RawHandler._handle`) asks `request in payload._source` for each reaction it tries.
  For a filter that iterates over EVERY request recorded since start-up, evaluating the filter's
  criteria on each, only to find the current request last: O(requests so far) per request, about
  ten reactions deep for a write (the emulator's fallbacks are tried in priority order), so
  quadratic in total. `_FastDispatch` answers the same question for the current request directly:
  walk the filter chain up to the root and evaluate each filter's criteria on this request only.
* Object lookups (`__get_objs`) scan all stored objects of all kinds for every read or write:
  O(objects); replaced by a dict lookup for named requests (lists still scan).
* No `resourceVersion` bumps: every event of an object carries the version it was created with, so
  kopf takes the first event after its own patch as the patched state ("consistency") even when it
  is an older one and re-runs handlers. Writes here get a fresh cluster-wide resourceVersion, a
  uid and creationTimestamp on create, and a generation bumped on spec changes, as a real API
  server does.
  JSON patches (kopf adds its finalizer with one) get the bump as an extra "add" op.
* `metadata.generateName` is ignored (kopf's Events all land on one name: 409 on every post but
  the first); a name is generated here.

* Lists and watches ignore `labelSelector` and `fieldSelector`; here they are applied (equality
  and existence terms), so an operator that watches with server-side selectors receives only what
  a real API server would send it.

What stays the same: plain dict merging of patches, no defaulting, validation or garbage
collection, no `timeoutSeconds` on watches, every request recorded in memory (`list(kmock)`).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import jsonpatch
from kmock import KubernetesEmulator
from kmock._internal import dsl, enums, rendering  # private: pinned to kmock 0.8 (see the checks below)
from kmock._internal.apps import RawHandler
from kmock._internal.k8s import KubernetesError


def _sees(view: dsl.View, request: rendering.Request) -> bool:
    """`request in view` for the request being served, without iterating over past requests.

    Exact for the chains kmock's emulator builds (root, priorities, filters); any other view
    (groups, exclusions, slices, streams) falls back to kmock's own (slow, exact) check.
    """
    match view:
        case dsl.Root():
            return True  # RawHandler.__call__ recorded it on this root before dispatching
        case dsl.Filter():
            return bool(view.criteria(request)) and _sees(view._source, request)
        case dsl.Priority() | dsl.Reaction():
            return _sees(view._source, request)
        case _:
            return request in view


class _FastDispatch(RawHandler):
    """RawHandler._handle with `_sees` instead of `request in payload._source`; else the same."""

    __slots__ = ()
    fast_dispatch = True  # False: kmock's own dispatch (to measure what this class saves)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if not self.fast_dispatch:
            return await RawHandler._handle(self, request)
        priorities = [payload.priorities for payload in self._payloads]
        width = max((len(p) for p in priorities), default=0)
        keys = [tuple(-p for p in prio) + (0,) * (width - len(prio)) for prio in priorities]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        for payload in (self._payloads[i] for i in order):
            if not payload._disabled.is_set() and _sees(payload._source, request):
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        raise NotImplementedError("no reaction matches the request")


class FastKubernetesEmulator(KubernetesEmulator, _FastDispatch):
    """The emulator with O(1) dispatch and lookups, resourceVersions, and per-client counters.

    MRO: this class, KubernetesEmulator (state changes), KubernetesScaffold, _FastDispatch
    (dispatch), RawHandler: KubernetesEmulator's `super()._handle` lands in `_FastDispatch`.
    """

    indexed = True  # False: kmock's scan over all objects per request
    stamped = True  # False: no resourceVersion/uid/generation/generateName (kmock's behaviour)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._versions = itertools.count(1000)
        self._latest = 999  # the latest resourceVersion handed out: what a list is "at"
        # Filled per request: (client, action, plural/subresource) -> count, and service times.
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.service_s: list[float] = []
        self.on_write: list[Any] = []  # callables(request) run after each successful write

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        start = time.perf_counter()
        self.counts[self._client(request), self._action(request), self._path(request)] += 1
        try:
            if request.resource is not None and self.stamped:
                self._stamp(request)
            response = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as error:
            # kopf's finalizer patch "test"s the resourceVersion: a stale one is a 422 on a real
            # API server, which kopf retries on its next cycle; a 500 it retries blindly, 3 times.
            raise KubernetesError(status=422, reason="Invalid", message=str(error)) from error
        finally:
            if request.action != enums.action.WATCH:  # watches stay open: duration means nothing
                self.service_s.append(time.perf_counter() - start)
        if request.action in (enums.action.CREATE, enums.action.UPDATE) and response.status < 300:
            for callback in self.on_write:
                callback(request)
        return response

    @staticmethod
    def _action(request: rendering.Request) -> str:
        return request.action.name.lower() if request.action is not None else str(request.method)

    @staticmethod
    def _client(request: rendering.Request) -> str:
        agent = request.headers.get("User-Agent", "")
        return agent.split("/", 1)[0] or "unknown"

    @staticmethod
    def _path(request: rendering.Request) -> str:
        plural = request.resource.plural if request.resource is not None else request.url.path
        return f"{plural}/{request.subresource}" if request.subresource else str(plural)

    def _stamp(self, request: rendering.Request) -> None:
        """Server-side metadata a real API server sets (the merge then stores it with the object)."""
        data = request.data
        if isinstance(data, list) and request.action == enums.action.UPDATE:
            # A JSON patch (kopf adds its finalizer so, with a "test" of the resourceVersion):
            # "add" on an existing member replaces it, after the test ops have run.
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next_version()})
            return
        if not isinstance(data, dict):
            return
        meta = data.setdefault("metadata", {})
        if request.action == enums.action.CREATE:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._next_version()
        elif request.action == enums.action.UPDATE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            current = self._objects._objects.get(key)
            if current is None or current.deleted:
                return  # the emulator answers 404
            meta["resourceVersion"] = self._next_version()
            if "spec" in data and request.subresource is None:
                meta["generation"] = int(current.get("metadata", {}).get("generation") or 1) + 1

    def _next_version(self) -> str:
        self._latest = next(self._versions)
        return str(self._latest)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        if self.stamped:
            payload["metadata"]["resourceVersion"] = str(self._latest)  # kmock: "..."
        matches = selection(request)
        payload["items"] = [item for item in payload["items"] if matches(item)]
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """kmock replays every existing object as ADDED whatever the requested resourceVersion;
        kopf, which lists first, then sees each object twice, the second time as a stale state
        after its own patches. Here the replay skips objects not changed since that version."""
        since = request.params.get("resourceVersion", "")
        matches = selection(request)
        replay = super()._serve_watch(request)
        async for event in replay:
            if not isinstance(event, dict):
                yield event  # b"": kmock's start of the stream
                continue
            if not matches(event.get("object") or {}):
                continue  # the API server's labelSelector / fieldSelector
            version = event.get("object", {}).get("metadata", {}).get("resourceVersion", "")
            if (
                self.stamped
                and event.get("type") == "ADDED"
                and since.isdigit()
                and version.isdigit()
                and int(version) <= int(since)
            ):
                continue
            yield event

    # Name-mangled in KubernetesEmulator (`self.__get_objs`): this overrides that private method.
    def _KubernetesEmulator__get_objs(self, request: rendering.Request, strict: bool) -> list[Any]:
        if self.indexed and request.name is not None and (strict or request.namespace is not None):
            obj = self._objects._objects.get((request.resource, request.namespace, request.name))
            return [] if obj is None else [obj]
        return [
            obj
            for (resource, namespace, name), obj in self._objects._objects.items()
            if resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
        ]


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def selection(request: rendering.Request) -> Any:
    """A predicate for the request's labelSelector and fieldSelector, as an API server applies
    them to lists and watches: comma-separated `k=v`, `k==v`, `k!=v`, `k`, `!k` terms over labels;
    `path=v`, `path!=v` over dotted field paths (metadata.name, reason, involvedObject.kind, ...).
    Set-based label terms (`in`, `notin`) are not supported and fail loudly."""
    labels = [t.strip() for t in request.params.get("labelSelector", "").split(",") if t.strip()]
    fields = [t.strip() for t in request.params.get("fieldSelector", "").split(",") if t.strip()]
    for term in labels:
        if " in " in term or " notin " in term or "(" in term:
            raise NotImplementedError(f"set-based label selector {term!r}")

    def check(term: str, get: Any, has: Any) -> bool:
        if "!=" in term:
            key, value = term.split("!=", 1)
            return bool(get(key) != value)
        if "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            return bool(has(key) and get(key) == value)
        return bool(not has(term[1:]) if term.startswith("!") else has(term))

    def matches(obj: dict[str, Any]) -> bool:
        own = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(t, lambda k: own.get(k), lambda k: k in own) for t in labels) and all(
            check(t, lambda k: _field(obj, k), lambda k: _field(obj, k) != "") for t in fields
        )

    return matches


# Fail loudly if kmock's internals moved (the overrides above would then silently not apply).
assert hasattr(KubernetesEmulator, "_KubernetesEmulator__get_objs"), "kmock internals changed"
assert FastKubernetesEmulator.__mro__.index(_FastDispatch) > FastKubernetesEmulator.__mro__.index(
    KubernetesEmulator
), "kmock MRO changed"
