"""Custom device kernels for Cadenza (``cadenza.kernels``).

One concern per module, each with a torch reference, a Triton kernel, ``validate()``
and ``bench()`` (run one with ``python -m cadenza.kernels.<module>`` on a GPU box):

- ``sampling``: fused temperature / top-k / top-p sampling (``sample``), re-exporting
  ``apply_repetition_penalty`` (``penalty``) and ``philox_uniform`` (``rng``).
- ``kv_scatter``: write new K/V positions into a preallocated multi-stream cache.
- ``pcm``: float -> int16 conversion and chunk-boundary crossfade.

Nothing is imported here: the numpy-only runtime must not pull in torch or triton.
Public functions use Triton for CUDA tensors when it is importable (set
``CADENZA_NO_TRITON=1`` to force the reference) and the torch reference otherwise.
"""
