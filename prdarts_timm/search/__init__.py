"""The PR-DARTS search: supernet, architecture steps and the three-phase schedule."""
from .architect import Architect, average_across_processes, smoothing_kl
from .phases import PHASE_NAMES, Phase, enter_phase, search_step, trained_parameters
from .supernet import MixedOp, SearchCell, Supernet, derive_genotype
