"""Channels: Subscribe, Unsubscribe, SubscribeAll, UnsubscribeAll, and HealthCheck.

`trade:event` and `balance:event` are on by default; symbol channels only record the wish (this
gateway has no quote feed yet), so clients that subscribe to symbols on connect keep working.
"""

from __future__ import annotations

from typing import Any

from ..protocol.models import ChannelsData, EmptyData
from ..session.session import EVENT_CHANNELS
from .context import RequestContext


def subscribe(ctx: RequestContext, data: ChannelsData) -> dict[str, Any]:
    session = ctx.session
    for channel in data.chanels:
        if channel in EVENT_CHANNELS:
            session.event_channels.add(channel)
        else:
            session.symbols.add(channel)
    return _channels(ctx)


def unsubscribe(ctx: RequestContext, data: ChannelsData) -> dict[str, Any]:
    session = ctx.session
    for channel in data.chanels:
        session.event_channels.discard(channel)
        session.symbols.discard(channel)
    return _channels(ctx)


def subscribe_all(ctx: RequestContext, data: EmptyData) -> dict[str, Any]:
    ctx.session.subscribe_all = True
    return _channels(ctx)


def unsubscribe_all(ctx: RequestContext, data: EmptyData) -> dict[str, Any]:
    """Clears symbol channels only; the event channels stay as they are."""
    ctx.session.subscribe_all = False
    ctx.session.symbols.clear()
    return _channels(ctx)


def _channels(ctx: RequestContext) -> dict[str, Any]:
    session = ctx.session
    return {
        "chanels": sorted(session.event_channels) + sorted(session.symbols),
        "all": session.subscribe_all,
    }


def health_check(now_ms: int) -> dict[str, Any]:
    return {"status": "ok", "time": now_ms}
