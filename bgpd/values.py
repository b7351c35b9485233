"""Small BGP values written as text (config fields, annotations): parsed the same everywhere.

Only ASCII digits count: ``str.isdigit`` accepts "²", which ``int`` then refuses.
"""

from __future__ import annotations

import re

U16 = 0xFFFF
U32 = 0xFFFFFFFF
_DIGITS = re.compile(r"[0-9]+")
_PLAIN_ADDRESS = re.compile(r"[0-9A-Fa-f:./]+")
_MAX_DIGITS = 20


def parse_uint(text: object, limit: int = U32) -> int | None:
    """``"200"`` -> 200; anything else, or above ``limit``, -> None."""
    text = str(text).strip()
    if len(text) > _MAX_DIGITS or not _DIGITS.fullmatch(text):
        return None  # int() refuses > 4300 digits anyway; nothing here needs more than 10
    value = int(text)
    return value if value <= limit else None


def parse_community(text: object, parts: int) -> str | None:
    """A standard (``asn:value``, 2 parts of 16 bits) or large (3 parts of 32 bits)
    community in canonical form, or None."""
    limit = U16 if parts == 2 else U32
    values = [parse_uint(p, limit) for p in str(text).strip().split(":")]
    if len(values) != parts or any(v is None for v in values):
        return None
    return ":".join(str(v) for v in values)


def is_plain_address(text: object) -> bool:
    """Only hex digits, ':', '.' and '/': no IPv6 zone index ("fe80::1%eth0"), no spaces.

    Python's ipaddress accepts zone indexes whose text may hold spaces and newlines; such a
    value would reach ExaBGP's command line and the kernel as another address than the one
    compared for conflicts.
    """
    return isinstance(text, str) and _PLAIN_ADDRESS.fullmatch(text.strip()) is not None
