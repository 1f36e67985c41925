"""On the lint-only install (no torch), the runtime says what to install in one line (issue 17
item 8): `torch-audit run` exits 2, `torch_audit.audit` raises an ImportError subclass. torch is
hidden from a subprocess by a None entry in sys.modules, which is what `import torch` sees when
the package is absent (ModuleNotFoundError with name "torch")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "fixtures" / "run"
HIDE_TORCH = "import sys; sys.modules['torch'] = None\n"
EXTRA = "install the runtime extra"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_TORCH + code], cwd=RUN, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})


def test_run_without_torch_is_one_line_and_exit_2():
    result = _python("from torch_audit.cli import main\nmain(['run', 'forever.py'])\n")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("torch-audit: error: `torch-audit run` needs torch") and EXTRA in lines[0]
    assert "Traceback" not in result.stderr and "No such command" not in result.stderr


def test_run_help_without_torch_says_the_same():
    result = _python("from torch_audit.cli import main\nmain(['run', '--help'])\n")
    assert result.returncode == 2 and EXTRA in result.stderr


def test_audit_without_torch_raises_an_import_error_that_says_what_to_install():
    result = _python(
        "import torch_audit\n"
        "from torch_audit.runtime.errors import RuntimeExtraMissing\n"
        "try:\n"
        "    torch_audit.audit()\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, RuntimeExtraMissing), type(exc)\n"
        "    print(exc)\n"
        "try:\n"
        "    from torch_audit import audit\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert "torch_audit.audit() needs torch" in first and EXTRA in first
    assert second == "RuntimeExtraMissing"
