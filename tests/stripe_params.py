"""Stripe's request rules for the fake: each request is checked against stripe-python's own generated parameter
types (`stripe.params`, the pinned 16.x, API version 2026-10-28.endive), as Stripe's API checks it, so a request
Stripe would refuse fails a test instead of passing on the fake's leniency.

    params = parse_form(pairs)                       # the SDK's form encoding -> nested dicts and lists
    validate("POST /v1/invoices/:id/pay", params)    # raises ParamError, a 400 shaped like Stripe's

`PARAMS` maps every route the fake serves to the TypedDict the SDK's service method for that route takes
(`client.v1.invoices.pay(..., params: InvoicePayParams)`); a route missing from it is refused, never waved through.
"""

from __future__ import annotations

import functools
import re
import sys
import types
import typing
from decimal import Decimal

import stripe
import typing_extensions
import stripe._request_options as _request_options
from stripe import params as P
from stripe._invoice import Invoice
from stripe._stripe_object import UntypedStripeObject
from stripe.params import billing_portal as BP

PARAMS: dict[str, type] = {
    "GET /v1/account": P.AccountRetrieveCurrentParams,
    "GET /v1/charges/:id": P.ChargeRetrieveParams,
    "GET /v1/customers/:id": P.CustomerRetrieveParams,
    "GET /v1/disputes/:id": P.DisputeRetrieveParams,
    "GET /v1/events": P.EventListParams,
    "GET /v1/events/:id": P.EventRetrieveParams,
    "GET /v1/invoice_payments": P.InvoicePaymentListParams,
    "GET /v1/invoices": P.InvoiceListParams,
    "GET /v1/invoices/:id": P.InvoiceRetrieveParams,
    "GET /v1/invoices/:id/lines": P.InvoiceLineItemListParams,
    "GET /v1/mandates/:id": P.MandateRetrieveParams,
    "GET /v1/payment_intents/:id": P.PaymentIntentRetrieveParams,
    "GET /v1/payment_methods/:id": P.PaymentMethodRetrieveParams,
    "GET /v1/subscription_items": P.SubscriptionItemListParams,
    "GET /v1/subscriptions": P.SubscriptionListParams,
    "GET /v1/subscriptions/:id": P.SubscriptionRetrieveParams,
    "POST /v1/billing_portal/sessions": BP.SessionCreateParams,
    "POST /v1/invoices/:id": P.InvoiceUpdateParams,
    "POST /v1/invoices/:id/mark_uncollectible": P.InvoiceMarkUncollectibleParams,
    "POST /v1/invoices/:id/pay": P.InvoicePayParams,
    "POST /v1/invoices/:id/void": P.InvoiceVoidInvoiceParams,
    "POST /v1/invoices/create_preview": P.InvoiceCreatePreviewParams,
    "POST /v1/subscriptions/:id": P.SubscriptionUpdateParams,
    "DELETE /v1/subscriptions/:id": P.SubscriptionCancelParams,
}

# Some params types extend RequestOptions (api_key, idempotency_key, stripe_account, ...): the SDK sends those as
# headers, so on the wire they are unknown parameters like any other.
_OPTIONS = frozenset(_request_options.RequestOptions.__annotations__)


def _literals(tp) -> set[str]:
    if typing.get_origin(tp) is typing.Literal:
        return set(typing.get_args(tp))
    return set().union(*(_literals(arm) for arm in typing.get_args(tp)))


# Stripe's documented error codes: the `code` enum of the API's error object, which the SDK carries on
# Invoice.last_finalization_error (generated from the same OpenAPI spec as https://docs.stripe.com/error-codes).
DOCUMENTED_CODES = frozenset(_literals(Invoice.LastFinalizationError.__annotations__["code"]))


class ParamError(Exception):
    """A request Stripe refuses before acting on it: 400 invalid_request_error naming the parameter."""

    def __init__(self, param: str, message: str, code: str | None = None):
        super().__init__(message)
        assert code is None or code in DOCUMENTED_CODES, code
        self.param, self.message, self.code = param, message, code


# -- decoding the SDK's form encoding (bracket syntax) -------------------------------------------------------------


def parse_form(pairs: list[tuple[str, str]]) -> dict:
    """`a[b][0]=x&types[]=y` -> {"a": {"b": ["x"]}, "types": ["y"]} (stripe-python writes arrays as a[0]=...)."""
    root: dict = {}
    for key, value in pairs:
        parts = [p for p in re.split(r"\[|\]", key.replace("[]", "[\x00]")) if p != ""]
        node = root
        for i, part in enumerate(parts):
            if part == "\x00":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node):
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


# -- the types ---------------------------------------------------------------------------------------------------


class _Names(dict):
    """Names a params module imports only under TYPE_CHECKING (StripeContext, Mapping): resolved lazily."""

    def __missing__(self, name: str):
        for source in (vars(_request_options), vars(typing)):
            if name in source:
                return source[name]
        try:
            return getattr(stripe, name)
        except AttributeError:
            raise KeyError(name) from None


@functools.cache
def fields(shape: type) -> dict[str, object]:
    """A params TypedDict's wire parameters and their types (NotRequired/Required unwrapped)."""
    hints = typing.get_type_hints(shape, localns=_Names(vars(sys.modules[shape.__module__])), include_extras=True)
    return {name: _unwrap(tp) for name, tp in hints.items() if name not in _OPTIONS}


def required(shape: type) -> frozenset[str]:
    return frozenset(shape.__required_keys__) - _OPTIONS


# typing has NotRequired and Required from Python 3.11; stripe-python's params use typing_extensions' on 3.10.
_WRAPPERS = {typing_extensions.NotRequired, typing_extensions.Required,
             *(getattr(typing, name) for name in ("NotRequired", "Required") if hasattr(typing, name))}


def _unwrap(tp):
    while typing.get_origin(tp) in _WRAPPERS:
        tp = typing.get_args(tp)[0]
    return tp


# -- checking ----------------------------------------------------------------------------------------------------


def validate(route: str, params: dict) -> None:
    """Refuse (ParamError) what Stripe refuses for `route`: an unknown parameter, a value of the wrong type, a
    missing required parameter, a value outside an enum."""
    shape = PARAMS.get(route)
    if shape is None:
        raise LookupError(f"the fake serves {route} but tests/stripe_params.py maps it to no params type")
    _check_fields(shape, params, "")


def _join(path: str, key: str) -> str:
    return f"{path}[{key}]" if path else key


def _check_fields(shape: type, value, path: str) -> None:
    if not isinstance(value, dict):
        raise ParamError(path, f"Invalid object: {path} must be a hash of parameters")
    known = fields(shape)
    for key, item in value.items():
        name = _join(path, key)
        if key not in known:
            raise ParamError(name, f"Received unknown parameter: {name}", "parameter_unknown")
        _check(known[key], item, name)
    for key in sorted(required(shape) - value.keys()):
        name = _join(path, key)
        raise ParamError(name, f"Missing required param: {name}.", "parameter_missing")


def _check(tp, value, name: str) -> None:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        _check_union(typing.get_args(tp), value, name)
    elif origin is typing.Literal:
        _check_enum(set(typing.get_args(tp)), value, name)
    elif origin in (list, typing.List):
        if not isinstance(value, list):
            raise ParamError(name, f"Invalid array: {name} must be a list")
        for i, item in enumerate(value):
            _check(typing.get_args(tp)[0], item, f"{name}[{i}]")
    elif typing_extensions.is_typeddict(tp):
        _check_fields(tp, value, name)
    elif _is_hash(tp):
        if not isinstance(value, dict):
            raise ParamError(name, f"Invalid hash: {name} must be a hash")
        value_type = (typing.get_args(tp) or (str,))[-1]
        for key, item in value.items():
            _check(value_type, item, f"{name}[{key}]")
    else:
        _check_scalar(tp, value, name)


_SCALARS = {
    int: (re.compile(r"-?\d+"), "Invalid integer", "parameter_invalid_integer"),
    bool: (re.compile(r"true|false"), "Invalid boolean", None),   # stripe-python 16 writes bools in lower case
    float: (re.compile(r"-?\d+(\.\d+)?"), "Invalid decimal", None),
    Decimal: (re.compile(r"-?\d+(\.\d+)?"), "Invalid decimal", None),
}


def _check_scalar(tp, value, name: str) -> None:
    if tp not in _SCALARS and tp is not str:
        return      # Any and the like: nothing the types say
    if not isinstance(value, str):
        what = _SCALARS[tp][1] if tp in _SCALARS else "Invalid string"
        raise ParamError(name, f"{what}: {name} must be a single value, "
                               f"not a {'list' if isinstance(value, list) else 'hash'}")
    if value == "":
        # Stripe reads an empty value as "unset", allowed only where the types say Literal[''].
        raise ParamError(name, f"You passed an empty string for '{name}'. We assume empty values are an attempt "
                               f"to unset a parameter; however '{name}' cannot be unset. You should remove "
                               f"'{name}' from your request or supply a non-empty value.", "parameter_invalid_empty")
    if tp in _SCALARS:
        pattern, what, code = _SCALARS[tp]
        if not pattern.fullmatch(value):
            raise ParamError(name, f"{what}: {value}", code)


def _check_enum(allowed: set[str], value, name: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(sorted(a for a in allowed if a != ""))
        raise ParamError(name, f"Invalid {name}: must be one of {listed}")


def _is_hash(tp) -> bool:
    """Dict[str, X], and the SDK's UntypedStripeObject[X] (metadata), a dict too."""
    kind = typing.get_origin(tp) or tp
    return kind is UntypedStripeObject or isinstance(kind, type) and issubclass(kind, dict)


def _shape(tp) -> type:
    tp = _unwrap(tp)
    if typing_extensions.is_typeddict(tp) or _is_hash(tp):
        return dict
    return list if typing.get_origin(tp) in (list, typing.List) else str


def _check_union(arms: tuple, value, name: str) -> None:
    enum = _literals(typing.Union[arms]) - {""} if len(arms) > 1 else set()
    if enum:
        # The SDK types an enum as `Literal[...] | str` so that values added in later API versions still type-check;
        # the API of the pinned version accepts only the listed ones.
        arms = tuple(arm for arm in arms if arm is not str)
    errors = []
    for arm in arms:
        try:
            _check(arm, value, name)
            return
        except ParamError as exc:
            errors.append((arm, exc))
    if enum and isinstance(value, str):
        _check_enum(_literals(typing.Union[arms]), value, name)
    # Report against the arm the value was meant for (a hash for a TypedDict, ...); Literal[''] is only the way to
    # unset a parameter, never what a wrong value was meant to be.
    meant = [exc for arm, exc in errors if _shape(arm) is type(value) and _literals(arm) != {""}]
    raise meant[0] if meant else errors[-1][1]
