"""Route templates from an ASGI scope, read after the framework's router has run.

Nothing re-matches the request path. Starlette and FastAPI leave the matched route in
``scope["route"]`` (FastAPI ≥ 0.16x keeps a router included with a prefix in its effective route
context); Litestar sets ``scope["path_template"]``. A sub-app or router mounted with Starlette's
``Mount`` leaves only its concrete prefix behind (``root_path``), so the mount chain is resolved
against the outermost router's mounts: once per static prefix (cached), per request for a prefix
with parameters. Routes FastAPI does not put in the scope (plain Starlette routes, mounted apps)
are found by their endpoint, once per endpoint. Templates use the route's ``path_format``
(``/items/{id}``, converters dropped); a request no route matched gets None.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["on_path_template", "route_template"]

Scope = MutableMapping[str, Any]

TemplateHook = Callable[[Scope, dict[str, Any]], None]
_template_hook: TemplateHook | None = None

_MAX_CACHED = 4096  # per cache; beyond it, work is redone per request rather than remembered

# id(route or FastAPI route context) -> (that object, template, endpoint name, is a Mount)
_leaves: dict[int, tuple[object, str | None, str | None, bool]] = {}
# (id(outermost router), concrete mount prefix) -> (router, template prefix, innermost mount)
_prefixes: dict[tuple[int, str], tuple[object, str | None, object]] = {}
# id(object owning routes) -> (owner, {id(endpoint): (endpoint, route)})
_endpoints: dict[int, tuple[object, dict[int, tuple[object, object]]]] = {}


def on_path_template(hook: TemplateHook | None) -> None:
    """Register ``hook(scope, attrs)``, called for each request whose framework reported its own
    ``path_template`` (Litestar), with the request span still current: the Litestar integration
    records its procedures there at no extra ASGI layer.
    """
    global _template_hook
    _template_hook = hook


def route_template(
    scope: MutableMapping[str, Any], attrs: dict[str, Any] | None = None
) -> str | None:
    """Return the matched route's full template (``/v1/images/{id}``); None if none matched.

    With ``attrs``, the route's endpoint name (``get_image``) is stored as ``http.endpoint``.
    """
    route = scope.get("route")
    if route is None:
        template = scope.get("path_template")  # Litestar
        if isinstance(template, str):
            if _template_hook is not None and attrs is not None:
                _template_hook(scope, attrs)
            return template
        route = _route_by_endpoint(scope)
        if route is None:
            return None
    else:
        fastapi = scope.get("fastapi")
        if fastapi is not None:
            context = fastapi.get("effective_route_context")
            if context is not None and getattr(context, "original_route", None) is route:
                route = context  # the route as included: its template carries the prefixes
    _, template, name, is_mount = _leaf(route)
    if attrs is not None and name is not None:
        attrs["http.endpoint"] = name
    if "app_root_path" not in scope:  # set by Mount only: not mounted
        return template
    prefix, _ = _mount_prefix(scope)
    if prefix is None or template is None:
        return None
    if is_mount:  # an app Starlette cannot see into; Litestar reports its own template
        inner = scope.get("path_template")
        template = inner if isinstance(inner, str) else "/{path}"
    return prefix + template


def _route_by_endpoint(scope: MutableMapping[str, Any]) -> object | None:
    """Find a route FastAPI left in the scope only as its endpoint (plain routes, mounts)."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    fastapi = scope.get("fastapi")
    if fastapi is not None:
        context: object = fastapi.get("effective_route_context")
        if context is not None and getattr(context, "endpoint", None) is endpoint:
            return context  # a plain route in an included router
    mount = _mount_prefix(scope)[1] if "app_root_path" in scope else None
    if mount is not None and getattr(mount, "app", None) is endpoint:
        return mount
    return _route_for(mount if mount is not None else scope.get("router"), endpoint)


def _leaf(route: object) -> tuple[object, str | None, str | None, bool]:
    """(route, template, endpoint name, is a Mount), computed once per route object."""
    leaf = _leaves.get(id(route))
    if leaf is not None and leaf[0] is route:
        return leaf
    if _is_mount(route):
        # A mounted Starlette router that matched nothing leaves the Mount as the route (a 404).
        leaf = (route, None if _routes_inside(route) else "", None, True)
    else:
        path = getattr(route, "path_format", None)
        if not isinstance(path, str):
            path = getattr(route, "path", None)
        name = getattr(route, "name", None)
        leaf = (
            route,
            path if isinstance(path, str) else None,
            name if isinstance(name, str) else None,
            False,
        )
    if len(_leaves) < _MAX_CACHED:
        _leaves[id(route)] = leaf
    return leaf


def _mount_prefix(scope: MutableMapping[str, Any]) -> tuple[str | None, object]:
    """Return the mount chain's template prefix (``/t/{tenant}``, "" if none) and last Mount."""
    root = scope.get("root_path", "")
    app_root = scope["app_root_path"]
    if root == app_root or not root.startswith(app_root):
        return "", None
    concrete = root[len(app_root) :]
    router = scope.get("router")
    key = (id(router), concrete)
    cached = _prefixes.get(key)
    if cached is not None and cached[0] is router:
        return cached[1], cached[2]
    template, mount = _resolve(getattr(router, "routes", ()), concrete)
    if template == concrete and len(_prefixes) < _MAX_CACHED:  # parameterised prefixes vary
        _prefixes[key] = (router, template, mount)
    return template, mount


def _resolve(routes: Iterable[object], concrete: str) -> tuple[str | None, object]:
    """Walk mounts as Starlette matched them; None when the chain leaves what we can see."""
    starlette = sys.modules.get("starlette.routing")
    if starlette is None:
        return None, None
    template = ""
    mount: object = None
    while concrete:
        for route in routes:
            if isinstance(route, starlette.Host):
                found = _match_mount(route.routes, concrete, starlette)
            else:
                found = _match_mount((route,), concrete, starlette)
            if found is not None:
                break
        else:
            return None, None
        mount, matched = found
        template += mount.path_format.removesuffix("/{path}")  # type: ignore[attr-defined]
        concrete = concrete[len(matched) :]
        routes = mount.routes  # type: ignore[attr-defined]
    return template, mount


def _match_mount(
    routes: Iterable[object], concrete: str, starlette: Any
) -> tuple[object, str] | None:
    for route in routes:
        if isinstance(route, starlette.Mount):
            match = route.path_regex.match(concrete + "/")
            if match is not None:
                return route, concrete[: len(concrete) - len(match.group("path"))]
    return None


def _is_mount(route: object) -> bool:
    starlette = sys.modules.get("starlette.routing")
    return starlette is not None and isinstance(route, starlette.Mount)


def _routes_inside(mount: object) -> bool:
    starlette = sys.modules.get("starlette.routing")
    routes = getattr(mount, "routes", None) or ()
    return starlette is not None and any(isinstance(r, starlette.BaseRoute) for r in routes)


def _route_for(owner: object, endpoint: object) -> object | None:
    """Find the one route of ``owner`` (a router or Mount) whose endpoint is ``endpoint``."""
    if owner is None:
        return None
    cached = _endpoints.get(id(owner))
    if cached is None or cached[0] is not owner:
        index: dict[int, tuple[object, object]] = {}
        ambiguous: set[int] = set()
        for route in getattr(owner, "routes", ()):
            target = getattr(route, "endpoint", None)
            if target is None and _is_mount(route):
                target = getattr(route, "app", None)
            if target is None:
                continue
            if id(target) in index:
                ambiguous.add(id(target))
            index[id(target)] = (target, route)
        for key in ambiguous:
            del index[key]
        cached = (owner, index)
        if len(_endpoints) < _MAX_CACHED:
            _endpoints[id(owner)] = cached
    entry = cached[1].get(id(endpoint))
    return entry[1] if entry is not None and entry[0] is endpoint else None
