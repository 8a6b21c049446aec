"""Custom campaign stages: an explicit allow-list, and the same code on every worker.

A campaign file may name its own stages as ``"package.module:function"``. Importing a module runs
its code, and a campaign file is data, so a custom stage runs only when the person starting the
campaign allows it (``--allow-stage package.module:function``, repeatable, or
``--allow-custom-stages`` for every custom stage of the file); the check is on the name, before
anything is imported.

The driver then resolves each allowed stage once (:func:`resolve_custom_stages`): it imports the
module with its own search path (``sys.path``) and records that path and the SHA-256 of the
file of the module and of each parent package. Every worker — this process, or a Ray worker
whose own search path differs (Ray puts the driver's working directory first on it) — loads the
stage through :meth:`CustomStage.load`: it looks the module up along the driver's search path
first, then its own, and imports the first file whose digest is the driver's; a file with
another digest is never executed. So a case runs the same code whatever the number of workers,
and a ``.py`` file that only a worker can see is never imported. (What the stage module itself
imports is resolved normally.)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from importlib.machinery import PathFinder
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bronchonav.errors import InputError


@dataclass(frozen=True)
class CustomStage:
    """A custom stage as the driver resolved it.

    Attributes
    ----------
    name : str
        ``"package.module:function"`` as in the campaign file.
    digests : tuple of (str, str)
        For ``package``, ``package.module`` (each dotted prefix in import order): the module
        name and the SHA-256 of its file on the driver (``"namespace"`` for a namespace
        package, the origin for a built-in module).
    origin : str
        The module's file on the driver (for messages).
    search_path : tuple of str
        The driver's ``sys.path`` (absolute) when it resolved the stage.
    """

    name: str
    digests: tuple[tuple[str, str], ...]
    origin: str
    search_path: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module's dotted name."""
        return self.name.split(":")[0]

    @property
    def function(self) -> str:
        """The function's name in the module."""
        return self.name.split(":")[1]

    def load(self) -> Callable:
        """Import the stage's module as the driver resolved it and return the stage function.

        Each module of the dotted name (parent packages first) is taken from sys.modules when
        already imported, else from the first file along the driver's search path, then this
        process's, whose digest is the driver's; files are checked before they are executed.

        Raises
        ------
        InputError
            A module already imported here, or every candidate file, differs from the driver's.
        """
        for module, digest in self.digests:
            loaded = sys.modules.get(module)
            if loaded is not None:
                if _digest(loaded.__spec__) != digest:
                    raise InputError(f"custom stage {self.name!r}: module {module!r} imported in "
                                     f"this worker ({loaded.__spec__.origin}) is not the file the "
                                     f"driver resolved ({self.origin}); not running it")
                continue
            parent, _, leaf = module.rpartition(".")
            where = (list(sys.modules[parent].__path__) if parent
                     else [*self.search_path, *sys.path])
            spec = _find(module, where, digest)
            if spec is None:
                raise InputError(f"custom stage {self.name!r}: this worker has no module "
                                 f"{module!r} with the driver's code ({self.origin}); not "
                                 "running it")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[module] = loaded
            try:
                spec.loader.exec_module(loaded)
            except BaseException:
                del sys.modules[module]
                raise
            if parent:
                setattr(sys.modules[parent], leaf, loaded)
        return getattr(sys.modules[self.module], self.function)


def custom_stage_names(stages: Iterable[str]) -> list[str]:
    """The custom (``module:function``) stages among ``stages``, in order."""
    return [s for s in stages if ":" in s]


def resolve_custom_stages(stages: Iterable[str], allowed: Iterable[str] = (),
                          allow_all: bool = False) -> dict[str, CustomStage]:
    """Check the custom stages of a campaign against the allow-list, then resolve them here.

    Parameters
    ----------
    stages : iterable of str
        The campaign's stages (built-in names are ignored).
    allowed : iterable of str
        Custom stages allowed by name (``"package.module:function"``).
    allow_all : bool
        Allow every custom stage (``--allow-custom-stages``).

    Returns
    -------
    dict
        Stage name → :class:`CustomStage`, for every custom stage in ``stages``.

    Raises
    ------
    InputError
        A custom stage is not allowed (nothing has been imported then), its module cannot be
        imported, or it has no such function.
    """
    names = custom_stage_names(stages)
    allowed = set(allowed)
    refused = [s for s in names if not allow_all and s not in allowed]
    if refused:
        raise InputError(
            f"stage {refused[0]!r} is custom code named by the campaign file and is not run "
            f"unless allowed: add --allow-stage {refused[0]} (or --allow-custom-stages to allow "
            "every custom stage of the file)")
    return {name: _resolve(name) for name in names}


def _resolve(name: str) -> CustomStage:
    module_name, func_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"custom stage {name!r}: cannot import {module_name!r} ({exc}); every "
                         "worker uses the module the driver finds on its path (PYTHONPATH)"
                         ) from None
    if not callable(getattr(module, func_name, None)):
        raise InputError(f"custom stage {name!r}: {module_name} has no function {func_name!r}")
    parts = module_name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    digests = tuple((p, _digest(sys.modules[p].__spec__)) for p in prefixes)
    search_path = tuple(os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str))
    return CustomStage(name, digests, str(getattr(module, "__file__", None) or module_name),
                       search_path)


def _find(module: str, where: list[str], digest: str):
    """The spec of the first ``module`` file along ``where`` whose digest is ``digest`` (files
    are only read, not executed), or None."""
    for entry in dict.fromkeys(where):
        spec = PathFinder.find_spec(module, [entry])
        if spec is not None and _digest(spec) == digest:
            return spec
    return None


def _digest(spec) -> str:
    """What identifies a module's code: its file's SHA-256, or its kind when it has no file."""
    if spec is None:  # e.g. __main__ run as a script: nothing a worker could match
        return "unknown"
    if spec.has_location and spec.origin:
        return "sha256:" + hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    if spec.submodule_search_locations is not None:
        return "namespace"
    return str(spec.origin)
