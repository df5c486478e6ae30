"""Plain-PyTorch reference math of every kernel (docs/contract.md §0: "reference first"): fp4.py
(docs/contract.md §3) and left_spin.py (docs/contract.md §4). The tests compare each kernel against it on
fresh random inputs.

It lives under tests/ because only tests (and benchmarks, as the eager baseline) use it:
shipped code never imports it (tests/test_layout.py checks that); the format constants it uses
come from apt_ext/fp4/format.py and apt_ext/left_spin/params.py.
"""
