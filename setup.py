"""transfusion_jax: JAX/Flax reimplementation of Raghu et al., "Transfusion" (NeurIPS 2019)."""

import setuptools

setuptools.setup(
    name="transfusion_jax",
    version="0.1.0",
    description="Transfer learning for medical imaging, as in Transfusion (Raghu et al. 2019), in JAX/Flax.",
    packages=setuptools.find_packages(include=["transfusion_jax", "transfusion_jax.*"]),
    # The study's shipped source checkpoints (docs/study.md, round 7 §3): data files, so a non-editable install has
    # them too (checked by tests/experiments/test_quickstart.py's installed copy).
    package_data={"transfusion_jax.experiments.study": ["checkpoints/*.npz", "checkpoints/MANIFEST.json"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "jaxlib>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "ml-collections>=1.1",
        "chex>=0.1.92",
        "numpy>=2.0",
        "scikit-learn>=1.5",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "threadpoolctl>=3.1",  # analysis.similarity pins small float64 finishes to one BLAS thread
        "absl-py>=2.1",
        # tensorflow-datasets and what it needs but does not declare.
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6",
        "pillow>=10",
        "array_record>=0.8",  # tfds.data_source reads prepared datasets from ArrayRecord files
        "etils>=1.5",
        "grain>=0.2.18",  # the input pipeline (MapDataset, worker threads/processes)
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.17", "nbformat>=5.10", "nbclient>=0.10", "ipykernel>=6"],
        # Reference frameworks, only for converting ImageNet weights and for the exactness tests.
        "convert": ["torch>=2.9", "torchvision>=0.24", "keras>=3.10", "h5py>=3.10"],
        # Only for `python -m transfusion_jax.data prepare` of the official TFDS DR builder.
        "prepare": ["tensorflow-cpu>=2.18", "opencv-python-headless>=4.9"],
    },
)
