"""Opaque global ids for Relay's Node interface: base64 of "<Type>:<provider id>"."""

from __future__ import annotations

import base64
import binascii

from resolvers.errors import BadUserInput

NODE_TYPES = frozenset({"Reward", "Transaction", "Redemption"})


def encode_global_id(type_name: str, raw_id: str) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{raw_id}".encode()).rstrip(b"=").decode()


def decode_global_id(global_id: str, *, argument: str = "id") -> tuple[str, str]:
    """(type name, provider id) from a global id; BadUserInput when it is not one of ours."""
    try:
        padded = global_id + "=" * (-len(global_id) % 4)
        type_name, _, raw_id = base64.urlsafe_b64decode(padded.encode("ascii")).decode().partition(":")
    except (ValueError, UnicodeError, binascii.Error):
        type_name, raw_id = "", ""
    if type_name not in NODE_TYPES or not raw_id:
        raise BadUserInput("That id is not a valid object id.", argument=argument)
    return type_name, raw_id
