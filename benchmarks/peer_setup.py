"""Install the llama.cpp peer: llama-cpp-python built from its sdist, once, with flags that run here.

    python -m cadenza.benchmarks.peer_setup [--cache DIR] [--native] [--print-flags]

1. `pip download` the llama-cpp-python sdist (LLAMA_CPP_VERSION) into `<cache>/src/` and unpack it:
   its vendored llama.cpp tree holds `convert_hf_to_gguf.py`, which the peers use to write GGUF.
2. Unless llama-cpp-python LLAMA_CPP_VERSION is installed already without AMX (`--force-build`
   rebuilds anyway): build a wheel into `<cache>/wheels/<flags hash>/` (about 5 minutes on 2
   cores) unless one is there already (the build is cached per set of CMake flags), and
   `pip install` it into this Python.

The CMake flags (`cmake_args`): `GGML_NATIVE=OFF` and every x86 extension /proc/cpuinfo lists
(AVX, AVX2, FMA, F16C, BMI2, AVX-VNNI, AVX-512 F/VBMI/VNNI/BF16) switched on by name, with AMX
off. A native build (`-DGGML_NATIVE=ON`, `--native`) also enables AMX where the CPU advertises
it, and on a VM that advertises AMX without enabling it (the kernel has not granted the tile
state) llama.cpp dies with SIGILL on its first q8_0 / q4_0 matrix product (f32 still runs).
`amx_risk()` reports that case; the peers bench probes each GGUF in a child process first.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"  # the llama-cpp-python release whose vendored converter and runtime were tested

# /proc/cpuinfo flag -> ggml CMake option
CPU_FLAGS = {"avx": "GGML_AVX", "avx2": "GGML_AVX2", "fma": "GGML_FMA", "f16c": "GGML_F16C", "bmi2": "GGML_BMI2",
             "avx_vnni": "GGML_AVX_VNNI", "avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI",
             "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16"}
AMX_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def default_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("CADENZA_PEERS_CACHE") or Path(user_cache_dir("cadenza")) / "peers")


def source_tree(root: Path) -> Path:
    """Where setup unpacks the vendored llama.cpp."""
    return root / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cmake_args(native: bool = False, flags: set[str] | None = None) -> str:
    """CMAKE_ARGS for llama-cpp-python: this CPU's extensions by name, AMX off (see the module docstring)."""
    if native:
        return "-DGGML_NATIVE=ON"
    have = cpu_flags() if flags is None else flags
    on = [f"-D{opt}=ON" for flag, opt in CPU_FLAGS.items() if flag in have]
    return " ".join(["-DGGML_NATIVE=OFF", *on, *(f"-D{opt}=OFF" for opt in AMX_OFF)])


def installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def amx_risk() -> str | None:
    """A warning when the installed llama.cpp was built with AMX (a native build on an AMX CPU)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if "AMX_INT8 = 1" in info and "amx_tile" in cpu_flags():
        return ("llama.cpp was built with AMX (a native build); on a VM that advertises AMX without enabling it, "
                "q8_0 / q4_0 die with SIGILL. Rebuild: python -m cadenza.benchmarks.peer_setup")
    return None


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch_source(root: Path) -> Path:
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    sdist = src / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
    if not sdist.is_file():
        _pip("download", "--no-deps", "--no-binary", ":all:", "--dest", str(src), f"llama-cpp-python=={LLAMA_CPP_VERSION}")
    if not (source_tree(root) / "convert_hf_to_gguf.py").is_file():
        with tarfile.open(sdist) as tar:
            tar.extractall(src, filter="data")
    return sdist


def build_wheel(root: Path, sdist: Path, args: str) -> Path:
    wheels = root / "wheels" / hashlib.sha256(args.encode()).hexdigest()[:12]
    found = sorted(wheels.glob("llama_cpp_python-*.whl"))
    if found:
        print(f"[peers] cached wheel {found[-1]} (CMAKE_ARGS={args})", file=sys.stderr)
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    (wheels / "CMAKE_ARGS").write_text(args + "\n")
    print(f"[peers] building llama-cpp-python {LLAMA_CPP_VERSION} (about 5 minutes on 2 cores) with "
          f"CMAKE_ARGS={args}", file=sys.stderr)
    env = {**os.environ, "CMAKE_ARGS": args, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(wheels), str(sdist)],
                   check=True, env=env)
    return sorted(wheels.glob("llama_cpp_python-*.whl"))[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="peers cache (default: $CADENZA_PEERS_CACHE or the user cache)")
    ap.add_argument("--native", action="store_true", help="-DGGML_NATIVE=ON (may SIGILL where AMX is not enabled)")
    ap.add_argument("--print-flags", action="store_true", help="print the CMAKE_ARGS and exit")
    ap.add_argument("--force-build", action="store_true", help="build and install even if a usable one is installed")
    a = ap.parse_args(argv)
    args = cmake_args(a.native)
    if a.print_flags:
        print(args)
        return 0
    root = Path(a.cache) if a.cache else default_root()
    sdist = fetch_source(root)
    if not a.force_build and installed_version() == LLAMA_CPP_VERSION and (a.native or amx_risk() is None):
        print(f"[peers] llama-cpp-python {LLAMA_CPP_VERSION} is installed (no AMX); converter in {source_tree(root)}",
              file=sys.stderr)
        return 0
    wheel = build_wheel(root, sdist, args)
    _pip("install", "--no-deps", "--force-reinstall", str(wheel))
    _pip("install", "diskcache>=5.6.1", "jinja2>=2.11.3", "typing-extensions>=4.5.0")  # the wheel's own requirements
    print(f"[peers] llama-cpp-python installed from {wheel}; converter in {source_tree(root)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
