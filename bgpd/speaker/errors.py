"""The speaker adapter's own exception: callers never see ExaBGP's or the OS's."""


class SpeakerError(RuntimeError):
    """The speaker could not do what was asked (bad config, ExaBGP missing, refused command)."""
