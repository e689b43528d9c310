"""Transforms stage: plain array functions first, thin MONAI dictionary (``…d``) wrappers over them."""
