"""Build time: PyTorch models -> ONNX bundles.

- `model/`: the reference model family (config, transformer, codec, the whole model);
- `onnx/`: the graph roles, the exporter that writes a bundle, int8 weights;
- `reference.py`: the plain eager `generate()` every fast path is checked against.

From the run time it imports only `cadenza.engine.contract` (the bundle format, the text rules)
and `cadenza.engine.runtime.rng` (the random generator its reference loop shares with every backend).
"""
