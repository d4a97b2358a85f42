"""The viewer's transaction history: Relay pages over the provider's keyset, newest first."""

from __future__ import annotations

from providers import RewardsProvider, Transaction, TransactionKind
from providers.errors import ProviderError
from resolvers.errors import ProviderDown
from resolvers.pagination import Page, decode_cursor, encode_cursor, window

_KIND = "history"


def _encode(tx: Transaction) -> str:
    return encode_cursor(_KIND, (tx.position,))


async def page_history(
    provider: RewardsProvider,
    user_id: str,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    kinds: frozenset[TransactionKind] | None,
) -> Page[Transaction]:
    win = window(first=first, after=after, last=last, before=before, decode=lambda c: decode_cursor(_KIND, c, (int,)))
    # Newest first: `after` a cursor means older than it, `before` means newer.
    older_than = win.after[0] if win.after is not None else None
    newer_than = win.before[0] if win.before is not None else None
    try:
        # A page of 0 still asks for one item: the provider's total count comes with it.
        page = await provider.list_transactions(
            user_id,
            kinds=kinds,
            older_than=older_than,
            newer_than=newer_than,
            limit=max(win.size, 1),
            from_oldest=win.backward,
        )
    except ProviderError as exc:
        raise ProviderDown("Transaction history is temporarily unavailable.") from exc
    items = page.items if win.size else ()
    has_more = page.has_more or len(page.items) > len(items)
    if win.backward:
        has_previous, has_next = has_more, win.before is not None
    else:
        has_previous, has_next = win.after is not None, has_more
    return Page(
        items=items,
        cursors=[_encode(tx) for tx in items],
        has_next_page=has_next,
        has_previous_page=has_previous,
        total_count=page.total_count,
    )
