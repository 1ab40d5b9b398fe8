"""Block-sequential calibration and the statistics its passes make (Frantar & Alistarh 2023; Sun et al. 2023).

``sequential``     :func:`~pruning.calibration.sequential.sequential.calibrate_blocks` and
                   :func:`~pruning.calibration.sequential.sequential.run_block`: the protocol, for every family
``block_capture``  step 1: the inputs of every decoder block, captured in one pass
``linear_stats``   step 2: the hooks that accumulate ``||X_j||^2`` and ``X^T X`` per input group
``dense_stats``    the dense model's activation norms, computed once per (model, calibration) and reused
``layer_stats``    the per-block statistics allocations read (OWL outlier ratios' inputs, DLP unimportance)
``protocol``       the calibration a pruned number was made with (``wiki · 128 × 2048``)
"""
