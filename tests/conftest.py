"""One persistent XLA compilation cache for the whole test session.

Many tests compile the same programs: the toy models of tests/test_loop.py
in test after test, and the run.py subprocesses (resume, eval elsewhere, the
notebook, the studies) the very programs the test compiled in-process just
before. A cache shared by the session (a fresh temporary folder, removed at
the end, so nothing carries over between sessions and a clean clone starts
cold) compiles each of them once. Subprocesses inherit it through the
`JAX_*` environment variables, which JAX reads when it is first imported;
that is why this is set at conftest import time, before any test module
imports jax. A user's own `JAX_COMPILATION_CACHE_DIR` is left as it is.

Set STAR_JAX_TEST_NO_CACHE=1 to run the suite without it (each compile then
happens in full, as it did before).
"""

import atexit
import os
import shutil
import tempfile

if (not os.environ.get("STAR_JAX_TEST_NO_CACHE")
    and not os.environ.get("JAX_COMPILATION_CACHE_DIR")):
  _CACHE = tempfile.mkdtemp(prefix="star_jax_test_xla_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  # Every program, however small or fast to compile (JAX's defaults skip
  # programs under 1 s of compile time).
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
