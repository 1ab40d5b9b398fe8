"""The text a run reads: the offline corpora and the calibration sampler.

``corpora``  the offline corpora built from the gensim wheel (``wiki`` splits by a hash of each title,
             ``lee``); the corpus recipe digests this module's bytes, so editing it re-prepares the corpora
``data``     the corpus registry, loading a text (``wiki:validation``, ``text:PATH``), tokenizing, and the
             deterministic calibration batch
"""
