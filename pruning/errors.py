"""Exception types. Every user-facing error names the bad value and what is accepted."""


class PruningLabError(Exception):
    """Base class for errors caused by user input or environment (shown without traceback)."""


class ConfigError(PruningLabError, ValueError):
    """An invalid configuration value: message names field, value and accepted values."""


class ModelNotFoundError(PruningLabError, ValueError):
    """A model reference that is not an alias, local directory, GGUF file or hub id."""


class CorpusUnavailableError(PruningLabError, RuntimeError):
    """A corpus that cannot be loaded here (e.g. needs the Hugging Face Hub while offline)."""


class TokenizerMismatchError(PruningLabError, RuntimeError):
    """A tokenizer that does not tokenize as the expected one (its fingerprint differs): runs made
    with it would cut every text into other windows than the runs they are compared with."""


class DeviceMemoryBusyError(PruningLabError, RuntimeError):
    """The device could hold the work but other processes hold its memory now (a shared GPU): the job
    fails fast and can be retried, instead of running offloaded at a crawl."""
