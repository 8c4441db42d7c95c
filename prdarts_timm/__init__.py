"""prdarts-timm: PR-DARTS (pruning-aware DARTS) as a timm model-zoo plugin.

``import prdarts_timm`` registers the model family with timm (``timm.list_models(module='prdarts')``).
"""
from timm.layers import register_notrace_module

from .genotypes import PRIMITIVES, Genotype, GenotypeError, get_genotype, list_genotypes
from .layers import (
    PrunedConv2d, PrunedLayer, PrunedLinear, SparsityReport, bake, check_k, convert_to_pruned, kept_count,
    pruned_layers, sparsity_report, topk_mask,
)
from .models import PRDarts, PretrainedWeightsError
from .profile import count_macs, measure_latency
from .pruning import count_params, init_scores_scaled, set_global_k, set_pruning, set_random_masks

# fx traces treat the pruned layers as leaves, like torch.nn's own layers
register_notrace_module(PrunedConv2d)
register_notrace_module(PrunedLinear)

__version__ = '0.1.0.dev0'
