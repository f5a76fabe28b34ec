"""The one LightningDataModule of bindense, built by Hydra from ``conf/data/<name>.yaml``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from bindense.data.base import DenseDataset
from bindense.data.formats import Format, get_format
from bindense.data.scene import CLASS_NAMES as SYNTHETIC_CLASSES
from bindense.data.scene import NUM_CLASSES as SYNTHETIC_NUM_CLASSES
from bindense.data.synthetic import ensure_synthetic
from bindense.data.transforms import DensePipeline
from bindense.data.verify import MODES as VERIFY_MODES
from bindense.data.verify import verify_dataset
from bindense.tasks import task_names

log = logging.getLogger(__name__)

_STAGES = ("train", "val", "test")


def _plain(x: Any) -> Any:
    """OmegaConf containers -> plain Python (picklable, dict/list semantics)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return x


def _for_stage(options: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Options whose value is a ``{train: .., val: .., test: ..}`` mapping are resolved per stage."""
    out = {}
    for k, v in options.items():
        if isinstance(v, Mapping) and v and set(v) <= set(_STAGES):
            v = v.get(stage, v.get("val"))
        out[k] = v
    return out


class DenseDataModule(LightningDataModule):
    """Datasets, augmentation pipelines and loaders of one dense-prediction benchmark.

    Args:
        name: config name (``synthetic``, ``ade20k``, ...).
        root: dataset directory (for synthetic data: the cache directory, generated on first use).
        layout: on-disk format, a name in :data:`bindense.data.formats.FORMATS` (docs/FORMATS.md).
        tasks: task names returned per sample (subset of ``seg, depth, normals, edge, parts, sal``).
        num_classes: segmentation classes (None without ``seg``); num_parts: human-part classes or None.
        max_depth / min_depth / depth_crop: depth protocol (read by the model and metrics, not used here).
        ignore_index: label of ignored pixels (255).
        batch_size / eval_batch_size / num_workers: loader settings (eval batch defaults to batch size).
        crop_size: ``[H, W]`` train crop (used when ``train_aug`` has no ``crop`` key).
        train_split / val_split / test_split: split names or files of the layout (test defaults to val).
        train_aug / val_aug: augmentation mappings, see :mod:`bindense.data.transforms`.
        options: extra dataset constructor arguments; a ``{train:, val:, test:}`` value is chosen per split.
        synthetic: ``{num_train, num_val, seed, height, width}`` to generate ``root`` (None for real data).
        pin_memory / drop_last: loader settings (drop_last for the train loader only).
        class_names: optional override of the class names.
        verify: pre-flight check of every split at set-up, ``quick`` (file headers), ``full`` (decode every
            sample) or ``none``; see :mod:`bindense.data.verify` and docs/DATA.md.
        verify_cache_dir: where passed checks are remembered (None: no cache).
    """

    def __init__(
        self,
        name: str,
        root: str | None,
        layout: str,
        tasks: Sequence[str],
        num_classes: int | None = None,
        num_parts: int | None = None,
        max_depth: float | None = None,
        min_depth: float | None = None,
        depth_crop: str | None = None,
        ignore_index: int = 255,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        crop_size: Sequence[int] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        train_aug: Mapping[str, Any] | None = None,
        val_aug: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = True,
        class_names: Sequence[str] | None = None,
        verify: str = "quick",
        verify_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if verify not in VERIFY_MODES:
            raise ValueError(f"data.verify={verify!r}: expected one of {list(VERIFY_MODES)}")
        self.format: Format = get_format(layout)
        tasks = list(_plain(tasks))
        bad = [t for t in tasks if t not in task_names()]
        if bad or not tasks:
            raise ValueError(f"invalid tasks {tasks}; choose from {task_names()}")
        if "seg" in tasks and not num_classes:
            raise ValueError("tasks include 'seg' but num_classes is not set")
        self.synthetic = dict(_plain(synthetic)) if synthetic else None
        if self.synthetic is not None:
            if "seg" in tasks and num_classes != SYNTHETIC_NUM_CLASSES:
                raise ValueError(f"synthetic scenes have {SYNTHETIC_NUM_CLASSES} classes, num_classes={num_classes}")
            if root is None:
                s = self.synthetic
                root = str(Path(".cache") / "synthetic" / f"{layout}_s{s.get('seed', 0)}_{s.get('num_train')}")
        if root is None:
            raise ValueError(f"data.root is not set for dataset '{name}'")
        self.name = name
        self.root = Path(str(root)).expanduser()
        self.layout = layout
        self.tasks = tasks
        self.num_classes = num_classes
        self.num_parts = num_parts
        self.max_depth = max_depth
        self.min_depth = min_depth
        self.depth_crop = depth_crop
        self.ignore_index = ignore_index
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.crop_size = list(_plain(crop_size)) if crop_size is not None else None
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        train_aug = dict(_plain(train_aug) or {})
        if "crop" not in train_aug and self.crop_size is not None:
            train_aug["crop"] = self.crop_size
        self.train_aug = train_aug
        self.val_aug = dict(_plain(val_aug) or {})
        self.options = dict(_plain(options) or {})
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.class_names = list(class_names) if class_names else self._default_class_names()
        self.verify = verify
        self.verify_cache_dir = verify_cache_dir
        self.datasets: dict[str, Dataset] = {}
        self.save_hyperparameters(logger=False)

    # ------------------------------------------------------------------------------------------------------
    def _default_class_names(self) -> list[str] | None:
        if "seg" not in self.tasks:
            return None
        if self.synthetic is not None:
            return list(SYNTHETIC_CLASSES)
        known = self.format.class_names
        if known is not None and self.num_classes == len(known):
            return list(known)
        return None

    def prepare_data(self) -> None:
        """Generate the synthetic cache if needed (real datasets are never downloaded)."""
        if self.synthetic is not None:
            ensure_synthetic(self.root, self.layout, **self.synthetic)

    def build_dataset(self, stage: str, augment: bool | None = None) -> DenseDataset:
        """The dataset of ``stage`` (``train`` / ``val`` / ``test``) with its pipeline."""
        augment = stage == "train" if augment is None else augment
        pipeline = DensePipeline(
            self.train_aug if stage == "train" else self.val_aug, train=augment, ignore_index=self.ignore_index
        )
        kwargs: dict[str, Any] = dict(tasks=self.tasks, transform=pipeline, ignore_index=self.ignore_index)
        if self.format.num_classes is not None:
            kwargs["num_classes"] = self.num_classes or self.format.num_classes
        if self.format.parts and self.num_parts:
            kwargs["num_parts"] = self.num_parts
        kwargs.update(_for_stage(self.options, stage))
        return self.format.reader(self.root, self.splits[stage], **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Index the splits of ``stage`` (fails fast with the expected layout when data is missing)."""
        if self.synthetic is not None:
            self.prepare_data()  # no-op when the cache is complete; covers use without a Trainer
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: ("train", "val", "test"),
        }.get(stage, ("train", "val", "test"))
        for split in wanted:
            if split not in self.datasets:
                if split == "test" and self.splits["test"] == self.splits["val"] and "val" in self.datasets:
                    self.datasets["test"] = self.datasets["val"]
                else:
                    self.datasets[split] = self.build_dataset(split)
                    self.verify_split(split)
        names = getattr(self.datasets.get("val") or self.datasets.get("train"), "class_names", None)
        if self.class_names is None and names and self.num_classes and len(names) == self.num_classes:
            self.class_names = list(names)

    def verify_split(self, split: str, mode: str | None = None) -> dict[str, Any]:
        """Pre-flight check of one split (``data.verify``), in the loader workers; raises on bad files."""
        return verify_dataset(
            self.datasets[split],
            mode or self.verify,
            workers=self.num_workers,
            cache_dir=self.verify_cache_dir,
            label=f"{self.name}/{self.splits[split]}",
        )

    # ------------------------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=train and self.drop_last and len(self.datasets[split]) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    @property
    def train_dataset(self) -> Dataset | None:
        return self.datasets.get("train")

    @property
    def val_dataset(self) -> Dataset | None:
        return self.datasets.get("val")

    @property
    def test_dataset(self) -> Dataset | None:
        return self.datasets.get("test")

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.datasets.items()}
        return (
            f"DenseDataModule(name={self.name!r}, layout={self.layout!r}, root='{self.root}', "
            f"tasks={self.tasks}, sizes={sizes})"
        )

    __str__ = __repr__  # Lightning's __str__ would build every dataloader
