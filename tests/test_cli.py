"""prdarts_timm.cli.run_main: a user's mistake is one line on stderr and exit status 1; a bug keeps its traceback."""
import pytest

from prdarts_timm.cli import run_main
from prdarts_timm.config import ConfigError
from prdarts_timm.data import DatasetNotFoundError
from prdarts_timm.deploy import DeployError
from prdarts_timm.errors import PrdartsError


@pytest.mark.parametrize('error', [ConfigError('bad k'), DatasetNotFoundError('no folder'), DeployError('not baked')])
def test_library_errors_become_one_line(error):
    def main():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    assert exit_info.value.code == f'error: {type(error).__name__}: {error}'  # printed on stderr, status 1


def test_bugs_keep_their_traceback():
    def main():
        raise KeyError('a bug')

    with pytest.raises(KeyError):
        run_main(main)


def test_the_errors_keep_their_old_homes_and_bases():
    from prdarts_timm import GenotypeError, PretrainedWeightsError
    from prdarts_timm.builder import ModelError
    from prdarts_timm.checkpoint import CheckpointError
    from prdarts_timm.hub import CardError, HubError

    for error in (ConfigError, CheckpointError, DeployError, GenotypeError, ModelError, HubError, CardError):
        assert issubclass(error, PrdartsError) and issubclass(error, ValueError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError) and issubclass(PretrainedWeightsError, RuntimeError)
