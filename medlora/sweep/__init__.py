"""Few-shot sweeps, in one place: the points and their hashes (:mod:`.points`), the shared setup
(:mod:`.workbench`), where one point runs (:mod:`.child`), the driver and its local executor
(:mod:`.driver`), the Ray executor (:mod:`.ray_executor`) and its claims (:mod:`.claims`), and the
summary and comparison of finished sweeps (:mod:`.summary`, :mod:`.compare`). Resuming follows the
rules every run kind shares (:mod:`medlora.experiment.resume`)."""
