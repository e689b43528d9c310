"""Clinical-grade evaluation of binary and multi-class scores.

Frozen operating points chosen on validation data (``operating_point``), metrics that match
scikit-learn (``metrics``), patient-clustered bootstrap, Wilson and DeLong intervals
(``intervals``, ``delong``), calibration, study/patient aggregation, subgroup analysis, a one-call
report (``report.evaluate_binary``), per-finding evaluation of multi-label and multi-class tasks with
shared bootstrap resamples (``findings``) and PNG plots. Pure numpy/scipy/scikit-learn; no torch.
"""
