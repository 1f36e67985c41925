"""pytest plugin (entry point ``pytest11``: ``torch_audit``): audit a test's body.

- The ``torch_audit`` fixture gives the test a runtime session (``torch_audit.audit()``) that
  is active exactly around the test body: ``torch_audit.findings`` shows what it saw so far.
- ``@pytest.mark.torch_audit(fail_on="error", select=..., ignore=..., extend_select=...,
  every=..., preview=..., options=..., config=...)`` runs such a session around the test body
  (with or without the fixture) and fails the test when it found anything at or above
  ``fail_on`` (default ``"error"``; ``None`` or ``"never"`` only reports). The findings are
  attached to the test report as a ``torch-audit`` section either way.

Importing this module costs nothing: torch is imported only when a session is needed.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

MARKER = "torch_audit"
FIXTURE = "torch_audit"
_SESSION_KEY = pytest.StashKey[Any]()
_SESSION_ARGS = ("select", "ignore", "extend_select", "every", "preview", "options", "config")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "torch_audit(fail_on='error', select=None, ignore=None, extend_select=None, every=1, "
        "preview=None, options=None, config=None): "
        "run a torch-audit runtime session around the test body and fail the test on findings "
        "at or above fail_on",
    )


def _marker_kwargs(item: pytest.Item) -> dict[str, Any] | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.torch_audit takes keyword arguments only "
            f"(fail_on=..., select=..., ignore=...), got {marker.args!r}"
        )
    kwargs = dict(marker.kwargs)
    unknown = set(kwargs) - {"fail_on", *_SESSION_ARGS}
    if unknown:
        raise pytest.UsageError(
            f"{item.nodeid}: unknown argument(s) of @pytest.mark.torch_audit: {', '.join(sorted(unknown))}"
        )
    return kwargs


def _new_session(item: pytest.Item) -> Any:
    from torch_audit.runtime.session import audit

    kwargs = _marker_kwargs(item) or {}
    session = audit(**{k: v for k, v in kwargs.items() if k in _SESSION_ARGS})
    session.started_by = f"the torch_audit pytest plugin for {item.nodeid}"
    return session


@pytest.fixture
def torch_audit(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A torch-audit runtime session, active around the test body (see the module doc)."""
    session = _new_session(request.node)
    request.node.stash[_SESSION_KEY] = session
    try:
        yield session
    finally:
        # the session is entered and exited by pytest_runtest_call; if the body never ran
        # (a setup failure), there is nothing to close
        request.node.stash[_SESSION_KEY] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    kwargs = _marker_kwargs(item)
    session = item.stash.get(_SESSION_KEY, None)
    if session is None and kwargs is None:
        return (yield)
    if session is None:
        session = _new_session(item)
    session.__enter__()
    try:
        result = yield
    except BaseException as exc:
        session.__exit__(type(exc), exc, exc.__traceback__)
        _attach(item, session)
        raise
    session.__exit__(None, None, None)  # may raise AuditFailure with fail_fast: a test failure
    _attach(item, session)
    if kwargs is not None:
        from torch_audit.integrations._common import at_or_above

        failing = at_or_above(session.findings, kwargs.get("fail_on", "error"))
        if failing:
            from torch_audit.runtime.session import format_text

            level = kwargs.get("fail_on", "error")
            pytest.fail(
                f"torch-audit found {len(failing)} finding(s) at or above {level!r}:\n"
                + format_text(failing),
                pytrace=False,
            )
    return result


def _attach(item: pytest.Item, session: Any) -> None:
    if session.findings:
        from torch_audit.runtime.session import format_text

        item.add_report_section("call", "torch-audit", format_text(session.findings))
