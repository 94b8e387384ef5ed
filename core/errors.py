"""Exceptions whose messages are written for the person reading them in the UI.

Every error Atlas raises on bad input derives from AtlasError, so the app can show
`str(error)` as it is and keep the rest of the session intact.
"""


class AtlasError(Exception):
    """Base class: the message is meant to be shown to the user verbatim."""


class UnknownModelError(AtlasError):
    """A model name or path that no source can load."""


class OfflineError(AtlasError):
    """Something must come from the Hugging Face Hub, but there is no network."""


class SAEMismatchError(AtlasError):
    """An SAE that does not fit the model it is used with (hook, d_in, model name)."""


class UnknownSAEError(AtlasError):
    """An SAE release, id or directory that cannot be found."""


class CorpusError(AtlasError):
    """A corpus file or dataset that cannot be read, or that holds no text."""


class PromptError(AtlasError):
    """A prompt that cannot be probed (empty after stripping, for instance)."""


class SessionFileError(AtlasError):
    """A session document or bundle that is corrupt, too large, or of an unknown version."""


class ArtifactError(AtlasError):
    """A cached artifact that is missing or unreadable."""


class UnknownHookError(AtlasError):
    """A hook site name the model does not have."""


class MetricInputError(AtlasError):
    """An array handed to a measurement has the wrong shape, is empty, or holds NaN/inf."""
