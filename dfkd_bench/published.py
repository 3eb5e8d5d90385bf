"""Published CIFAR-10 top-1 accuracies (REFERENCE.md, "Published results to compare
against"), so a benchmark table can set its ranking beside the literature's."""
from __future__ import annotations

PAIRS = ("resnet34-resnet18", "vgg11-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn40_1", "wrn40_2-wrn16_2")

# method key -> accuracy per pair, in PAIRS order
CIFAR10 = {
    "deepinv": (93.26, 90.36, 83.04, 86.85, 89.72),
    "cmi": (94.84, 91.13, 90.01, 92.78, 92.52),
    "dafl": (92.22, 81.10, 65.71, 81.33, 81.55),
    "dfq": (94.61, 90.84, 86.14, 91.69, 92.01),
    "zskt": (93.32, 89.46, 83.74, 86.07, 89.66),
    "fast2": (92.62, 84.67, 88.36, 89.56, 89.68),
    "fast5": (93.63, 89.94, 88.90, 92.04, 91.96),
    "fast10": (94.05, 90.53, 89.29, 92.51, 92.45),
    "ssdkd": (92.92, 89.56, 88.07, 90.12, 91.84),  # data scale 5,000
    "ssdkd-relaxed": (94.26, 90.67, 89.96, 93.23, 93.11),  # Table 2, data scale near Fast5's
}


def published_key(method: str, preset: str | None, overridden: bool = False) -> str | None:
    """The published row a run stands for, or None (ablations, overridden settings,
    methods the table does not list). Fast's rows are its step-count presets."""
    if overridden:
        return None
    base = (preset or "").removesuffix("-cpu")
    if method == "fast":
        return base if base in CIFAR10 else None
    if method == "ssdkd":
        return {"": "ssdkd", "cpu": "ssdkd", "paper": "ssdkd", "relaxed": "ssdkd-relaxed"}.get(base)
    if preset and preset.endswith("-t20"):  # not what produced the published figure (T 1)
        return None
    if method == "deepinv" and preset == "paper":  # the table's row is DeepInv-2k
        return None
    return method if method in CIFAR10 else None


def cifar10(pair: str) -> dict[str, float]:
    if pair not in PAIRS:
        raise ValueError(f"no published column {pair!r}; accepted: {', '.join(PAIRS)}")
    col = PAIRS.index(pair)
    return {key: accs[col] for key, accs in CIFAR10.items()}
