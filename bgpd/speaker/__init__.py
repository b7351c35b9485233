"""ExaBGP adapter: process supervision, config rendering, the API command writer and JSON reader.

The agent uses :class:`Speaker` and :class:`SpeakerError`; the rest are its parts. Imported
lazily: ExaBGP's own helpers (``bgpd.speaker.bridge``, ``bgpd.speaker.launch``) start in
their own small processes and must not load the whole speaker.
"""

from typing import Any

__all__ = ["Speaker", "SpeakerError"]


def __getattr__(name: str) -> Any:
    if name == "Speaker":
        from bgpd.speaker.speaker import Speaker

        return Speaker
    if name == "SpeakerError":
        from bgpd.speaker.errors import SpeakerError

        return SpeakerError
    raise AttributeError(name)
