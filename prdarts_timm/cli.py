"""What every recipe's command line shares: a user's mistake is one line on stderr, not a traceback."""
import sys
from typing import Callable

from .errors import PrdartsError

__all__ = ['run_main']


def run_main(main: Callable[[], None]) -> None:
    """Call a recipe's ``main()``. A :class:`~prdarts_timm.errors.PrdartsError` (a request the library cannot
    serve: bad config, missing data or checkpoint, existing output, ...) ends the process with
    ``error: <ErrorName>: <message>`` on stderr and exit status 1, no traceback; anything else is a bug and
    keeps its traceback."""
    try:
        main()
    except PrdartsError as e:
        sys.exit(f'error: {type(e).__name__}: {e}')
