"""The code verifier's harness before issue 11, frozen for bench/bench_code_harness.py's side-by-side
measurement: `sandbox_runner.py` and `code_verifier.py` as of commit 684d690 (verbatim but for
formatting). Not used by the product."""
