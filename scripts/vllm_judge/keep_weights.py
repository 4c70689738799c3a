"""A vLLM worker extension whose import keeps the dense linear weights on the CPU engine.

vLLM's CPU engine packs every dense linear weight for its kernels in
``UnquantizedLinearMethod.process_weights_after_loading`` and leaves ``layer.weight``
empty, so a dump shows shape [0] where the weights were. Named as the engine's
``worker_extension_cls`` (``"keep_weights.KeepWeights"``, this folder on
``PYTHONPATH``), this module is imported in every worker before the model loads and
replaces that method with one that packs the same way but keeps the weight
(``dispatch_cpu_unquantized_gemm(layer, remove_weight=False)``, what vLLM's own
embedding method does): a second copy of the dense weights, and a dump that shows them
as loaded, at start-up and after every ``reload_weights``. Runs only in vLLM's
virtualenv (it imports vLLM).
"""

from __future__ import annotations

from vllm.model_executor.layers import linear, utils

# vLLM's own method, kept to run it on demand (syncviz_stock_repack).
STOCK = linear.UnquantizedLinearMethod.process_weights_after_loading


def _keep(self, layer) -> None:
    # MLA's kv_b_proj is not packed by the stock method either: leave it to it.
    if getattr(layer, "_cpu_skip_gemm_dispatch", False):
        STOCK(self, layer)
        return
    utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=False)


linear.UnquantizedLinearMethod.process_weights_after_loading = _keep


class KeepWeights:
    """Mixed into vLLM's worker class; its methods are called by ``collective_rpc``."""

    def syncviz_stock_repack(self) -> int:
        """Run vLLM's stock ``process_weights_after_loading`` on every dense linear layer
        (what the stock engine does once loading ends); return how many layers it ran on."""
        count = 0
        for module in self.model_runner.model.modules():
            method = getattr(module, "quant_method", None)
            if isinstance(method, linear.UnquantizedLinearMethod):
                STOCK(method, module)
                count += 1
        return count
