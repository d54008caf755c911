"""Registered names and type hints of workflow and activity functions.

A function's registered name is ``fn.__name__`` unless it was decorated with
``@df.defn(name="...")``. Anywhere a function is accepted, its name string is accepted too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from attrs import field, frozen

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.types import JsonValue, check_type_name

__all__ = [
    "ActivityDefinition",
    "PayloadConverter",
    "WorkflowDefinition",
    "bind_args",
    "defn",
    "name_of",
    "result_type_of",
]

F = TypeVar("F", bound=Callable[..., object])

_NAME_ATTR = "__df_name__"


class PayloadConverter(Protocol):
    """Turns user values into JSON payloads and back, guided by type hints."""

    def to_payload(self, value: object, what: str = "value") -> JsonValue: ...

    def from_payload(
        self, payload: JsonValue, type_hint: object = None, what: str | None = None
    ) -> object: ...


@typing.overload
def defn(fn: F, *, name: str | None = None) -> F: ...


@typing.overload
def defn(fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def defn(fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Give a workflow or activity function an explicit registered name.

    Use as ``@df.defn`` or ``@df.defn(name="charge-card")``.
    """

    def mark(f: F) -> F:
        if not callable(f):
            raise InvalidArgumentError(f"@df.defn decorates a function, got {f!r}")
        chosen = name if name is not None else getattr(f, "__name__", None)
        if not isinstance(chosen, str) or not chosen:
            raise InvalidArgumentError(f"cannot work out a name for {f!r}; pass name='...'")
        setattr(f, _NAME_ATTR, chosen)
        return f

    if fn is not None:
        return mark(fn)
    return mark


def name_of(fn_or_name: object, what: str = "function") -> str:
    """The registered name of a workflow/activity function, or the name string itself."""
    if isinstance(fn_or_name, str):
        if not fn_or_name:
            raise InvalidArgumentError(f"{what} name must not be empty")
        return check_type_name(fn_or_name, f"{what} name")
    explicit = getattr(fn_or_name, _NAME_ATTR, None)
    if isinstance(explicit, str):
        return check_type_name(explicit, f"{what} name")
    name = getattr(fn_or_name, "__name__", None)
    if callable(fn_or_name) and isinstance(name, str) and name != "<lambda>":
        return name
    raise InvalidArgumentError(
        f"expected a {what} (a function or its registered name), got {fn_or_name!r}"
    )


# Hints and signatures are looked up on every df.activity(...) call, which replay repeats for
# every command in history: cache them per function (weakly, so closures can go away).
_HINTS: weakref.WeakKeyDictionary[object, dict[str, object]] = weakref.WeakKeyDictionary()
_SIGNATURES: weakref.WeakKeyDictionary[object, inspect.Signature] = weakref.WeakKeyDictionary()
_FITS: weakref.WeakKeyDictionary[object, set[int]] = weakref.WeakKeyDictionary()  # arg counts
_RESULT_TYPES: weakref.WeakKeyDictionary[object, object] = weakref.WeakKeyDictionary()


def _remember(
    cache: weakref.WeakKeyDictionary[object, typing.Any], key: object, value: object
) -> None:
    with contextlib.suppress(TypeError):  # not weak-referenceable: just don't cache
        cache[key] = value


def _hints(fn: Callable[..., object]) -> dict[str, object]:
    """``fn``'s resolved type hints (callers must not modify the returned dict)."""
    try:
        return _HINTS[fn]
    except (KeyError, TypeError):
        pass
    try:
        hints = dict(typing.get_type_hints(fn))
    except Exception:
        # unresolvable forward references: fall back to plain JSON values (and try again
        # next time: the names may be defined by then)
        return {}
    _remember(_HINTS, fn, hints)
    return hints


def _signature(fn: Callable[..., object]) -> inspect.Signature | None:
    try:
        return _SIGNATURES[fn]
    except (KeyError, TypeError):
        pass
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    _remember(_SIGNATURES, fn, sig)
    return sig


@frozen
class _Params:
    """Positional parameters: their types and names, and those of ``*args`` (if any)."""

    types: tuple[object, ...] = ()
    var_type: object = None
    names: tuple[str, ...] = ()
    var_name: str | None = None


def _params(fn: Callable[..., object]) -> _Params:
    hints = _hints(fn)
    types: list[object] = []
    names: list[str] = []
    var: object = None
    var_name: str | None = None
    sig = _signature(fn)
    if sig is None:
        return _Params()
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            types.append(hints.get(p.name))
            names.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            var = hints.get(p.name, object)
            var_name = p.name
    return _Params(tuple(types), var, tuple(names), var_name)


def result_type_of(fn: object) -> object:
    """The declared return type of ``fn`` (None when undeclared or not a function)."""
    if isinstance(fn, str) or not callable(fn):
        return None
    try:  # asked at every df.activity(...) call (every replay too)
        return _RESULT_TYPES[fn]
    except (KeyError, TypeError):
        pass
    result = _result_type(fn)
    with contextlib.suppress(TypeError):
        if fn in _HINTS:  # (hints not resolved yet are looked for again next time)
            _remember(_RESULT_TYPES, fn, result)
    return result


def _result_type(fn: Callable[..., object]) -> object:
    hints = _hints(fn)
    ret = hints.get("return")
    origin = typing.get_origin(ret)
    # generator workflows: Generator[Yield, Send, Return] -> Return
    if origin is not None and getattr(origin, "__name__", "") in ("Generator",):
        args = typing.get_args(ret)
        return args[2] if len(args) == 3 else None
    if ret is type(None):
        return None
    return ret


def bind_args(fn: Callable[..., object], args: tuple[object, ...], what: str) -> None:
    """Check that ``args`` fit ``fn``'s positional parameters; raise a clear error if not."""
    try:
        fits = _FITS.get(fn)
    except TypeError:  # not weak-referenceable
        fits = None
    if fits is not None and len(args) in fits:
        return  # binding depends only on how many positional arguments there are
    sig = _signature(fn)
    if sig is None:
        return
    try:
        sig.bind(*args)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"{what} {name_of(fn)!r} cannot be called with {len(args)} argument(s): {exc}"
        ) from None
    if fits is not None:
        fits.add(len(args))
    else:
        _remember(_FITS, fn, {len(args)})


def _arg_types_for(param_types: tuple[object, ...], var_type: object, count: int) -> list[object]:
    out = list(param_types[:count])
    while len(out) < count:
        out.append(var_type)
    return out


def _structure_args(
    d: WorkflowDefinition | ActivityDefinition,
    kind: str,
    payloads: PayloadConverter,
    args: Sequence[JsonValue],
) -> list[object]:
    types = d.arg_types(len(args))
    out = []
    for i, (payload, hint) in enumerate(zip(args, types, strict=True)):
        if i < len(d.param_names):
            label = f"argument {d.param_names[i]!r}"
        else:
            label = f"argument {i} (*{d.var_name or 'args'})"
        out.append(payloads.from_payload(payload, hint, f"{label} of {kind} {d.name!r}"))
    return out


_WORKFLOW_EXAMPLE = (
    "a workflow is a generator function that yields commands, e.g. "
    "`def order(order_id): receipt = yield df.activity(charge, order_id); return receipt`"
)


def _code_of(fn: object) -> object:
    """The function whose code runs when ``fn`` is called: through ``functools.wraps``
    decorators, ``functools.partial`` and callable objects."""
    for _ in range(16):
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif inspect.isfunction(fn) or inspect.ismethod(fn):
            unwrapped = inspect.unwrap(fn)
            if unwrapped is fn:
                return fn
            fn = unwrapped
        elif not inspect.isroutine(fn) and not isinstance(fn, type) and callable(fn):
            fn = type(fn).__call__  # an instance with a __call__ method
        else:
            return fn
    return fn


def _where(fn: object) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return f" (defined at {code.co_filename}:{code.co_firstlineno})"


def _check_generator(fn: Callable[..., object]) -> None:
    code = _code_of(fn)
    name = name_of(fn, "workflow")
    if inspect.isgeneratorfunction(code):
        return
    where = _where(code)
    if inspect.isasyncgenfunction(code):
        raise InvalidArgumentError(
            f"workflow {name!r}{where} is an async generator (`async def` with `yield`); "
            "workflows are plain generator functions: drop `async` and write "
            "`result = yield df.activity(...)`; run async code inside an activity"
        )
    if inspect.iscoroutinefunction(code):
        raise InvalidArgumentError(
            f"workflow {name!r}{where} is an `async def` function; workflows are generator "
            "functions: drop `async` and write `result = yield df.activity(...)` instead of "
            "`await`; run async code inside an activity"
        )
    raise InvalidArgumentError(
        f"workflow {name!r}{where} is not a generator function (it has no `yield`); "
        f"{_WORKFLOW_EXAMPLE}. A plain function is an activity: register it with "
        "activities=[...]"
    )


@frozen
class WorkflowDefinition:
    """A registered workflow: its name, function and the types its arguments are structured to."""

    name: str
    fn: Callable[..., object] = field(eq=False)
    param_types: tuple[object, ...] = field(eq=False, default=())
    var_type: object = field(eq=False, default=None)
    result_type: object = field(eq=False, default=None)
    param_names: tuple[str, ...] = field(eq=False, default=())
    var_name: str | None = field(eq=False, default=None)

    @classmethod
    def from_fn(cls, fn: Callable[..., object]) -> WorkflowDefinition:
        """Register ``fn``; refuse anything that is not a generator function, naming it.

        Raises:
            InvalidArgumentError: ``fn`` is not callable, is a plain, ``async def`` or async
                generator function.
        """
        if not callable(fn):
            raise InvalidArgumentError(
                f"a workflow must be a generator function, got {fn!r}; {_WORKFLOW_EXAMPLE}"
            )
        _check_generator(fn)
        p = _params(fn)
        return cls(
            name_of(fn, "workflow"),
            fn,
            p.types,
            p.var_type,
            result_type_of(fn),
            p.names,
            p.var_name,
        )

    def arg_types(self, count: int) -> list[object]:
        return _arg_types_for(self.param_types, self.var_type, count)

    def structure_args(self, payloads: PayloadConverter, args: Sequence[JsonValue]) -> list[object]:
        """The run's arguments, structured to the parameters' type hints.

        Raises:
            PayloadError: naming the argument, the workflow and each field that does not fit.
        """
        return _structure_args(self, "workflow", payloads, args)


@frozen
class ActivityDefinition:
    """A registered activity: a plain sync or async function."""

    name: str
    fn: Callable[..., object] = field(eq=False)
    param_types: tuple[object, ...] = field(eq=False, default=())
    var_type: object = field(eq=False, default=None)
    result_type: object = field(eq=False, default=None)
    param_names: tuple[str, ...] = field(eq=False, default=())
    var_name: str | None = field(eq=False, default=None)
    is_async: bool = False

    @classmethod
    def from_fn(cls, fn: Callable[..., object]) -> ActivityDefinition:
        if not callable(fn):
            raise InvalidArgumentError(f"an activity must be a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn):
            raise InvalidArgumentError(
                f"activity {name_of(fn)!r} is a generator function; generators are workflows. "
                "Register it with workflows=[...] or make it a plain function"
            )
        p = _params(fn)
        return cls(
            name_of(fn, "activity"),
            fn,
            p.types,
            p.var_type,
            result_type_of(fn),
            p.names,
            p.var_name,
            inspect.iscoroutinefunction(fn),
        )

    def arg_types(self, count: int) -> list[object]:
        return _arg_types_for(self.param_types, self.var_type, count)

    def structure_args(self, payloads: PayloadConverter, args: Sequence[JsonValue]) -> list[object]:
        """An attempt's arguments, structured to the parameters' type hints.

        Raises:
            PayloadError: naming the argument, the activity and each field that does not fit.
        """
        return _structure_args(self, "activity", payloads, args)
