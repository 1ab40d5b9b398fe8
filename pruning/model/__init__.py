"""The model under the knife: load it, know its layout, decide where it lives.

``load``       :func:`~pruning.model.load.load_model` by alias, Hugging Face id, directory or ``.gguf``;
               :class:`~pruning.model.load.LoadedModel` and the weights' fingerprint
``tokenizer``  the tokenizer's fingerprint (what decides tokenization) and the files that carry it
``families``   the decoder-layout registry (one :class:`~pruning.model.families.FamilySpec` per family)
``fetch``      ``python -m pruning fetch``: the offline defaults prepared in the cache
``placement``  ``gpu`` or ``offload``, decided by measurement; :class:`~pruning.model.placement.Compute`
``prefetch``   copying offloaded blocks to the device ahead of time
``synthetic``  random-weight LLaMA models (tiny ones for tests, LLaMA-7B shape for timing)
"""
