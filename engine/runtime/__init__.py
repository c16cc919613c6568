"""The run-time core: from a request to chunks of PCM, whatever the backend.

`request.py` (what a stream asks for) -> `scheduler.py` (continuous batching over a
`generator.BatchGenerator`, with `kv_cache.py`, `prefix_cache.py`, `sampler.py`)
-> `codec_worker.py` (decoding beside generation, paced by `pacing.py`) ->
`stream.py` (the caller's handle), measured by `metrics.py`. Nothing here imports
torch or `cadenza.export`.
"""
