"""The contract between build time and run time: the bundle, its typed constants, the text rules.

`cadenza.export` writes what this package reads; nothing here imports torch.
"""
