"""The public surface: docstrings everywhere, useful help(), stubs matching the module."""

from __future__ import annotations

import ast
import inspect
import pydoc
from pathlib import Path

import pytest

import bitbucket_diy
import bitbucket_diy.errors

STUB = Path(bitbucket_diy.__file__).with_name("_core.pyi")


def public_members(obj: type) -> list[str]:
    return [name for name in vars(obj) if not name.startswith("_")]


@pytest.mark.parametrize("name", bitbucket_diy.__all__)
def test_every_public_name_and_member_has_a_docstring(name: str) -> None:
    obj = getattr(bitbucket_diy, name)
    if name == "__version__":
        assert obj == bitbucket_diy._core.__version__
        return
    assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for member in public_members(obj):
            attribute = inspect.getattr_static(obj, member)
            if isinstance(attribute, str) or member in ("name",):
                continue
            assert (getattr(attribute, "__doc__", None) or "").strip(), f"{name}.{member} has no docstring"


def test_help_on_the_client_is_useful() -> None:
    text = pydoc.render_doc(bitbucket_diy.MaintenanceClient, renderer=pydoc.plaintext)
    for expected in ("with client.lock() as lock", "wait_drained", "DrainTimeoutError", "report_progress", "GIL"):
        assert expected in text, expected
    assert "bitbucket_diy" in bitbucket_diy.MaintenanceClient.__module__


def test_stubs_declare_exactly_the_extension_module() -> None:
    tree = ast.parse(STUB.read_text())
    declared = {
        node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))
    } | {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    runtime = {name for name in vars(bitbucket_diy._core) if not name.startswith("_") or name == "__version__"}
    assert declared == runtime
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            stubbed = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("__")}
            actual = set(public_members(getattr(bitbucket_diy._core, node.name)))
            assert stubbed == actual, node.name


def test_exceptions_form_one_hierarchy() -> None:
    for name in bitbucket_diy.errors.__all__:
        cls = getattr(bitbucket_diy, name)
        assert issubclass(cls, bitbucket_diy.BitbucketDiyError), name
    assert issubclass(bitbucket_diy.DrainTimeoutError, bitbucket_diy.BitbucketTimeoutError)
    assert issubclass(bitbucket_diy.ToolMissingError, bitbucket_diy.StrategyError)
    assert issubclass(bitbucket_diy.ConfigError, ValueError)


def test_the_typed_example_runs() -> None:
    import typing_example

    report = typing_example.main()
    assert report.database.notes == {"id": report.id}
