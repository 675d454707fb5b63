"""Code run in a Python where this package cannot be imported, as a user without it has."""

import os
import subprocess
import sys
from pathlib import Path

import keras


def run_in_plain_keras(code: str, cwd: Path) -> str:
    """Runs `code` in a fresh Python on the current backend without this package; its stdout.

    Only the installed packages are on its path, not their ``.pth`` files, so
    no editable install of this package either. Fails the calling test when
    the package is importable there or when `code` fails.
    """
    site_packages = [path for path in sys.path if path.endswith("site-packages")]
    script = f"""
import sys
sys.path[:] = [p for p in sys.path if p.startswith(sys.base_prefix)] + {site_packages!r}
try:
    import keras_deepcluster
except ImportError:
    pass
else:
    sys.exit("keras_deepcluster is importable: " + keras_deepcluster.__file__)
{code}
"""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
