"""The paper's numbers as docs/paper.md gives them, each with its source tag and how sure we are of it.

Tags: 'P-fig' an official figure, 'P-blog' the authors' blog post, 'P-text' the paper's text, 'S' a secondary source
quoting the paper, 'D' derived. `confirmed=False` marks values docs/paper.md calls unconfirmed
(e.g. recollections); reports print them with a '?' so they are never mistaken for confirmed targets.
AUCs are in percent, as the paper prints them.
"""

import dataclasses

from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES


@dataclasses.dataclass(frozen=True)
class PaperValue:
    mean: float
    std: float | None = None
    tag: str = "S"
    confirmed: bool = True
    note: str = ""

    def format(self, digits: int = 1) -> str:
        text = f"{self.mean:.{digits}f}" if isinstance(self.mean, float) else f"{self.mean:,}"
        if self.std is not None:
            text += f" ± {self.std:g}"
        return text + ("" if self.confirmed else " (?)")


def _v(mean, std=None, tag="S", confirmed=True, note=""):
    return PaperValue(mean, std, tag, confirmed, note)


_RECALLED = "unconfirmed recollection (docs/paper.md §4.1)"

# Table 1: Retina moderate-DR AUC (%), (model, init) -> value. docs/paper.md §4.1.
TABLE1: dict[tuple[str, str], PaperValue] = {
    ("resnet50", "random"): _v(96.4, 0.05),
    ("resnet50", "transfer"): _v(96.7, 0.04),
    ("inception_v3", "random"): _v(96.6, 0.13),
    ("inception_v3", "transfer"): _v(96.7, 0.05),
    ("cbr_larget", "random"): _v(96.2, 0.04),
    ("cbr_larget", "transfer"): _v(96.2, 0.04),
    ("cbr_largew", "random"): _v(95.8, 0.04, confirmed=False, note=_RECALLED),
    ("cbr_largew", "transfer"): _v(95.8, 0.05, confirmed=False, note=_RECALLED),
    ("cbr_small", "random"): _v(95.7, 0.04, confirmed=False, note=_RECALLED),
    ("cbr_small", "transfer"): _v(95.8, 0.01, confirmed=False, note=_RECALLED),
    ("cbr_tiny", "random"): _v(95.8, 0.03, confirmed=False, note=_RECALLED),
    ("cbr_tiny", "transfer"): _v(95.8, 0.01, confirmed=False, note=_RECALLED),
}

# Table 2: CheXpert AUC (%) per pathology; only the ResNet-50 rows are confirmed (docs/paper.md §4.2).
TABLE2: dict[tuple[str, str], dict[str, PaperValue]] = {
    ("resnet50", "random"): {
        p: _v(x, tag="S") for p, x in zip(CHEXPERT_PATHOLOGIES, (79.52, 75.23, 85.49, 88.34, 88.70))
    },
    ("resnet50", "transfer"): {
        p: _v(x, tag="S") for p, x in zip(CHEXPERT_PATHOLOGIES, (79.76, 74.93, 84.42, 88.89, 88.07))
    },
}

# Table 3: 5000 Retina training examples, AUC (%), no ± known (docs/paper.md §4.3).
TABLE3: dict[tuple[str, str], PaperValue] = {
    ("resnet50", "random"): _v(92.2),
    ("resnet50", "transfer"): _v(94.6),
    ("cbr_larget", "random"): _v(93.6),
    ("cbr_larget", "transfer"): _v(93.9),
    ("cbr_largew", "random"): _v(93.6),
    ("cbr_largew", "transfer"): _v(93.7),
}

# Steps until test AUC > 0.91 on Retina, mean of (presumably) 5 runs: blog figure legends (docs/paper.md §4.4), and
# Mean Var read off Fig. 6 (docs/paper.md §4.5, approximate: the middle of the range read).
CONVERGENCE_THRESHOLD = 0.91
CONVERGENCE: dict[tuple[str, str], PaperValue] = {
    ("resnet50", "random"): _v(69_069, tag="P-fig"),
    ("resnet50", "gabor"): _v(25_425, tag="P-fig"),
    ("resnet50", "slim"): _v(8_208, tag="P-fig"),
    ("resnet50", "transfer"): _v(8_008, tag="P-fig"),
    ("cbr_largew", "random"): _v(104_104, tag="P-fig"),
    ("cbr_largew", "gabor"): _v(82_082, tag="P-fig"),
    ("cbr_largew", "transfer"): _v(19_419, tag="P-fig"),
    ("resnet50", "mean_var"): _v(27_500, tag="P-fig", confirmed=False, note="read off Fig. 6 as ~25-30k"),
    ("inception_v3", "transfer"): _v(8_000, tag="P-fig", confirmed=False, note="read off Fig. 6 as ~8k"),
    ("inception_v3", "mean_var"): _v(25_000, tag="P-fig", confirmed=False, note="read off Fig. 6 as ~25k"),
    ("inception_v3", "random"): _v(47_500, tag="P-fig", confirmed=False, note="read off Fig. 6 as ~45-50k"),
}

# Fig. 2 (blog violin plot), CCA similarity of the top two layers: model -> (CCA(Rand, ImNet), CCA(Rand, Rand)),
# approximate medians read off the figure (docs/paper.md §5.2).
FIG2_CCA: dict[str, tuple[PaperValue, PaperValue]] = {
    "resnet50": (_v(0.239, tag="P-fig"), _v(0.266, tag="P-fig")),
    "inception_v3": (_v(0.217, tag="P-fig"), _v(0.254, tag="P-fig")),
    "cbr_largew": (_v(0.360, tag="P-fig"), _v(0.362, tag="P-fig")),
    "cbr_small": (_v(0.369, tag="P-fig"), _v(0.375, tag="P-fig")),
    "cbr_tiny": (_v(0.360, tag="P-fig"), _v(0.359, tag="P-fig")),
}

# Qualitative findings the quickstart checks its own numbers against (docs/paper.md §4.6, 5.3, 6.4).
FINDINGS = {
    "transfusion": "Reusing conv1 gives the greatest marginal convergence speedup; the lowest two blocks matter most "
    "(per-block step counts UNCONFIRMED).",
    "similarity_to_init": "Lower layers stay closest to their initialisation, most strongly for large models; "
    "feature reuse is mostly restricted to the bottom two layers.",
    "gabor": "Synthetic Gabor conv1 speeds convergence, like pretrained conv1 does.",
    "mean_var": "Mean Var init converges faster than random, slower than full transfer.",
}

# Which paper table each configs/*.py group reproduces.
GROUP_TABLES = {
    "retina": ("Table 1", TABLE1),
    "retina_small": ("Table 3", TABLE3),
    "chexpert": ("Table 2", TABLE2),
    "hybrid": ("Convergence (docs/paper.md §4.4-4.6)", CONVERGENCE),
}
