"""One run, end to end, and what runs share.

``pipeline``          :func:`~pruning.run.pipeline.execute_run`: the stages top to bottom, timed, published
``stages``            one function per step (load, calibration sample, spectra, statistics, allocation,
                      prune, evaluation)
``validation``        the checks of a config against the registries, made before any work
``prune``             :func:`~pruning.run.prune.prune_model`: any registered method, block-sequentially
``streaming``         prune a sharded checkpoint block by block from disk
``spectra_cache``     spectra reused from the store, then the local cache, before computing
``spectra_backfill``  the spectra sets of runs stored before runs stored them
``evopress``          EvoPress on a loaded model (the search itself: :mod:`pruning.allocation.evopress`)
``evopress_trace``    an EvoPress search's trace in the run's metrics, without torch
``warm``              what a warm runner keeps between the jobs it serves
"""
