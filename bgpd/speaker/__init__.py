"""ExaBGP adapter: process supervision, config rendering, the API command writer and JSON reader.

The agent uses :class:`Speaker` and :class:`SpeakerError`; the rest are its parts.
"""

from bgpd.speaker.errors import SpeakerError
from bgpd.speaker.speaker import Speaker

__all__ = ["Speaker", "SpeakerError"]
