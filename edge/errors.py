"""The errors edge-gemma raises. Every message says what went wrong and what to do next.

The CLI prints `str(error)` as one line and exits with `error.exit_code`; library callers can
catch the subclasses they care about.
"""


class EdgeError(Exception):
    """Base class: a user-facing problem with a one-line message that says what to do."""

    exit_code = 1


class UsageError(EdgeError):
    """A bad argument or option value (the command line is wrong)."""

    exit_code = 2


class ProfileError(EdgeError):
    """A device profile is unknown, malformed or invalid."""


class ModelFileError(EdgeError):
    """A model file is missing, unreadable, truncated, not GGUF or of an unsupported architecture."""


class MemoryFitError(EdgeError):
    """The requested settings cannot fit in this device's memory."""


class DownloadError(EdgeError):
    """Fetching or verifying a file from the Hugging Face Hub failed."""


class HubUnreachableError(DownloadError):
    """No answer from the hub at all (no network, offline mode): a plan can still use catalog sizes."""


class AudioError(EdgeError):
    """Audio input or output failed, or an audio buffer is unusable."""


class ContextFullError(EdgeError):
    """One input (a prompt, a message, a clip) cannot fit in the context even after old turns go."""


class GenerationError(EdgeError):
    """llama.cpp failed while evaluating or generating (a decode error, a full KV cache)."""


class ImageError(EdgeError):
    """An image is unreadable, damaged, too large, or the model has no eyes for it."""
