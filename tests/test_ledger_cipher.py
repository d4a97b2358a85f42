"""Gift cards at rest: Fernet round trip, key rotation, unreadable cards, and the development key file."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from providers.base import GiftCard
from providers.ledger import CardCipher, CardUnreadable, load_or_create_keys

CARD = GiftCard(
    code="CODE-1234-SECRET",
    pin="9876",
    claim_url="https://claim.example/secret-token",
    expires_at=datetime(2030, 1, 1, 8, 30, tzinfo=UTC),
)
SECRETS = ("CODE-1234-SECRET", "9876", "secret-token")


def test_given_a_card_when_encrypting_and_decrypting_then_it_round_trips_without_showing_in_the_token() -> None:
    cipher = CardCipher([CardCipher.generate_key()])
    token = cipher.encrypt(CARD)
    partial = GiftCard(code=None, pin=None, claim_url="https://claim.example/x", expires_at=None)

    assert cipher.decrypt(token) == CARD
    assert cipher.decrypt(cipher.encrypt(partial)) == partial
    assert all(secret not in token for secret in SECRETS)
    assert cipher.encrypt(CARD) != token  # a fresh IV each time: equal cards do not show as equal tokens


def test_given_a_new_key_first_when_rotating_then_old_tokens_decrypt_and_new_ones_use_the_new_key() -> None:
    old, new = CardCipher.generate_key(), CardCipher.generate_key()
    old_token = CardCipher([old]).encrypt(CARD)
    rotated = CardCipher([new, old])
    new_token = rotated.encrypt(CARD)

    assert rotated.decrypt(old_token) == CARD
    assert CardCipher([new]).decrypt(new_token) == CARD
    with pytest.raises(CardUnreadable):
        CardCipher([old]).decrypt(new_token)
    assert CardCipher([new]).decrypt(rotated.rotate(old_token)) == CARD


@pytest.mark.parametrize("tamper", ["wrong key", "flipped byte", "not a token"])
def test_given_an_unreadable_token_when_decrypting_then_card_unreadable_without_secrets(tamper: str) -> None:
    key = CardCipher.generate_key()
    token = CardCipher([key]).encrypt(CARD)
    if tamper == "wrong key":
        cipher = CardCipher([CardCipher.generate_key()])
    else:
        cipher = CardCipher([key])
        token = token[:20] + ("A" if token[20] != "A" else "B") + token[21:] if tamper == "flipped byte" else "garbage"

    with pytest.raises(CardUnreadable) as raised:
        cipher.decrypt(token)

    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert all(secret not in str(raised.value) for secret in SECRETS)


def test_given_a_bad_key_when_building_then_value_error_names_its_position_not_its_value() -> None:
    bad = "not-a-fernet-key-but-a-secret"
    with pytest.raises(ValueError, match="key #2") as raised:
        CardCipher([CardCipher.generate_key(), bad])

    assert bad not in str(raised.value)
    with pytest.raises(ValueError, match="at least one"):
        CardCipher([])


def test_given_a_cipher_and_a_card_then_their_reprs_show_no_secret() -> None:
    key = CardCipher.generate_key()
    cipher = CardCipher([key, CardCipher.generate_key()])

    assert repr(cipher) == "CardCipher(<2 key(s)>)" and key not in repr(cipher)
    assert all(secret not in repr(CARD) for secret in SECRETS)


def test_given_no_key_file_when_loading_then_one_key_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "card-keys.json"

    first = load_or_create_keys(path)
    second = load_or_create_keys(path)

    assert first == second and len(first) == 1
    Fernet(first[0])  # a valid key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no draft left behind


def test_given_an_existing_key_file_when_loading_then_its_keys_are_used_in_order(tmp_path: Path) -> None:
    keys = [CardCipher.generate_key(), CardCipher.generate_key()]
    path = tmp_path / "card-keys.json"
    path.write_text('{"keys": ["%s", "%s"]}' % tuple(keys))

    assert load_or_create_keys(path) == keys


@pytest.mark.parametrize("content", ["", "{}", '{"keys": []}', '{"keys": [1]}', "not json"])
def test_given_a_broken_key_file_when_loading_then_value_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "card-keys.json"
    path.write_text(content)

    with pytest.raises(ValueError, match="card encryption keys"):
        load_or_create_keys(path)
