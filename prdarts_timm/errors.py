"""The errors the library raises for a request it cannot serve; each message names the problem and the fix.

One module at the bottom of the package, so that every layer can raise them without importing the layer that
first needed them (``compact`` raises :class:`DeployError` without importing ``deploy``). The recipes catch
them and print ``error: ...`` (:func:`prdarts_timm.cli.run_main`). Each is also importable from the module it
was first defined in (``prdarts_timm.deploy.DeployError`` and so on).
"""

__all__ = ['PrdartsError', 'ConfigError', 'CheckpointError', 'DatasetError', 'DatasetNotFoundError', 'GenotypeError',
           'ModelError', 'PretrainedWeightsError', 'DeployError', 'HubError', 'CardError', 'RunFolderError']


class PrdartsError(Exception):
    """A request the library cannot serve (a user's mistake, not a bug): the base of the errors below."""


class ConfigError(PrdartsError, ValueError):
    """A config file or override that does not fit the recipe; the message names the key and the fix."""


class CheckpointError(PrdartsError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model; the message names the fix."""


class DatasetError(PrdartsError, ValueError):
    """A data set request that cannot be served; the message names the problem and the fix."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data set (or the folder it should be in) is not where it was asked for."""


class GenotypeError(PrdartsError, ValueError):
    """A genotype that cannot describe a cell; the message names the field and the fix."""


class ModelError(PrdartsError, ValueError):
    """A model request that cannot be built; the message names the fix."""


class PretrainedWeightsError(PrdartsError, RuntimeError):
    """``pretrained=True`` for a tag with no weights."""


class DeployError(PrdartsError, ValueError):
    """A network that cannot take the requested deployment form, with what to do instead."""


class HubError(PrdartsError, ValueError):
    """An export or upload request that cannot be served; the message names the fix."""


class CardError(HubError):
    """A model card that cannot be rendered (a value is missing) or whose metadata the Hub would reject."""


class RunFolderError(PrdartsError, ValueError):
    """A run folder (:mod:`prdarts_timm.run_folder`) that lacks a file the request reads, or holds a damaged one."""
