"""medlora: LoRA adaptation of vision transformers to medical imaging studies.

The package follows the data: ``io`` (DICOM/NIfTI in, manifests, splits) → ``transforms``
(windowing, views, MONAI pipelines) → ``models`` (timm backbone + peft LoRA) → ``train`` →
``evaluate`` → ``tracking`` (MLflow) → ``export`` (adapter bundles).
"""

__version__ = "0.1.0"
