"""Deployment forms of a baked pruned network, one module each: sparse kernels where they pay
(:mod:`.sparse_kernels`), ONNX and ONNX Runtime (:mod:`.onnx_runtime`), and the deployment folder that holds
the chosen form (:mod:`.folder`). Timing is :mod:`prdarts_timm.profile`'s; compaction is :mod:`prdarts_timm.compact`.
"""
from ..errors import DeployError
from ..layers import check_baked
from .folder import deploy_folder, load_deployed
from .onnx_runtime import ONNX_OPSET, export_onnx, onnx_latency_ms, onnx_session
from .sparse_kernels import KernelChoice, SparseConv1x1, SparseLinear, use_sparse_kernels

__all__ = ['DeployError', 'KernelChoice', 'SparseConv1x1', 'SparseLinear', 'check_baked', 'deploy_folder',
           'export_onnx', 'load_deployed', 'onnx_latency_ms', 'onnx_session', 'use_sparse_kernels', 'ONNX_OPSET']
