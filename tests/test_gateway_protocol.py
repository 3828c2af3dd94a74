"""The Gateway protocol (dunctl/gateway.py) lists every method and attribute the code asks of a payment provider,
and both providers (the Stripe gateway and the simulated account) have each of them: a method the tick calls
cannot exist on one provider only."""

import ast
import pathlib

import pytest

from dunctl.gateway import Gateway
from dunctl.simulation.account import SimulatedAccount
from dunctl.stripe.gateway import StripeGateway

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "dunctl"
PROTOCOL = {name for name in vars(Gateway) if not name.startswith("_")} | set(Gateway.__annotations__)
# wrappers that hold a gateway, not providers (the CLI's lazy one, the tick's read-only one) add their own
WRAPPER_ONLY = {"bind"}


def asked_of_a_gateway() -> set[str]:
    """Every `<...>gateway.NAME` the package reads (calls and attributes), except on `self._gateway` wrappers'
    own plumbing."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
                holder = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if holder in ("gateway", "_gateway") and not node.attr.startswith("_"):
                    names.add(node.attr)
    return names


def test_the_protocol_lists_everything_the_code_asks_of_a_gateway():
    missing = asked_of_a_gateway() - PROTOCOL - WRAPPER_ONLY
    assert not missing, f"add to dunctl/gateway.py's Gateway: {sorted(missing)}"


@pytest.mark.parametrize("provider", [StripeGateway, SimulatedAccount])
def test_each_provider_has_every_method_of_the_protocol(provider):
    methods = {name for name in vars(Gateway) if not name.startswith("_") and callable(getattr(Gateway, name))}
    assert not {m for m in methods if not callable(getattr(provider, m, None))}


def test_the_contract_suite_exercises_every_member_of_the_protocol():
    """tests/gateway_contract.py runs against both providers: each method and attribute of the protocol is used
    there through a gateway, so a provider cannot get one of them wrong unnoticed."""
    source = (pathlib.Path(__file__).resolve().parent / "gateway_contract.py").read_text()
    used = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)
            and getattr(node.value, "attr", getattr(node.value, "id", None)) == "gateway"}
    assert not PROTOCOL - used, f"add to tests/gateway_contract.py a test of: {sorted(PROTOCOL - used)}"
