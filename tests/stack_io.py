"""Running a bundle's `backbone` / `depth` graph by hand, in either KV mode (test helper).

`run_stack(session, entry, feeds, cache)` feeds the per-layer caches `cache`
([L, 2, B, Hkv, T, Dh], numpy, owned by the caller) as the past; a `returned` graph's
new entries come back in the result (`new` [L, 2, B, Hkv, P, Dh]), an `in_place`
graph writes them into `cache` itself (its present outputs are bound to the same
buffers, the way the engine binds them).
"""
from __future__ import annotations

import numpy as np


def run_stack(session, entry: dict, feeds: dict, cache: np.ndarray) -> dict:
    kv = entry["kv"]
    L = kv["layers"]
    binding = session.io_binding()
    feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    for name, a in feeds.items():
        binding.bind_input(name, "cpu", 0, a.dtype, a.shape, a.ctypes.data)
    order = []  # the bound outputs, in binding order
    for l in range(L):
        for i, kind in enumerate(("key", "value")):
            view = cache[l, i]
            assert view.flags.c_contiguous
            binding.bind_input(kv[f"past_{kind}"] % l, "cpu", 0, view.dtype, view.shape, view.ctypes.data)
            name = kv[f"out_{kind}"] % l
            if kv["mode"] == "in_place":
                binding.bind_output(name, "cpu", 0, view.dtype, view.shape, view.ctypes.data)
            else:
                binding.bind_output(name, "cpu")
            order.append(name)
    others = [t["name"] for t in entry["outputs"] if not t["name"].startswith(("present_", "new_"))]
    for name in others:
        binding.bind_output(name, "cpu")
    order += others
    session.run_with_iobinding(binding)
    values = dict(zip(order, binding.copy_outputs_to_cpu()))
    out = {name: values[name] for name in others}
    if kv["mode"] == "returned":
        out["new"] = np.stack([np.stack([values[kv["out_key"] % l], values[kv["out_value"] % l]]) for l in range(L)])
    return out
