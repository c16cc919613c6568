"""Custom device kernels for Cadenza (``cadenza.kernels``).

One concern per module; the kernels each come with a torch reference, ``validate()``
and ``bench()`` (run one with ``python -m cadenza.kernels.<module>`` on a GPU box):

- ``sampling``: fused temperature / top-k / top-p sampling (``sample``), re-exporting
  ``apply_repetition_penalty`` (``penalty``) and ``counter_uniform`` (``rng``).
- ``penalty``: the repetition penalty over each row's recent codes.
- ``rng``: counter-based uniforms, the torch twin of the run time's generator.

Nothing is imported here: the numpy-only runtime must not pull in torch or triton.
Public functions use Triton for CUDA tensors when it is importable (set
``CADENZA_NO_TRITON=1`` to force the reference) and the torch reference otherwise.
"""
