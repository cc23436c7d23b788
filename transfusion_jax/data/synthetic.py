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


# ---------------------------------------------------------------- the miniature study's target: lesion polarity
#
# Every eye carries the same kind and number of lesion-like spots whatever its grade; what the grade changes is how
# many of them are "bright-core" rather than "dark-core". Both kinds share one zero-mean centre-surround profile
# (a difference of Gaussians whose integral is 0) and differ only in its sign. Hence the label leaves an image's
# mean colour (first order) and its power spectrum (second order) unchanged in expectation: the per-spot spectra
# are identical, |F(-p)| = |F(p)|, and spot count, size, colour, place are drawn independently of the grade. A
# frozen conv filter followed by ReLU and a global average sees the sign only through higher-order effects
# (sum over positions of ReLU(z) - ReLU(-z) equals the sum of z, which is 0 for a zero-mean spot), so random conv
# features do not solve the task; a network that learns a centre-surround detector of the right sign and counts
# its responses does. Grades overlap in their bright-spot counts (graders disagree), so the best possible AUC of
# the binary task is below 1 (`polarity_bayes_auc`).

# Bright-core spot counts per grade 0..4, each drawn uniformly from the inclusive range.
POLARITY_BRIGHT_PER_GRADE = ((0, 0), (1, 3), (2, 4), (4, 6), (6, 8))
# Total spots per eye: uniform over this inclusive range (raised to the bright count if that is larger).
POLARITY_SPOTS = (3, 8)
# Spot centre-Gaussian sigma as a fraction of the image side (the surround's sigma is twice it).
POLARITY_SIGMA = (0.035, 0.055)
# Contrast of a spot: it multiplies the local fundus by (1 + sign * contrast * profile * colour weight), so spots
# of either sign stay inside 0..255 (no clipping, which would make bright and dark spots differ in energy).
POLARITY_CONTRAST = (0.6, 0.9)


def _fundus_background(rng: np.random.Generator, size: int):
    """(image float32 [size, size, 3] in 0..255, disc mask, yy, xx): a vignetted disc, an optic disc on a random side
    and four dark vessels (circle arcs through the optic disc). Shared by every grade: none of it carries the label.
    The disc is kept dim enough (red <= ~150) that a bright-core spot does not saturate it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = (yy + 0.5) / size, (xx + 0.5) / size  # pixel centres
    r = np.hypot(yy - 0.5, xx - 0.5)
    disc = (r < 0.47).astype(np.float32)
    base = np.array([115, 70, 45], np.float32) * rng.uniform(0.8, 1.2, 3)
    img = disc[..., None] * (1.0 - 0.4 * (r / 0.47) ** 2)[..., None] * base
    oy, ox = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.choice([-1, 1]) * rng.uniform(0.2, 0.27)
    img += disc[..., None] * _blob(yy, xx, oy, ox, 0.05)[..., None] * np.array([50, 45, 25], np.float32)
    for _ in range(4):
        radius, angle = rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi)
        cy, cx = oy + radius * np.sin(angle), ox + radius * np.cos(angle)
        distance = np.abs(np.hypot(yy - cy, xx - cx) - radius)
        width = rng.uniform(0.008, 0.015)
        vessel = np.exp(-(distance**2) / (2 * width**2)) * rng.uniform(0.3, 0.5)
        img *= 1.0 - disc[..., None] * vessel[..., None]  # vessels darken by 30-50 %
    return img, disc, yy, xx


def polarity_spot(yy, xx, cy: float, cx: float, sigma: float) -> np.ndarray:
    """Zero-mean centre-surround profile: G(sigma) - G(2 sigma) / 4, whose integral over the plane is 0; peak 0.75."""
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return np.exp(-d2 / (2 * sigma**2)) - 0.25 * np.exp(-d2 / (8 * sigma**2))


def sample_polarity_spots(rng: np.random.Generator, grade: int) -> np.ndarray:
    """+1 (bright core) / -1 (dark core) for each spot of an eye of `grade`, in random order."""
    lo, hi = POLARITY_BRIGHT_PER_GRADE[grade]
    bright = int(rng.integers(lo, hi + 1))
    total = max(bright, int(rng.integers(POLARITY_SPOTS[0], POLARITY_SPOTS[1] + 1)))
    signs = np.array([1.0] * bright + [-1.0] * (total - bright), np.float32)
    rng.shuffle(signs)
    return signs


def render_retina_polarity(rng: np.random.Generator, grade: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3] fundus-like disc whose 0-4 grade sets how many of its spots are bright-core (module
    comment above): vessels, optic disc, colour, spot count, size, colour and place are all independent of it."""
    img, disc, yy, xx = _fundus_background(rng, size)
    modulation = np.ones_like(img)
    for sign in sample_polarity_spots(rng, grade):
        angle, radius = rng.uniform(0, 2 * np.pi), 0.4 * np.sqrt(rng.uniform())
        sigma = rng.uniform(*POLARITY_SIGMA)
        profile = polarity_spot(yy, xx, 0.5 + radius * np.sin(angle), 0.5 + radius * np.cos(angle), sigma)
        weight = np.array([1.0, 0.9, 0.8], np.float32) * rng.uniform(0.85, 1.15, 3)
        modulation += (sign * rng.uniform(*POLARITY_CONTRAST) * profile)[..., None] * weight
    img = img * np.maximum(modulation, 0.0) + rng.normal(0, 3, img.shape) * disc[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def polarity_bayes_auc(grade_probs=RETINA_GRADE_PROBS, threshold: int = 2) -> float:
    """Closed-form AUC of the best possible score for `grade >= threshold` on the polarity task: the number of
    bright-core spots (exact, by enumeration over the uniform count ranges; ties count one half)."""
    neg, pos = np.zeros(16), np.zeros(16)
    for grade, (p, (lo, hi)) in enumerate(zip(grade_probs, POLARITY_BRIGHT_PER_GRADE)):
        target = pos if grade >= threshold else neg
        target[lo : hi + 1] += p / (hi - lo + 1)
    neg, pos = neg / neg.sum(), pos / pos.sum()
    below = np.cumsum(neg) - neg  # P(negative count < k)
    return float(np.sum(pos * (below + 0.5 * neg)))


# ---------------------------------------------------------------- the miniature study's source: IFS fractals
#
# Formula-driven supervised pretraining (FractalDB, Kataoka et al. 2020): each class is one iterated function system
# (IFS) of 2-4 contractive affine maps; its images are the attractor drawn by the chaos game, with the per-image
# nuisances FractalDB uses (a perturbed parameter, a flip, placement) plus random colours, so only shape tells the
# classes apart. Class systems are drawn as in Anderson & Farrell (2022), "Improving Fractal Pre-training": the
# maps' singular values are scaled so that the system's sigma-factor sum_i (s_i1 + 2 s_i2) lies in
# [(5 + N) / 2 - 1/2, (5 + N) / 2 + 1/2] for N maps, the range they found to give space-filling, non-degenerate
# fractals; systems whose attractor still fills less than 10 % of its bounding box on a 32 x 32 grid are redrawn.


def _affine_map(rng: np.random.Generator, s1: float, s2: float) -> np.ndarray:
    """[2, 3] affine map R(theta) diag(s1, d * s2) R(phi) | b with random angles, reflection d and shift b."""

    def rot(a):
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    d = rng.choice([-1.0, 1.0])
    linear = rot(rng.uniform(0, 2 * np.pi)) @ np.diag([s1, d * s2]) @ rot(rng.uniform(0, 2 * np.pi))
    return np.concatenate([linear, rng.uniform(-1, 1, (2, 1))], axis=1)


def chaos_game(rng: np.random.Generator, maps: np.ndarray, num_points: int, chains: int = 64, burn_in: int = 8):
    """[num_points, 2] points on the attractor of the IFS `maps` [N, 2, 3]: `chains` parallel chaos games (maps
    chosen with probability proportional to |det|) after `burn_in` discarded steps each."""
    det = np.abs(np.linalg.det(maps[:, :, :2]))
    probs = det / det.sum() if det.sum() > 0 else np.full(len(maps), 1.0 / len(maps))
    steps = burn_in + -(-num_points // chains)
    choice = rng.choice(len(maps), size=(steps, chains), p=probs)
    x = rng.uniform(-1, 1, (chains, 2))
    out = []
    for t in range(steps):
        m = maps[choice[t]]
        x = np.einsum("cij,cj->ci", m[:, :, :2], x) + m[:, :, 2]
        if t >= burn_in:
            out.append(x)
    return np.concatenate(out)[:num_points]


def _filling_rate(points: np.ndarray, grid: int = 32) -> float:
    lo, span = points.min(0), np.ptp(points, 0)
    if np.any(span <= 1e-9) or not np.all(np.isfinite(points)):
        return 0.0
    cells = np.clip(((points - lo) / span * grid).astype(int), 0, grid - 1)
    return len(np.unique(cells[:, 0] * grid + cells[:, 1])) / grid**2


def sample_ifs_classes(rng: np.random.Generator, num_classes: int) -> list[np.ndarray]:
    """`num_classes` IFS systems, each an [N, 2, 3] array of affine maps with N in 2..4 (module comment above)."""
    systems = []
    while len(systems) < num_classes:
        n = int(rng.integers(2, 5))
        target = rng.uniform((5 + n) / 2 - 0.5, (5 + n) / 2 + 0.5)
        s1 = rng.uniform(0.2, 1.0, n)
        s2 = s1 * rng.uniform(0.2, 1.0, n)
        scale = target / np.sum(s1 + 2 * s2)
        if np.max(s1) * scale >= 0.98:  # keep every map contractive
            continue
        maps = np.stack([_affine_map(rng, a * scale, b * scale) for a, b in zip(s1, s2)])
        if _filling_rate(chaos_game(rng, maps, 4000)) >= 0.1:
            systems.append(maps)
    return systems


def render_fractal(rng: np.random.Generator, maps: np.ndarray, size: int, num_points: int | None = None) -> np.ndarray:
    """uint8 [size, size, 3] image of one instance of the class whose IFS is `maps`: one map parameter scaled by
    U(0.85, 1.15), a random left-right flip, the attractor fitted into a random box of 60-95 % of the side, drawn
    in a random colour (bilinear splats, saturating density) over a random-colour gradient with noise."""
    maps = maps.copy()
    i, j, k = rng.integers(len(maps)), rng.integers(2), rng.integers(3)
    maps[i, j, k] *= rng.uniform(0.85, 1.15)
    points = chaos_game(rng, maps, num_points or 3 * size * size)
    points = points[np.all(np.isfinite(points), axis=1)]
    if rng.uniform() < 0.5:
        points[:, 0] = -points[:, 0]
    lo, span = points.min(0), np.maximum(np.ptp(points, 0), 1e-9)
    extent = rng.uniform(0.6, 0.95) * size
    fit = extent / span.max()
    offset = rng.uniform(0, size - span * fit)
    xy = (points - lo) * fit + offset - 0.5  # continuous pixel coordinates (x, y), pixel centres at integers
    density = np.zeros((size + 1, size + 1), np.float32)
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(density, (np.clip(y0 + dy, 0, size), np.clip(x0 + dx, 0, size)), w)
    alpha = 1.0 - np.exp(-density[:size, :size] * (size * size / len(xy)) * 2.0)
    yy, xx = _grid(size)
    background = rng.uniform(30, 220, 3) + (yy[..., None] - 0.5) * rng.uniform(-80, 80, 3)
    background = background + (xx[..., None] - 0.5) * rng.uniform(-80, 80, 3)
    foreground = rng.uniform(0, 255, 3)
    img = background * (1 - alpha[..., None]) + foreground * alpha[..., None] + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
