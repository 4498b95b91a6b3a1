"""MobileNetV3-based classification spaces: spec factories only (`registry.py` lists and resolves them)."""
from __future__ import annotations

from .config import SearchSpaceSpec


def mbv3_large() -> SearchSpaceSpec:
    """MobileNetV3-Large x1.0 as the largest network (Howard et al. 2019, Table 1), 224x224 ImageNet.

    Every expansion, stage width and CBC width is searchable; every depthwise kernel is
    3/5/7 (a 7x7 super-kernel, as NetAdaptV2's space does).
    """
    return SearchSpaceSpec(
        name="mbv3-large",
        description="MobileNetV3-Large x1.0 super-network, ImageNet 224x224",
        input_hw=(224, 224),
        stem="cn_k3_s2_c16_hs",
        stages=(
            ("ds_r1_k3_s1_c16_re",),
            ("ir_r1_k3_s2_e4_c24_re", "ir_r1_k3_s1_e3_c24_re"),
            ("ir_r3_k5_s2_e3_c40_se_re",),
            ("ir_r1_k3_s2_e6_c80_hs", "ir_r1_k3_s1_e2.5_c80_hs", "ir_r2_k3_s1_e2.3_c80_hs"),
            ("ir_r2_k3_s1_e6_c112_se_hs",),
            ("ir_r3_k5_s2_e6_c160_se_hs",),
            ("cn_r1_k1_s1_c960_hs",),
        ),
        head_fc=1280,
        num_classes=1000,
    )


def mbv3_tiny() -> SearchSpaceSpec:
    """A small MobileNetV3-style space for the embedded demo: 32x32 images, 10 classes.

    Sized so that its full LUT builds on a 2-core host in minutes and its super-network
    trains in a few minutes on the CPU, while still having CBC-removable blocks, SE, and
    3/5/7 kernels.
    """
    return SearchSpaceSpec(
        name="mbv3-tiny",
        description="small MobileNetV3-style space for 32x32 images (embedded demo)",
        input_hw=(32, 32),
        stem="cn_k3_s1_c16_hs",
        stages=(
            ("ir_r1_k3_s2_e3_c24_re", "ir_r1_k3_s1_e3_c24_re"),
            ("ir_r1_k5_s2_e3_c32_se_hs", "ir_r1_k3_s1_e3_c32_se_hs"),
            ("cn_r1_k1_s1_c64_hs",),
        ),
        head_fc=64,
        num_classes=10,
    )
