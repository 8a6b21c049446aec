"""Exceptions raised by BronchoNav.

Every error a user can cause (bad input file, impossible command, unreachable target) is raised
as a subclass of :class:`BronchoNavError` with a message that says what is wrong and what to do.
The command-line interface turns these into one line on stderr and a non-zero exit code.
"""


class BronchoNavError(Exception):
    """Base class of all errors BronchoNav raises on purpose."""


class InputError(BronchoNavError, ValueError):
    """An input (file, argument, command, parameter) is missing, malformed or out of range."""


class CTError(InputError):
    """A CT scan cannot be read or is not a usable chest CT in Hounsfield units."""


class MapError(InputError):
    """A map folder is missing, broken or of an unsupported version."""


class CommandError(InputError):
    """A catheter command is non-finite or outside the device limits."""


class SolverError(BronchoNavError, RuntimeError):
    """A numerical solve failed to converge within its iteration or time budget."""


class RegistrationError(BronchoNavError, RuntimeError):
    """Registration cannot be run on the given data (too few points, degenerate geometry...)."""
