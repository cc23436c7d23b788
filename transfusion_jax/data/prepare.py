"""`prepare`: turn a manual download into the ArrayRecord files that `tfds.data_source` reads at train time.

With TensorFlow installed (`pip install transfusion_jax[prepare]`) this is exactly the official builder's
`download_and_prepare`. Without it, the official builder class is reused with only its TensorFlow file calls
replaced (`tf.io.gfile` -> `os`/`open`), and DR's `retinopathy_solution.csv` is read from the manual dir instead
of downloaded: features, example keys, labels and image bytes are the builder's own. The resized DR configs
(1M, 250K, btgraham-300) also need `opencv-python-headless`, as in the official builder.

Where to put the files (MANUAL_DIR):
  chexpert:  MANUAL_DIR/CheXpert-v1.0-small/{train.csv, valid.csv, train/, valid/}  (the official download)
  diabetic_retinopathy_detection/<config>:  MANUAL_DIR/{trainLabels.csv, train/*.jpeg, test/*.jpeg,
             sample/*.jpeg, retinopathy_solution.csv}  (Kaggle's train.zip.*, test.zip.* and sample.zip
             unpacked; the solution CSV, image,level,Usage, is the one TFDS downloads from the Kaggle forum)
"""

import importlib.util
import io
import os

DR_CONFIGS = ("original", "1M", "250K", "btgraham-300")
_DR_MANUAL = ("trainLabels.csv", "train", "test", "retinopathy_solution.csv", "sample")
_CHEXPERT_MANUAL = (
    "CheXpert-v1.0-small/train.csv",
    "CheXpert-v1.0-small/valid.csv",
    "CheXpert-v1.0-small/train",
    "CheXpert-v1.0-small/valid",
)


def have_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _check_manual_dir(manual_dir: str, expected: tuple, name: str):
    missing = [p for p in expected if not os.path.exists(os.path.join(manual_dir, p))]
    if missing:
        raise FileNotFoundError(
            f"{name}: manual dir {manual_dir} lacks {missing}; it must hold {list(expected)} "
            f"(see `python -m transfusion_jax.data prepare --help`)."
        )


def _tf_free_builder(name: str, config: str | None, data_dir: str):
    """The official builder class with its TensorFlow file I/O swapped for plain Python (no registration)."""
    import tensorflow_datasets as tfds
    from etils import epath
    from tensorflow_datasets.image_classification import chexpert
    from tensorflow_datasets.image_classification import diabetic_retinopathy_detection as dr

    with tfds.core.registered.skip_registration():
        if name == "chexpert":

            class Builder(chexpert.Chexpert):
                name = "chexpert"

                def _split_generators(self, dl_manager):
                    path = dl_manager.manual_dir
                    return [
                        tfds.core.SplitGenerator(
                            name=split,
                            gen_kwargs={
                                "imgs_path": path,
                                "csv_path": os.path.join(path, chexpert._DATA_DIR, csv_name),
                            },
                        )
                        for split, csv_name in ((tfds.Split.TRAIN, "train.csv"), (tfds.Split.VALIDATION, "valid.csv"))
                    ]

                def _generate_examples(self, imgs_path, csv_path):
                    for key, example in super()._generate_examples(imgs_path, csv_path):
                        example["image"] = epath.Path(example["image"])  # read by epath, not tf.io.gfile
                        yield key, example
        else:

            class Builder(dr.DiabeticRetinopathyDetection):
                name = "diabetic_retinopathy_detection"

                def _split_generators(self, dl_manager):
                    path = dl_manager.manual_dir
                    solution = os.path.join(path, "retinopathy_solution.csv")
                    splits = [
                        ("sample", dict(images_dir_path=os.path.join(path, "sample"))),
                        (
                            "train",
                            dict(
                                images_dir_path=os.path.join(path, "train"),
                                csv_path=os.path.join(path, "trainLabels.csv"),
                                csv_usage=None,
                            ),
                        ),
                        (
                            "validation",
                            dict(images_dir_path=os.path.join(path, "test"), csv_path=solution, csv_usage="Public"),
                        ),
                        (
                            "test",
                            dict(images_dir_path=os.path.join(path, "test"), csv_path=solution, csv_usage="Private"),
                        ),
                    ]
                    return [tfds.core.SplitGenerator(name=split, gen_kwargs=kwargs) for split, kwargs in splits]

                def _generate_examples(self, images_dir_path, csv_path=None, csv_usage=None):
                    if csv_path:
                        yield from super()._generate_examples(images_dir_path, csv_path, csv_usage)
                        return
                    # 'sample': unlabelled images listed from the folder (the official code lists with tf.io.gfile)
                    for fname in sorted(os.listdir(images_dir_path)):
                        if fname.endswith(".jpeg"):
                            yield (
                                fname[:-5],
                                {
                                    "name": fname[:-5],
                                    "label": -1,
                                    "image": self._process_image(os.path.join(images_dir_path, fname)),
                                },
                            )

                def _process_image(self, filepath):
                    with open(filepath, "rb") as f:
                        fobj = io.BytesIO(f.read())
                    if self.builder_config.target_pixels is None:
                        return fobj
                    if self.builder_config.name.startswith("btgraham"):
                        return dr._btgraham_processing(
                            fobj, filepath, self.builder_config.target_pixels, crop_to_radius=True
                        )
                    return dr._resize_image_if_necessary(fobj, self.builder_config.target_pixels)

        return Builder(config=config, data_dir=data_dir, file_format="array_record")


def prepare(name: str, manual_dir: str, data_dir: str, use_tensorflow: bool | None = None) -> str:
    """Prepares `chexpert` or `diabetic_retinopathy_detection/<config>` into `data_dir`; returns the version dir.
    `use_tensorflow=None` uses the official builder when TensorFlow is installed, the TF-free one otherwise."""
    import tensorflow_datasets as tfds

    base, _, config = name.partition("/")
    if base == "chexpert":
        _check_manual_dir(manual_dir, _CHEXPERT_MANUAL, name)
        config = None
    elif base == "diabetic_retinopathy_detection":
        if config not in DR_CONFIGS:
            raise ValueError(f"{name}: give a config, one of diabetic_retinopathy_detection/{{{','.join(DR_CONFIGS)}}}")
        _check_manual_dir(manual_dir, _DR_MANUAL, name)
        if config != "original" and importlib.util.find_spec("cv2") is None:
            raise ImportError(
                f"{name} resizes images with OpenCV: pip install opencv-python-headless "
                f"(or transfusion_jax[prepare]), or use diabetic_retinopathy_detection/original."
            )
    else:
        raise ValueError(f"cannot prepare {name!r}: use chexpert or diabetic_retinopathy_detection/<config>")
    if use_tensorflow is None:
        use_tensorflow = have_tensorflow()
    elif use_tensorflow and not have_tensorflow():
        raise ImportError(
            "the official builder needs TensorFlow: pip install transfusion_jax[prepare] "
            "(tensorflow-cpu, opencv-python-headless), or prepare without it (--tensorflow no)."
        )
    if use_tensorflow:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    else:
        builder = _tf_free_builder(base, config, data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return str(builder.data_dir)
