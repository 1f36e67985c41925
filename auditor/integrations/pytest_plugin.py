"""pytest plugin (entry point ``pytest11``: ``torch_audit``): audit a test's body.

- The ``torch_audit`` fixture gives the test a runtime session (``torch_audit.audit()``) that
  is active exactly around the test body. Some checks conclude only when the session ends
  (unused-parameter, frozen-param-in-optimizer, ...): reading ``torch_audit.findings`` (or
  ``.codes``, ``.report()``) during the body ends the audit there and returns every finding;
  ``torch_audit.finish()`` does the same explicitly. Training after that is not audited.
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


def _check_marker(item: pytest.Item) -> str | None:
    """What is wrong with the item's marker arguments, or None: the same validation the session
    would do, done at collection, so that a typo stops the run before any test body runs."""
    try:
        kwargs = _marker_kwargs(item)
    except pytest.UsageError as exc:
        return str(exc)
    if kwargs is None:
        return None
    from torch_audit.integrations.session_owner import parse_fail_on

    try:
        parse_fail_on(kwargs.get("fail_on", "error"))
        _new_session(item)  # selectors, options, every, config: checked, nothing started
    except Exception as exc:  # noqa: BLE001 - any refusal is the user's argument
        return f"{item.nodeid}: @pytest.mark.torch_audit: {exc}"
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    problems = [p for item in items if (p := _check_marker(item)) is not None]
    if problems:
        raise pytest.UsageError("\n".join(problems))


class AuditFixture:
    """What the ``torch_audit`` fixture gives: the session of the test body (``.session``),
    whose ``findings`` include the checks that conclude only at the end. Everything else is the
    session's (``paused()``, ``notes``, ``to_json()`` after ``finish()``, ...)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def finish(self) -> list[Any]:
        """End the audit now (as leaving a ``with torch_audit.audit()`` block does: every check
        concludes) and return the findings; the rest of the test body is not audited. Calling
        it again, or after the body, returns the same findings."""
        from torch_audit.runtime.session import active_session

        if active_session() is self.session:
            self.session.__exit__(None, None, None)
        return self.session.findings

    @property
    def findings(self) -> list[Any]:
        """Every finding, after :meth:`finish` (reading them ends the audit)."""
        return self.finish()

    @property
    def codes(self) -> list[str]:
        self.finish()
        return self.session.codes

    def report(self) -> str:
        self.finish()
        return self.session.report()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def __repr__(self) -> str:
        return f"<torch_audit fixture of {self.session!r}>"


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
        yield AuditFixture(session)
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
        from torch_audit.runtime.session import active_session

        if active_session() is session:
            session.__exit__(type(exc), exc, exc.__traceback__)
        _attach(item, session)
        raise
    from torch_audit.runtime.session import active_session

    if active_session() is session:  # unless the test ended it (findings read, finish())
        session.__exit__(None, None, None)  # may raise AuditFailure with fail_fast: a test failure
    _attach(item, session)
    if kwargs is not None:
        from torch_audit.integrations.session_owner import at_or_above

        failing = at_or_above(session.findings, kwargs.get("fail_on", "error"))
        if failing:
            from torch_audit.runtime.text_report import format_text

            level = kwargs.get("fail_on", "error")
            pytest.fail(
                f"torch-audit found {len(failing)} finding(s) at or above {level!r}:\n"
                + format_text(failing),
                pytrace=False,
            )
    return result


def _attach(item: pytest.Item, session: Any) -> None:
    if session.findings:
        from torch_audit.runtime.text_report import format_text

        item.add_report_section("call", "torch-audit", format_text(session.findings))
