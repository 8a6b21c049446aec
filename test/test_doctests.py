"""Run the examples in the docstrings of every bronchonav module (numpydoc ``Examples``).

Each module with at least one example is a test case; a module whose examples fail fails here.
The list is found by importing every module of the package, so a new module's examples run
without registering it. Examples marked ``# doctest: +SKIP`` are not run: the modules whose
examples are all skipped are listed in ``SKIPPED_ONLY`` with the reason, and a module added to
or dropped from that state fails the test until the list says so.
"""

import doctest
import importlib
import pkgutil

import pytest

import bronchonav


def _modules_with_examples() -> list[str]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    names = []
    for info in pkgutil.walk_packages(bronchonav.__path__, "bronchonav."):
        if info.name.endswith(".__main__"):  # runs its program when imported
            continue
        module = importlib.import_module(info.name)
        if any(t.examples for t in finder.find(module, info.name)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()

SKIPPED_ONLY = {
    "bronchonav.calibration": "fits a recording file (a CSV and a device in scope)",
    "bronchonav.imaging.camera": "renders a map's lumen mesh (an airway_map in scope)",
    "bronchonav.planning.planner": "plans on a map's tree (an airway_map in scope)",
}
"""Modules whose examples are all ``+SKIP``, and why they cannot run as they stand."""


def test_examples_exist_in_the_core():
    """The sensors, the EM sample accumulator and the geometry carry examples (a guard against
    this module silently finding none)."""
    assert {"bronchonav.sensors.em", "bronchonav.sensors.cbct",
            "bronchonav.registration.samples"} <= set(MODULES), MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=lambda text: None)
    result = runner.summarize(verbose=False)
    assert (result.attempted == 0) == (name in SKIPPED_ONLY), \
        f"{name}: {result.attempted} examples run; update SKIPPED_ONLY"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
