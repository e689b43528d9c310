"""Project error types. Library code raises these, never bare ``Exception``."""

from __future__ import annotations


class MedloraError(Exception):
    """Base class of every error medlora raises on purpose."""


class ConfigError(MedloraError):
    """A configuration file or override is invalid (names the key and what is allowed)."""


class InputError(MedloraError):
    """An input file cannot be used (names the file and the problem)."""


class UnsupportedDicomError(InputError):
    """A DICOM file is valid but uses something medlora does not handle (names tag and value)."""


class WeightsError(MedloraError):
    """Base-model weights cannot be found, fetched or verified."""


class LeakageError(MedloraError):
    """The same patient, instance or pixel data appears in more than one split."""


class TrackingError(MedloraError):
    """The tracking store holds no run that fits what was asked (names the experiment or run id and what
    was expected), or another live process is running it."""


class MetricUndefinedError(MedloraError):
    """A metric is mathematically undefined for the given inputs (e.g. AUROC with one class)."""


class BundleError(MedloraError):
    """An exported bundle is incomplete, tampered with, or does not match its base model."""


class TrackingUnavailableError(MedloraError):
    """The tracking store does not answer or refuses the credentials (names the URI, never a password).
    A sweep stops on it rather than counting its points as failed; rerunning resumes."""


class PacsError(MedloraError):
    """A DICOMweb server (PACS) does not answer, refuses the credentials or a transfer failed (names the
    server without credentials and what failed, never a patient identifier)."""
