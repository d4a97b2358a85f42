"""The sandbox's reward catalog: generated from a seed, identical on every run with that seed."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

from providers.base import Denomination, DenominationKind, Reward, RewardAvailability

FAILING_MARKER = "(sandbox: fulfilment always fails)"
IMAGE_BASE_URL = "https://sandbox.giftgraph.invalid/images"

CATEGORY_BRANDS: dict[str, tuple[str, ...]] = {
    "Dining": (
        "Copper Kettle", "Bistro Lumen", "Noodle Harbor", "Ember & Oak",
        "Sunny Side Diner", "Taco Orbit", "Pizzeria Vela", "The Daily Grind",
    ),
    "Entertainment": (
        "Starlight Cinemas", "PixelPlay", "Soundwave Music", "Arcade Atlas",
        "Bookmark & Co", "StreamNest", "Gamerift", "Encore Tickets",
    ),
    "Fashion": (
        "Threadline", "Urban Loom", "Velvet Fox", "Northwind Apparel",
        "Sole Society", "Maple & Thread", "Indigo Street", "Atelier Nova",
    ),
    "Groceries": (
        "Green Basket", "FreshFold Market", "Harvest Lane", "Pantry Point",
        "Orchard & Co", "DailyCart", "Golden Grain Grocers", "Blue River Foods",
    ),
    "Electronics": (
        "VoltHub", "Circuitry", "Nimbus Tech", "GadgetGrove",
        "Quantum Electronics", "BrightByte", "Signal Supply", "Lumen Labs",
    ),
    "Travel": (
        "Jetstream Travel", "Wanderly", "Harbor Hotels", "Skyline Air",
        "RoadRunner Rentals", "Compass Cruises", "Summit Stays", "Railway Express",
    ),
    "Home & Garden": (
        "Hearth & Home", "Greenthumb Garden", "Oakfield Furniture", "Nest Living",
        "Brick & Beam", "Casa Calma", "Petal Patch", "ToolTown",
    ),
    "Health & Beauty": (
        "Glow Apothecary", "Pure Petal", "Vital Pharmacy", "Serene Spa",
        "Bloom Beauty", "FitForm Gym", "Radiant Skin", "Wellspring",
    ),
}  # fmt: skip

CURRENCY_COUNTRIES: dict[str, tuple[str, ...]] = {
    "USD": ("US",),
    "CAD": ("CA",),
    "GBP": ("GB",),
    "AUD": ("AU",),
    "EUR": ("IE", "DE", "FR", "ES", "IT", "NL"),
}
CURRENCY_WEIGHTS = {"USD": 35, "EUR": 25, "GBP": 15, "CAD": 12, "AUD": 13}
AVAILABILITY_WEIGHTS = {
    RewardAvailability.AVAILABLE: 88,
    RewardAvailability.OUT_OF_STOCK: 8,
    RewardAvailability.DISCONTINUED: 4,
}
FAILING_SHARE = Decimal("0.02")
FIXED_SHARE = 0.7

FIXED_VALUE_SETS = (
    ("5", "10", "25", "50", "100"),
    ("10", "25", "50"),
    ("25", "50", "100", "250"),
    ("10", "20", "50", "100"),
    ("15", "25", "50", "75", "100"),
    ("20", "40", "60"),
)
VARIABLE_RANGES = (("5", "500"), ("1", "100"), ("10", "250"), ("5", "200"), ("2.50", "150"))

NAME_TEMPLATES = (
    "{brand} {currency} Gift Card",
    "{brand} eGift Card ({currency})",
    "{brand} Digital Gift Card {currency}",
    "{brand} {currency} Gift Voucher",
)
TERMS = (
    "Valid for 12 months from issue. Not redeemable for cash.",
    "Can be used online and in store. Lost cards cannot be replaced.",
    "Single use. Any unused balance is forfeited.",
    None,
)
INSTRUCTIONS = (
    "Enter the code at checkout on the brand's website.",
    "Show the claim link in store and scan the barcode at the till.",
    "Add the code and PIN to your account wallet before shopping.",
    None,
)

CENT = Decimal("0.01")
T = TypeVar("T")


def money(value: str | int | Decimal) -> Decimal:
    """The one representation of an amount in the catalog: a Decimal with exactly two places."""
    return Decimal(value).quantize(CENT)


def build_catalog(seed: int, size: int) -> tuple[Reward, ...]:
    """`size` rewards ordered by id; the same (seed, size) always yields the same catalog."""
    if size < 1:
        raise ValueError("size must be at least 1")
    rng = random.Random(seed)
    brands = [(brand, category) for category, names in CATEGORY_BRANDS.items() for brand in names]
    # Dealing from shuffled, proportioned decks (rather than drawing independently) guarantees
    # every brand, currency and availability shows up and the shares hold for any seed.
    brand_deck = _deal(rng, brands, size)
    currency_deck = _deal(rng, _weighted(CURRENCY_WEIGHTS, size), size)
    availability_deck = _deal(rng, _weighted(AVAILABILITY_WEIGHTS, size), size)

    # Wide enough zero-padding keeps string order equal to numeric order at any size.
    width = max(4, len(str(size)))
    rewards: list[Reward] = []
    euro_rewards = 0
    for index in range(size):
        brand, category = brand_deck[index]
        currency = currency_deck[index]
        if currency == "EUR":
            countries = _euro_countries(rng, primary=euro_rewards)
            euro_rewards += 1
        else:
            countries = CURRENCY_COUNTRIES[currency]
        reward_id = f"rw_{index + 1:0{width}d}"
        rewards.append(
            Reward(
                id=reward_id,
                name=rng.choice(NAME_TEMPLATES).format(brand=brand, currency=currency),
                brand=brand,
                description=_description(brand, category, countries),
                category=category,
                image_url=f"{IMAGE_BASE_URL}/{reward_id}.png",
                countries=countries,
                currency_code=currency,
                denomination=_denomination(rng),
                availability=availability_deck[index],
                terms=rng.choice(TERMS),
                redemption_instructions=rng.choice(INSTRUCTIONS),
            )
        )
    return _mark_failing(rng, rewards)


def failing_reward_ids(catalog: Iterable[Reward]) -> frozenset[str]:
    """Ids of the rewards whose fulfilment the sandbox always fails."""
    return frozenset(reward.id for reward in catalog if is_failing(reward))


def is_failing(reward: Reward) -> bool:
    return reward.description.endswith(FAILING_MARKER)


def _weighted(weights: dict[T, int], size: int) -> list[T]:
    total = sum(weights.values())
    items = list(weights)
    floor = 1 if size >= len(items) else 0
    counts = {item: max(floor, round(size * weights[item] / total)) for item in items}
    # Rounding may over- or undershoot; the first (largest) bucket absorbs the difference.
    counts[items[0]] += size - sum(counts.values())
    return [item for item in items for _ in range(counts[item])]


def _deal(rng: random.Random, deck: Sequence[T], size: int) -> list[T]:
    cards = [deck[i % len(deck)] for i in range(size)]
    rng.shuffle(cards)
    return cards


def _euro_countries(rng: random.Random, *, primary: int) -> tuple[str, ...]:
    euro = CURRENCY_COUNTRIES["EUR"]
    # Rotating the primary country puts every euro country in the catalog.
    chosen = {euro[primary % len(euro)], *rng.sample(euro, rng.randint(0, len(euro) - 1))}
    return tuple(country for country in euro if country in chosen)


def _denomination(rng: random.Random) -> Denomination:
    if rng.random() < FIXED_SHARE:
        values = tuple(money(v) for v in rng.choice(FIXED_VALUE_SETS))
        return Denomination(DenominationKind.FIXED, values, values[0], values[-1])
    low, high = rng.choice(VARIABLE_RANGES)
    return Denomination(DenominationKind.VARIABLE, (), money(low), money(high))


def _description(brand: str, category: str, countries: tuple[str, ...]) -> str:
    return f"{brand} gift card in the {category} category, redeemable in {', '.join(countries)}."


def _mark_failing(rng: random.Random, rewards: list[Reward]) -> tuple[Reward, ...]:
    available = [r.id for r in rewards if r.availability is RewardAvailability.AVAILABLE]
    # Only redeemable rewards can reach fulfilment, so only those are worth marking.
    wanted = max(1, int((FAILING_SHARE * len(rewards)).to_integral_value()))
    failing = set(rng.sample(available, min(wanted, len(available))))
    return tuple(
        replace(r, description=f"{r.description} {FAILING_MARKER}") if r.id in failing else r for r in rewards
    )
