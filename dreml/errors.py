"""Exception classes of dreml. The CLIs print `str(exc)` as one line and exit non-zero."""


class DremlError(Exception):
    """Base of every error dreml raises on purpose."""


class InputError(DremlError):
    """A user-supplied file or argument is malformed.

    The message names the file (and line or field where there is one) and what was expected.
    Advice: fix the named input; nothing was written.
    """


class ComponentSpecError(InputError):
    """A component specification is invalid (empty component, unknown SNP, duplicate name...)."""
