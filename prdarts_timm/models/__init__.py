"""timm model families of prdarts_timm; importing registers them with timm."""
from .prdarts import *  # noqa: F401,F403
