"""The SDK's public surface: what ``iiot_device`` exports and its one exception tree."""

from __future__ import annotations

import inspect
import re
import types

import iiot_device
from iiot_device import errors


def test_all_is_what_the_package_exports() -> None:
    # like httpx's test: every public name of the package is in __all__, and only those
    public = {
        name
        for name, value in vars(iiot_device).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(iiot_device.__all__) == sorted(public)
    assert iiot_device.__all__ == sorted(iiot_device.__all__)


def test_the_exception_tree_is_in_one_module_and_drawn_in_its_docstring() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception)
    }
    assert all(cls.__module__ == errors.__name__ for cls in classes.values())
    assert all(issubclass(cls, errors.DeviceError) for cls in classes.values())
    assert sorted(errors.__all__) == sorted(classes)
    drawn = re.findall(r"^ +(?:[├└]── )?([A-Z]\w+) ", errors.__doc__ or "", re.MULTILINE)
    assert sorted(drawn) == sorted(classes)
    # every SDK error is exported from the package
    assert set(classes) <= set(iiot_device.__all__)


def test_platform_error_names_its_problem_type_like_the_admin_client() -> None:
    import iiotsim

    sdk = iiot_device.PlatformError(409, "/problems/conflict", "busy")
    admin = iiotsim.PlatformError(409, "/problems/conflict", "Conflict", "busy")
    assert sdk.problem_type == admin.problem_type == "/problems/conflict"
