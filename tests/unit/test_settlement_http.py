"""The settlement listener's pure parts: the allow-list check and the OpenAPI document it serves
(docs/settlement.md, sections 3 and 5.5). The routes themselves run in tests/e2e."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import BaseModel

from manager_gateway.config import IPNetwork
from manager_gateway.settlement.http import ADJUST, AMOUNT, CANCEL, TRANSFER, is_allowed, openapi
from manager_gateway.settlement.models import (
    AdjustmentBody,
    AmountQueryBody,
    Answer,
    CancelBody,
    TransferBody,
)


def networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


LOOPBACK = networks("127.0.0.0/8", "::1/128")
EVERYWHERE = networks("0.0.0.0/0", "::/0")


# -- the allow-list --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("::2", False),
        # A dual-stack socket reports an IPv4 peer as an IPv4-mapped IPv6 address.
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_an_address_is_allowed_inside_the_networks_only(address: str, allowed: bool) -> None:
    """A peer inside one of the networks is allowed, any other refused; an IPv4-mapped IPv6
    peer is judged by its IPv4 address."""
    assert is_allowed(address, LOOPBACK) is allowed


def test_a_mapped_ipv4_peer_is_not_matched_as_ipv6() -> None:
    """`::ffff:10.0.0.1` is 10.0.0.1: outside an IPv6-only allow-list that would contain the
    mapped form, inside an IPv4 one."""
    assert is_allowed("::ffff:10.0.0.1", networks("::ffff:0:0/96")) is False
    assert is_allowed("::ffff:10.0.0.1", networks("10.0.0.0/8")) is True


def test_a_link_local_peer_with_its_zone_is_judged_by_its_address() -> None:
    """A link-local IPv6 peer arrives with its zone (`fe80::1%eth0`): judged by the address."""
    assert is_allowed("fe80::1%eth0", networks("fe80::/10")) is True
    assert is_allowed("fe80::1%eth0", LOOPBACK) is False


@pytest.mark.parametrize("address", [None, "", "not-an-address", "127.0.0.1.5"])
def test_an_unknown_or_unreadable_peer_is_refused_even_by_an_open_list(
    address: str | None,
) -> None:
    """No peer address (a Unix socket, a closed transport) or one that does not parse is
    refused, even when the allow-list admits every address."""
    assert is_allowed(address, EVERYWHERE) is False


def test_an_empty_allow_list_admits_nobody() -> None:
    assert is_allowed("127.0.0.1", ()) is False


# -- the OpenAPI document --------------------------------------------------------------------

SUMMARIES = {
    ADJUST: "Move money for an order event",
    CANCEL: "Reverse an earlier adjustment by its number",
    AMOUNT: "The wallet's current amount",
    TRANSFER: "Credit a net win once per txid (legacy)",
}
BODIES: dict[str, type[BaseModel]] = {
    ADJUST: AdjustmentBody,
    CANCEL: CancelBody,
    AMOUNT: AmountQueryBody,
    TRANSFER: TransferBody,
}
HEADERS = [
    {
        "name": "trace",
        "in": "header",
        "required": True,
        "description": "Global link identifier, echoed in the answer",
        "schema": {"type": "string"},
    },
    {
        "name": "companyId",
        "in": "header",
        "required": True,
        "description": "The platform's company id",
        "schema": {"type": "integer"},
    },
    {
        "name": "timestamp",
        "in": "header",
        "required": False,
        "description": "13-digit unix ms (required on adjustments)",
        "schema": {"type": "integer"},
    },
]


def expected_operation(route: str) -> dict[str, Any]:
    body = BODIES[route].__name__
    return {
        "summary": SUMMARIES[route],
        "operationId": route.replace("-", "_"),
        "parameters": HEADERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        },
        "responses": {
            "200": {
                "description": "The envelope; code '0' is success",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}
                },
            },
            "403": {"description": "the caller's address is not in settlement_allow"},
            "413": {"description": "body over 64 KiB"},
        },
    }


def refs(node: object) -> list[str]:
    """Every `$ref` in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_document_describes_each_route_under_the_prefix() -> None:
    """One POST per route under the prefix: its summary, an operationId, the three headers
    (trace and companyId required), the body's schema and the three answers."""
    document = openapi("/wallet/v2")
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "manager-gateway External Settlement", "version": "1"}
    assert document["paths"] == {
        f"/wallet/v2/{route}": {"post": expected_operation(route)} for route in SUMMARIES
    }


def test_the_schemas_are_the_models_with_the_platforms_field_names() -> None:
    """components.schemas holds each body and the envelope as its model generates it, with the
    platform's field names (its aliases), and every $ref in the document resolves there."""
    document = openapi("/api")
    schemas = document["components"]["schemas"]
    models: list[type[BaseModel]] = [*BODIES.values(), Answer]
    assert schemas == {model.__name__: model.model_json_schema(by_alias=True) for model in models}
    adjustment = schemas["AdjustmentBody"]["properties"]
    assert {"thirdServerCode", "requestUniqueNo", "amountDigits", "requestTime"} <= set(adjustment)
    assert "third_server_code" not in adjustment
    assert "reverseRequestUniqueNo" in schemas["CancelBody"]["required"]
    prefix = "#/components/schemas/"
    targets = refs(document)
    assert len(targets) == 2 * len(BODIES)
    assert all(ref.startswith(prefix) and ref.removeprefix(prefix) in schemas for ref in targets)
