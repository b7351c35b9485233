"""How big an UPDATE our attributes make, so nothing we hand ExaBGP can fail to encode.

ExaBGP acknowledges an announcement before it encodes it; a route whose attributes do not
fit one BGP message is then dropped (or, past 64 KiB of attributes, the session is reset),
after the API said ``done``. So the policy checks every announcement against the message
size first, with an upper bound of what ExaBGP writes for one prefix.
"""

from __future__ import annotations

from bgpd.model import Attributes

# RFC 4271 4.1: the largest BGP message. The agent never negotiates extended messages
# (RFC 8654), so no peer ever accepts more.
BGP_MAX_MESSAGE = 4096
_HEADER = 19 + 2 + 2  # marker/length/type, withdrawn routes length, path attributes length
_ORIGIN = 3 + 1
# One AS_SEQUENCE with our ASN (eBGP); with a 4-byte ASN towards a peer without the
# capability, AS_TRANS in AS_PATH plus AS4_PATH: the larger of the two cases.
_AS_PATH = (3 + 2 + 2) + (3 + 2 + 4)
_NEXT_HOP_V4 = 3 + 4
_NLRI_V4 = 1 + 4  # a /32
# MP_REACH_NLRI: AFI, SAFI, next-hop length, global + link-local next hop, reserved, a /128.
_MP_REACH_V6 = 4 + 2 + 1 + 1 + 32 + 1 + (1 + 16)
_SCALAR = 3 + 4  # MED, LOCAL_PREF


def _attribute(length: int) -> int:
    return length + (4 if length > 255 else 3)  # the extended-length flag adds a byte


def encoded_size(attrs: Attributes, version: int) -> int:
    """Upper bound, in bytes, of the UPDATE announcing one prefix of IP ``version``."""
    size = _HEADER + _ORIGIN + _AS_PATH
    size += _NEXT_HOP_V4 + _NLRI_V4 if version == 4 else _MP_REACH_V6
    size += _SCALAR * ((attrs.med is not None) + (attrs.local_pref is not None))
    size += 4 * (max(attrs.prepend, len(attrs.as_path) - 1))  # more ASNs in the AS path
    if attrs.link_bandwidth is not None:
        size += _attribute(8)  # one extended community
    if attrs.communities:
        size += _attribute(4 * len(attrs.communities))
    if attrs.large_communities:
        size += _attribute(12 * len(attrs.large_communities))
    return size


def fits(attrs: Attributes) -> bool:
    """Whether one prefix of either family with ``attrs`` fits in one BGP message."""
    return encoded_size(attrs, 6) <= BGP_MAX_MESSAGE
