"""giftgraph's own points ledger (balances, transactions, redemptions) for providers that keep no user points."""

from providers.ledger.cipher import CardCipher, CardUnreadable, load_or_create_keys
from providers.ledger.migrate import upgrade
from providers.ledger.models import GrantResult, ReserveResult, SettleResult, Unsettled
from providers.ledger.store import PointsLedger, utcnow

__all__ = [
    "CardCipher",
    "CardUnreadable",
    "GrantResult",
    "PointsLedger",
    "ReserveResult",
    "SettleResult",
    "Unsettled",
    "load_or_create_keys",
    "upgrade",
    "utcnow",
]
