"""A PACS over DICOMweb: pull studies into a local content-addressed cache, push results back.

* :mod:`.client`: one session per server; credentials only from the environment or ``~/.netrc``.
* :mod:`.cache`: where pulled instances live (by SHA-256 of their SOP Instance UID), where each came
  from (``sources.csv``) and which failed (``failures.csv``).
* :mod:`.pull`: QIDO-RS search, WADO-RS retrieval into the cache (parallel, retried, resumable).
* :mod:`.objects`: the DICOM objects a finding goes back as (Comprehensive SR TID 1500, Secondary Capture).
* :mod:`.push`: STOW-RS of those objects, skipping what the server already holds.

Imports are lazy: ``dicomweb-client`` and ``highdicom`` load only when a pull or push runs.
"""
