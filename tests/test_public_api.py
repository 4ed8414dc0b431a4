"""Each distribution's public surface (httpx's exported-members test) and its one
exception tree: every exception class a package defines lives in its errors module,
descends from the package's root error and is drawn in that module's docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types

import pytest

# package, its errors module, the root of its tree
PACKAGES = [
    ("iiot_server", "iiot_server.domain.errors", "DomainError"),
    ("iiot_device", "iiot_device.errors", "DeviceError"),
    ("iiotsim", "iiotsim.errors", "IiotsimError"),
]


@pytest.mark.parametrize("name", [p[0] for p in PACKAGES])
def test_all_is_exactly_what_the_package_exports(name: str) -> None:
    package = importlib.import_module(name)
    for member in package.__all__:  # a lazily loaded name (PEP 562) is there once asked for
        assert getattr(package, member) is not None
    public = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(package.__all__) == sorted(public)


def _modules(name: str) -> list[types.ModuleType]:
    package = importlib.import_module(name)
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
        if info.name.endswith("__main__"):
            continue
        found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize(("name", "errors_module", "root"), PACKAGES)
def test_one_exception_tree_in_one_module_drawn_in_its_docstring(
    name: str, errors_module: str, root: str
) -> None:
    errors = importlib.import_module(errors_module)
    base = getattr(errors, root)
    defined = {
        cls
        for module in _modules(name)
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__.startswith(f"{name}.")
        and not cls.__name__.startswith("_")  # private control flow, never raised to users
    }
    outside = sorted(
        f"{c.__module__}.{c.__name__}" for c in defined if c.__module__ != errors_module
    )
    assert not outside, f"exception classes outside {errors_module}: {outside}"
    assert all(issubclass(cls, base) for cls in defined), sorted(c.__name__ for c in defined)
    drawn = set(re.findall(r"\b([A-Z][A-Za-z]+(?:Error|Exception)?)\b", errors.__doc__ or ""))
    missing = sorted(c.__name__ for c in defined if c.__name__ not in drawn)
    assert not missing, f"not drawn in {errors_module}'s docstring: {missing}"


def test_the_simulator_does_not_load_the_platform() -> None:
    """``import iiotsim.sim`` and the policy explorer's module (notebooks 02, 07) must not
    pay for the platform's server, HTTP models and clients: ``iiotsim`` loads those on
    first use."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, iiotsim.sim, iiotsim.widgets; "
         "print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    heavy = ("litestar", "httpx", "iiot_server.api", "iiot_server.runner", "iiotsim.admin")
    assert [m for m in loaded if m.startswith(heavy)] == []
