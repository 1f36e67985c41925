"""One file's bytes linted as what its name says it is: a Jupyter notebook (its code cells,
through :mod:`.notebook`) or Python (:mod:`.engine`). It sits above both, so that the notebook
linter lints its cells with the engine and the engine knows nothing of notebooks."""

from __future__ import annotations

from torch_audit.lint.engine import FileResult, LintSettings, lint_python


def lint_source(path: str, data: bytes, settings: LintSettings, *, notebook: bool | None = None) -> FileResult:
    """Lint the bytes of one file (a Jupyter notebook when ``notebook``, by default for ``.ipynb``)."""
    if notebook if notebook is not None else path.lower().endswith(".ipynb"):
        from torch_audit.lint.notebook import lint_notebook

        return lint_notebook(path, data, settings)
    return lint_python(path, data, settings)
