"""certify.errors: every error maps to the exit code the module docstring documents, and keeps the
built-in base class callers may already catch."""
import os
import re

import pytest

import certify.errors as errors
from certify.errors import (
    CertificateFormatError,
    CertifyError,
    InvalidInputError,
    ModelModeError,
    TargetError,
    UnsupportedError,
    UsageError,
)

# error -> (exit code, built-in base class it must remain)
EXPECTED = {
    CertifyError: (70, Exception),
    UsageError: (64, ValueError),
    InvalidInputError: (65, ValueError),
    TargetError: (65, ValueError),
    ModelModeError: (65, ValueError),
    UnsupportedError: (66, NotImplementedError),
    CertificateFormatError: (2, Exception),
}


@pytest.mark.parametrize("error", list(EXPECTED), ids=lambda e: e.__name__)
def test_each_error_maps_to_its_documented_exit_code(error):
    code, base = EXPECTED[error]
    assert error.exit_code == code
    raised = error("message")
    assert isinstance(raised, CertifyError) and isinstance(raised, base)
    assert raised.exit_code == code and str(raised) == "message"
    with pytest.raises(CertifyError):
        raise raised


def test_the_constants_are_the_codes_the_docstring_lists():
    documented = {int(code): text.strip() for code, text in re.findall(r"(\d+) ([^;.]+)[;.]", errors.__doc__.split("Exit codes:")[1])}
    assert set(documented) == {0, 1, 2, 64, 65, 66, 70, 75, 130, 141}
    constants = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert sorted(constants.values()) == sorted(documented)
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_UNUSABLE) == (0, 1, 2)
    assert (errors.EXIT_USAGE, errors.EXIT_INVALID_INPUT, errors.EXIT_UNSUPPORTED, errors.EXIT_INTERNAL) == (64, 65, 66, 70)
    assert documented[64].startswith("usage") and documented[65].startswith("invalid input")
    assert documented[66].startswith("unsupported") and documented[70].startswith("internal")
    assert documented[2].startswith("unusable input") and documented[75].startswith("undecided")
    assert errors.EXIT_UNKNOWN == getattr(os, "EX_TEMPFAIL", 75)
    assert documented[130].startswith("interrupted") and (errors.EXIT_INTERRUPTED, errors.EXIT_PIPE) == (130, 141)


def test_every_error_class_of_the_module_is_covered():
    classes = {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__}
    assert classes == set(EXPECTED)


def test_codes_agree_with_sysexits():
    """64, 65 and 70 are sysexits.h's EX_USAGE, EX_DATAERR and EX_SOFTWARE."""
    assert errors.EXIT_USAGE == getattr(os, "EX_USAGE", 64)
    assert errors.EXIT_INVALID_INPUT == getattr(os, "EX_DATAERR", 65)
    assert errors.EXIT_INTERNAL == getattr(os, "EX_SOFTWARE", 70)


def test_specific_errors_are_caught_by_their_family():
    with pytest.raises(InvalidInputError):
        raise TargetError("target 12 out of range")
    with pytest.raises(InvalidInputError):
        raise ModelModeError("model in training mode")
    assert not issubclass(CertificateFormatError, ValueError)
    assert not issubclass(UnsupportedError, ValueError)
