"""Pruning Lab engine: spectra, layer-wise sparsity allocation, pruning and evaluation of
LLaMA-family language models. See DESIGN notes in README.md."""

__version__ = "0.1.0"
