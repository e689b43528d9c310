"""Training loops and inference over MONAI datasets."""
