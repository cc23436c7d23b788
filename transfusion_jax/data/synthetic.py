"""Procedural images with a learnable, lesion-like signal: fundus photos, chest x-rays, natural-ish "source" images.

The generators (generate.py) write these in the real on-disk formats; the `synthetic_*` datasets render them in
memory. Each image is a pure function of (rng, labels, size), so a dataset is reproducible from its seed.
"""

import numpy as np

# Grade prevalence of the miniature Retina sets: flatter than Kaggle's (73/7/15/2.5/2 %) so that a few hundred
# images hold every grade.
RETINA_GRADE_PROBS = (0.45, 0.12, 0.2, 0.12, 0.11)
# Mean lesion counts per grade 0..4: "count and size rise with DR grade".
_LESIONS_PER_GRADE = (0.0, 2.0, 6.0, 11.0, 18.0)
# Per-pathology probabilities of (positive, uncertain, negative, blank) in miniature CheXpert train sets.
CHEXPERT_LABEL_PROBS = (0.3, 0.1, 0.2, 0.4)
SOURCE_SHAPES = ("disc", "square", "ring", "stripes", "checker")


def _grid(size: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy / size, xx / size


def _blob(yy, xx, cy, cx, sigma):
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def render_retina(rng: np.random.Generator, grade: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3] fundus-like disc; dark red dots (haemorrhages) and yellow spots (exudates) whose
    number and size grow with the 0-4 grade."""
    yy, xx = _grid(size)
    r = np.hypot(yy - 0.5, xx - 0.5)
    disc = (r < 0.46).astype(np.float32)
    base = np.array([190, 85, 40], np.float32) * rng.uniform(0.85, 1.15, 3)
    vignette = 1.0 - 0.6 * (r / 0.46) ** 2
    img = disc[..., None] * vignette[..., None] * base
    # optic disc and a smooth background texture shared by every grade
    oy, ox = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.choice([-1, 1]) * rng.uniform(0.18, 0.25)
    img += disc[..., None] * _blob(yy, xx, oy, ox, 0.04)[..., None] * np.array([70, 80, 40], np.float32)
    for _ in range(3):
        img += (
            disc[..., None]
            * _blob(yy, xx, *rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.2))[..., None]
            * rng.uniform(-15, 15)
        )
    count = rng.poisson(_LESIONS_PER_GRADE[grade])
    for _ in range(count):
        angle, radius = rng.uniform(0, 2 * np.pi), 0.38 * np.sqrt(rng.uniform())
        cy, cx = 0.5 + radius * np.sin(angle), 0.5 + radius * np.cos(angle)
        sigma = rng.uniform(0.006, 0.012) * (1 + 0.25 * grade)
        if rng.uniform() < 0.6:  # haemorrhage: darker, redder
            color = np.array([-70, -60, -30], np.float32)
        else:  # hard exudate: bright yellow
            color = np.array([60, 90, -10], np.float32)
        img += disc[..., None] * _blob(yy, xx, cy, cx, sigma)[..., None] * color
    img += rng.normal(0, 4, img.shape) * disc[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_retina_grades(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(5, size=n, p=RETINA_GRADE_PROBS)


def render_chest_xray(rng: np.random.Generator, raw: dict, size: int) -> np.ndarray:
    """uint8 [size, size] grayscale chest film. `raw` maps the 5 paper pathologies to 1 / 0 / -1 / nan; a
    positive finding draws its pattern at full strength, an uncertain one at half strength, others nothing:
      Cardiomegaly: wide heart; Pleural Effusion: bright fluid level at a lung base; Edema: bilateral perihilar
      haze; Consolidation: dense patch in an upper lung zone; Atelectasis: thin bright band in a lower lung."""

    def strength(name):
        value = raw.get(name, np.nan)
        return 1.0 if value == 1.0 else 0.5 if value == -1.0 else 0.0

    yy, xx = _grid(size)
    img = np.full((size, size), 150.0, np.float32) + rng.normal(0, 8)
    lungs = []
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.17, 0.21)
        lung = (((yy - 0.48) / 0.3) ** 2 + ((xx - cx) / 0.13) ** 2) < 1
        lungs.append((lung, cx))
        img -= 90 * lung
    heart_width = 0.11 + 0.07 * strength("Cardiomegaly") + rng.uniform(-0.01, 0.01)
    heart = (((yy - 0.62) / 0.13) ** 2 + ((xx - 0.53) / heart_width) ** 2) < 1
    img = np.where(heart, 190.0, img)
    s = strength("Pleural Effusion")
    if s:
        lung, cx = lungs[rng.integers(2)]
        img += 80 * s * (lung & (yy > 0.66))
    s = strength("Edema")
    if s:
        haze = sum(_blob(yy, xx, 0.5, cx, 0.1) * lung for lung, cx in lungs)
        img += 70 * s * haze
    s = strength("Consolidation")
    if s:
        lung, cx = lungs[rng.integers(2)]
        img += 120 * s * _blob(yy, xx, rng.uniform(0.26, 0.34), cx + rng.uniform(-0.03, 0.03), 0.05) * lung
    s = strength("Atelectasis")
    if s:
        lung, cx = lungs[rng.integers(2)]
        y0 = rng.uniform(0.58, 0.66)
        img += 100 * s * (np.abs(yy - y0 - 0.15 * (xx - cx)) < 0.02) * lung
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_chexpert_raw(rng: np.random.Generator, n: int, num_labels: int, certain_only: bool) -> np.ndarray:
    """[n, num_labels] raw labels (1, -1, 0, nan). `certain_only` mimics valid.csv, which has only 0 and 1."""
    probs = np.array(CHEXPERT_LABEL_PROBS)
    if certain_only:
        probs = np.array([probs[0], 0.0, 1.0 - probs[0], 0.0])
    codes = rng.choice(4, size=(n, num_labels), p=probs)
    return np.array([1.0, -1.0, 0.0, np.nan])[codes]


def render_source(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3] "natural" image of class `label`: a shape from SOURCE_SHAPES in one of several hues,
    at a random place and scale, over a random colour gradient with noise (an offline stand-in for ImageNet)."""
    shape = SOURCE_SHAPES[label % len(SOURCE_SHAPES)]
    hue = label // len(SOURCE_SHAPES)
    yy, xx = _grid(size)
    background = rng.uniform(40, 200, 3)[None, None, :] + (yy[..., None] - 0.5) * rng.uniform(-80, 80, 3)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    radius = rng.uniform(0.15, 0.3)
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        inside = np.hypot(dy, dx) < radius
    elif shape == "square":
        inside = np.maximum(np.abs(dy), np.abs(dx)) < radius * 0.9
    elif shape == "ring":
        inside = np.abs(np.hypot(dy, dx) - radius) < radius * 0.25
    elif shape == "stripes":
        inside = (np.hypot(dy, dx) < radius * 1.3) & (np.sin(dx * 60) > 0)
    else:
        inside = (np.maximum(np.abs(dy), np.abs(dx)) < radius) & ((np.floor(dy * 20) + np.floor(dx * 20)) % 2 == 0)
    color = np.roll(np.array([230.0, 60.0, 30.0]), hue) + rng.normal(0, 15, 3)
    img = np.where(inside[..., None], color, background) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
