"""Persisted queries: Apollo's automatic persisted queries (APQ), a safelist from a manifest, and the
manifest itself, generated from `graphql/operations/`.

Modes: "off" (plain GraphQL; a persistedQuery extension gets PersistedQueryNotSupported), "apq"
(hashes the server has seen, or that the manifest lists, may replace the text) and "safelist" (only the
manifest's operations run, by hash or by their exact text).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cachetools import LRUCache
from graphql import GraphQLError, OperationDefinitionNode, parse

Mode = Literal["off", "apq", "safelist"]

MANIFEST_FORMAT = "apollo-persisted-query-manifest"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The persisted-operations manifest is missing, unreadable, or not in the expected format."""


class PersistedQueryError(Exception):
    """A persisted-query request that cannot run; carries the GraphQL error a client gets, and its HTTP status."""

    def __init__(self, message: str, code: str, *, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @property
    def formatted(self) -> dict[str, Any]:
        return {"message": self.message, "extensions": {"code": self.code}}


# Apollo clients retry with the text on exactly this message (or code), so both are fixed. The answer is a
# 200: an error status would make Apollo's link give up on persisted queries instead of retrying.
def _not_found() -> PersistedQueryError:
    return PersistedQueryError("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND", status=200)


def _not_supported() -> PersistedQueryError:
    return PersistedQueryError("PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED", status=200)


def _not_allowed() -> PersistedQueryError:
    return PersistedQueryError(
        "Only the registered operations may run here (see graphql/persisted-operations.json).",
        "PERSISTED_QUERY_NOT_ALLOWED",
        status=400,
    )


def _bad_request(message: str, code: str = "BAD_REQUEST") -> PersistedQueryError:
    return PersistedQueryError(message, code, status=400)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """What to run: the query text (None when the request had neither text nor hash), and how it came."""

    query: str | None
    sha256: str | None = None
    hash_only: bool = False  # the request named the operation by hash alone (cacheable over GET)
    new: bool = False  # text the APQ cache does not hold yet: remember it once it validates


class PersistedQueries:
    """Turns a request's `query` and `extensions` into the text to run, per the configured mode."""

    def __init__(self, mode: Mode, *, manifest: Mapping[str, str] | None = None, cache_chars: int = 2_000_000) -> None:
        self.mode = mode
        self._manifest = dict(manifest or {})
        # Bounded by total characters, not entries: a few huge documents cannot take all the memory.
        self._cache: LRUCache[str, str] = LRUCache(maxsize=cache_chars, getsizeof=len)

    def resolve(self, query: str | None, extensions: Any) -> Resolved:
        """The text to run; PersistedQueryError when the request may not run as sent."""
        persisted = extensions.get("persistedQuery") if isinstance(extensions, Mapping) else None
        if persisted is None:
            return self._plain(query)
        if self.mode == "off":
            raise _not_supported()
        sha256 = self._requested_hash(persisted)
        if query is None:
            return Resolved(self._lookup(sha256), sha256, hash_only=True)
        if not isinstance(query, str) or sha256_hex(query) != sha256:
            raise _bad_request(
                "PersistedQueryHashMismatch: sha256Hash is not the SHA-256 of the query text.",
                "PERSISTED_QUERY_HASH_MISMATCH",
            )
        if self.mode == "safelist" and sha256 not in self._manifest:
            raise _not_allowed()
        new = sha256 not in self._manifest and sha256 not in self._cache
        return Resolved(query, sha256, new=new)

    def remember(self, resolved: Resolved) -> None:
        """Keep an APQ registration (call once its document has parsed and validated)."""
        if self.mode != "apq" or not resolved.new or resolved.query is None or resolved.sha256 is None:
            return
        if len(resolved.query) <= self._cache.maxsize:
            self._cache[resolved.sha256] = resolved.query

    def _plain(self, query: str | None) -> Resolved:
        if self.mode == "safelist" and isinstance(query, str) and sha256_hex(query) not in self._manifest:
            raise _not_allowed()
        return Resolved(query)

    @staticmethod
    def _requested_hash(persisted: Any) -> str:
        if not isinstance(persisted, Mapping):
            raise _bad_request("extensions.persistedQuery must be an object.")
        if persisted.get("version") != 1:
            raise _bad_request("Unsupported persisted query version: only version 1 is supported.")
        sha256 = persisted.get("sha256Hash")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256.lower()):
            raise _bad_request("extensions.persistedQuery.sha256Hash must be a SHA-256 in hexadecimal.")
        return sha256.lower()

    def _lookup(self, sha256: str) -> str:
        text = self._manifest.get(sha256)
        if text is not None:
            return text
        if self.mode == "safelist":
            # The list is fixed: sending the text could not help, so say so at once.
            raise _not_allowed()
        text = self._cache.get(sha256)
        if text is None:
            raise _not_found()
        return text


# The manifest


def build_manifest(operations_dir: Path) -> dict[str, Any]:
    """Apollo's persisted-query manifest for every `*.graphql` file (one operation each) under a folder."""
    operations = []
    for path in sorted(operations_dir.glob("*.graphql")):
        body = path.read_text(encoding="utf-8")
        try:
            document = parse(body)
        except GraphQLError as exc:
            raise ManifestError(f"{path}: {exc.message}") from exc
        definitions = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
        if len(definitions) != 1:
            raise ManifestError(f"{path}: expected exactly one operation, found {len(definitions)}")
        definition = definitions[0]
        operations.append(
            {
                "id": sha256_hex(body),
                "name": definition.name.value if definition.name else path.stem,
                "type": definition.operation.value,
                "body": body,
            }
        )
    operations.sort(key=lambda entry: (entry["name"], entry["id"]))
    return {"format": MANIFEST_FORMAT, "version": 1, "operations": operations}


def manifest_text(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def load_manifest(path: Path) -> dict[str, str]:
    """The manifest's operations as hash -> text; every hash is checked against its text."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path} does not exist: run `giftgraph persisted-operations`") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not a readable JSON manifest: {exc}") from exc
    entries = data.get("operations") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    if not isinstance(entries, list):
        raise ManifestError(f"{path} is not an {MANIFEST_FORMAT}")
    operations: dict[str, str] = {}
    for entry in entries:
        body = entry.get("body") if isinstance(entry, dict) else None
        if not isinstance(body, str) or entry.get("id") != sha256_hex(body):
            raise ManifestError(f"{path}: an operation's id is not the SHA-256 of its body")
        operations[entry["id"]] = body
    return operations


def persisted_queries(mode: Mode, manifest_path: Path, *, cache_chars: int) -> PersistedQueries:
    """The store for a mode: safelist needs the manifest; APQ preloads it when it exists."""
    if mode == "safelist" or (mode == "apq" and manifest_path.exists()):
        manifest = load_manifest(manifest_path)
    else:
        manifest = {}
    return PersistedQueries(mode, manifest=manifest, cache_chars=cache_chars)


__all__ = [
    "ManifestError",
    "PersistedQueries",
    "PersistedQueryError",
    "Resolved",
    "build_manifest",
    "load_manifest",
    "manifest_text",
    "persisted_queries",
    "sha256_hex",
]
