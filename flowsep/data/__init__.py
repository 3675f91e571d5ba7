"""Data: the synthetic MUSDB18 (``flowsep.data.synth``), MUSDB18-format folders read through musdb
(``flowsep.data.musdb``) and training chunks for priors and supervised systems (``flowsep.data.chunks``).
"""
