"""Benchmarks of amigofs against baselines measured in the same run: `python -m benchmarks.run`.

Every figure is a ratio to something measured on the same machine a moment earlier (a memory-backed
pyfuse3 filesystem, curl, peers over nginx), because absolute times on shared machines are noise.
"""
