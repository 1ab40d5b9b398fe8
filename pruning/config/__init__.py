"""A run's configuration: validated values, before any work (the floor above the kernels).

``run_config``  :class:`~pruning.config.run_config.run_config.RunConfig`: its sections, loading, overrides, and the
                run id (a hash of the fields that change results)
``sections``    the model, calibration, pruning and evaluation sections
``allocation``  the allocation section (:class:`~pruning.config.run_config.allocation.AllocationConfig`)
``presets``     named layer-group presets (the notes' column headers) and the matrix types
``precision``   the eigen-solver precisions, without torch

The package imports nothing itself: each module is imported by its own path, so reading a preset or
a precision does not load the whole configuration.
"""
