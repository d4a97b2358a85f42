"""Gift cards encrypted at rest with Fernet: the first key encrypts, every key decrypts (rotation)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from providers.base import GiftCard


class CardUnreadable(Exception):
    """A stored gift card could not be decrypted: none of the keys fits, or the ciphertext was altered."""


class CardCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one card encryption key is required")
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                # `from None`: the underlying error may quote the key.
                raise ValueError(
                    f"card encryption key #{number} is not a Fernet key (urlsafe base64 of 32 bytes)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._key_count = len(fernets)

    def __repr__(self) -> str:
        return f"CardCipher(<{self._key_count} key(s)>)"

    def encrypt(self, card: GiftCard) -> str:
        payload = {
            "code": card.code,
            "pin": card.pin,
            "claim_url": card.claim_url,
            "expires_at": None if card.expires_at is None else card.expires_at.isoformat(),
        }
        return self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")

    def decrypt(self, token: str) -> GiftCard:
        try:
            payload = json.loads(self._fernet.decrypt(token.encode("ascii")))
            expires_at = payload["expires_at"]
            return GiftCard(
                code=payload["code"],
                pin=payload["pin"],
                claim_url=payload["claim_url"],
                expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
            )
        except (InvalidToken, UnicodeError, ValueError, KeyError, TypeError):
            raise CardUnreadable("the gift card could not be decrypted (wrong key or altered data)") from None

    def rotate(self, token: str) -> str:
        """The same card re-encrypted under the first key (for re-keying stored cards)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise CardUnreadable("the gift card could not be decrypted (wrong key or altered data)") from None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode("ascii")


def load_or_create_keys(path: Path) -> list[str]:
    """Development keys: read `path` ({"keys": [...]}), or create it with one new key, readable by its owner only."""
    if path.exists():
        return _read_keys(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [CardCipher.generate_key()]
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"keys": keys}, file)
            file.flush()
            os.fsync(file.fileno())
        # link() publishes the complete file or fails if another process was first: nobody reads a half-written file.
        os.link(draft, path)
    except FileExistsError:
        return _read_keys(path)
    finally:
        draft.unlink(missing_ok=True)
    return keys


def _read_keys(path: Path) -> list[str]:
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))["keys"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} does not hold card encryption keys ({type(exc).__name__})") from None
    if not isinstance(keys, list) or not keys or not all(isinstance(key, str) for key in keys):
        raise ValueError(f"{path} does not hold a list of card encryption keys")
    return keys
