"""Exception types of the package and the CLI exit code each one maps to.

Exit codes: 0 success; 1 a check or claim failed; 2 unusable input to `certify verify` (DESIGN section 7): a
certificate or a certificate store (also for `batch` and `export`); 64 usage error (also: out of memory for the
work the parameters ask); 65 invalid input data (NaN/Inf, shape, dtype, target, model mode); 66 unsupported model,
layer or method; 70 internal error; 75 undecided within the time limit (`verify-property` answering unknown,
and `certify verify` of a valid property certificate whose answer is unknown); 130 interrupted (Ctrl-C); 141 the
reader of the output went away (SIGPIPE). With --json a failure also prints {"error", "exit_code"} on stdout.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_USAGE = 64
EXIT_INVALID_INPUT = 65
EXIT_UNSUPPORTED = 66
EXIT_INTERNAL = 70
EXIT_UNKNOWN = 75  # sysexits EX_TEMPFAIL: a property neither proven nor refuted in time
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for a run stopped by Ctrl-C
EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away (e.g. `certify ... | head`)


class CertifyError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(CertifyError, ValueError):
    """A parameter outside its valid range or an inconsistent combination of options."""

    exit_code = EXIT_USAGE


class InvalidInputError(CertifyError, ValueError):
    """Input data the package cannot explain: non-finite values, wrong rank, shape or dtype."""

    exit_code = EXIT_INVALID_INPUT


class TargetError(InvalidInputError):
    """A target class out of range, or a per-example target list of the wrong length."""


class ModelModeError(InvalidInputError):
    """The model is in training mode (dropout or batch-norm statistics would change the function)."""


class UnsupportedError(CertifyError, NotImplementedError):
    """A layer, method, model spec or norm the package does not support."""

    exit_code = EXIT_UNSUPPORTED


class CertificateFormatError(CertifyError):
    """A certificate file that cannot be read: not JSON, truncated, schema mismatch, missing model."""

    exit_code = EXIT_UNUSABLE
