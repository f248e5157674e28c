"""MLSP feature extraction at full resolution (or resized), batching images of equal size together."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iaakd.config import param
from iaakd.data.images import (
    EncodedImageDataset,
    ImageDataset,
    Preprocess,
    collate_encoded,
    decode_on_device,
    same_size_batches,
)
from iaakd.devices import PRECISIONS, autocast_context
from iaakd.distributed import SINGLE, Ranks
from iaakd.errors import UserError
from iaakd.features import PartWriter, make_table
from iaakd.models import MLSP, WeightsInfo, create_backbone, model_name, normalisation

DECODERS = ("cpu", "gpu")


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str
    weights: str = "auto"
    input_size: int | None = param(None, above=0)  # None: full resolution (the paper); an int: a square
    batch_size: int = param(16, above=0)
    precision: str = param("fp32", choices=PRECISIONS)  # autocast dtype; features are stored as float16
    channels_last: bool = False  # memory format on the device (faster convolutions on GPUs with AMP)
    decode: str = param("cpu", choices=DECODERS)  # cpu: PIL in loader workers; gpu: nvJPEG (full resolution)


@dataclass
class Extractor:
    """A backbone wrapped for MLSP with the preprocessing its weights expect."""

    mlsp: MLSP
    preprocess: Preprocess
    weights: WeightsInfo
    full_name: str
    channels_last: bool = False

    @classmethod
    def create(cls, config: ExtractConfig, device: torch.device) -> Extractor:
        """The extractor of ``config.backbone`` with ``config.weights`` resolved."""
        return cls.around(*create_backbone(config.backbone, config.weights), config, device)

    @classmethod
    def around(
        cls, backbone: nn.Module, weights: WeightsInfo, config: ExtractConfig, device: torch.device
    ) -> Extractor:
        """The extractor of a backbone already built (a trained one: CSKD's aligned backbone), whose weights
        came from ``weights``, with its architecture's normalisation; ``config``'s backbone and weights unread."""
        mean, std = normalisation(backbone)
        mlsp = MLSP(backbone).eval().to(device)
        if config.channels_last:
            mlsp = mlsp.to(memory_format=torch.channels_last)
        return cls(
            mlsp,
            Preprocess(mean=mean, std=std, size=config.input_size),
            weights,
            model_name(backbone),
            config.channels_last,
        )


@dataclass
class HostCopy:
    """One batch's float16 features on their way to the host. On a GPU the copy is asynchronous, into
    pinned memory, so collecting batch k after batch k+1 is queued keeps the device busy between batches
    (no synchronisation per batch); on the CPU it is the tensor itself."""

    indices: torch.Tensor
    host: torch.Tensor
    done: torch.cuda.Event | None = None

    @classmethod
    def start(cls, indices: torch.Tensor, features: torch.Tensor) -> HostCopy:
        if features.device.type != "cuda":
            return cls(indices, features)
        host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
        host.copy_(features, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return cls(indices, host, done)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, float16 features), once the copy has finished."""
        if self.done is not None:
            self.done.synchronize()
        return self.indices.numpy(), self.host.numpy()


_END = object()


def prepared_ahead(
    batches: Iterable, prepare: Callable[..., torch.Tensor], device: torch.device, depth: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields (indices, prepare(*payload)) for each (indices, *payload) of ``batches``, prepared by a
    background thread up to ``depth`` batches ahead. On a GPU the thread has its own CUDA stream, so
    decoding (nvJPEG) and normalising batch k+1 overlap the forward pass of batch k, on the host and on
    the device; the consumer's stream waits for each batch before using it. An error in the thread
    (a corrupt image, say) is raised here, in the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    side_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def hand_over(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            on_stream = torch.cuda.stream(side_stream) if side_stream else contextlib.nullcontext()
            with torch.inference_mode(), on_stream:
                for indices, *payload in batches:
                    images = prepare(*payload)
                    done = None
                    if side_stream is not None:
                        done = torch.cuda.Event()
                        done.record(side_stream)
                    if not hand_over((indices, images, done)):
                        return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            hand_over(error)
            return
        hand_over(_END)

    thread = threading.Thread(target=produce, name="prepare-batches", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            indices, images, done = item
            if done is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(done)
                images.record_stream(consumer)  # its memory is not reused before this stream is done
            yield indices, images
    finally:
        stop.set()
        thread.join()


def loader_dataset(
    paths: Sequence[str], preprocess: Preprocess, config: ExtractConfig
) -> tuple[Dataset, Callable | None]:
    """(dataset, collate function) for the decode mode: decoded uint8 images (cpu), or file bytes (gpu)."""
    if config.decode == "gpu":
        if config.input_size is not None:
            raise UserError("features.decode=gpu works at full resolution only (features.input_size: null)")
        return EncodedImageDataset(paths), collate_encoded
    return ImageDataset(paths, preprocess), None


def input_sizes(sizes: Sequence[tuple[int, int]], config: ExtractConfig) -> list[tuple[int, int]]:
    """The network input size of each image: its own (full resolution) or the configured square."""
    if config.input_size is None:
        return list(sizes)
    return [(config.input_size, config.input_size)] * len(sizes)


def plan_parts(batches: list[list[int]], rows_per_part: int) -> list[list[list[int]]]:
    """Consecutive batches grouped into parts of at least ``rows_per_part`` rows (the last may be
    smaller). The plan depends only on the images and parameters, so a rerun finds the same parts."""
    parts, current, rows = [], [], 0
    for batch in batches:
        current.append(batch)
        rows += len(batch)
        if rows >= rows_per_part:
            parts.append(current)
            current, rows = [], 0
    if current:
        parts.append(current)
    return parts


def extract_features(
    extractor: Extractor,
    paths: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    config: ExtractConfig,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = True,
    batches: list[list[int]] | None = None,
    already_done: int = 0,
    image_ids: Sequence[str] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (row indices, float16 MLSP features) batch by batch, for ``batches`` (default: all images
    in batches of equal size); decoding overlaps compute when workers > 0. A feature that is not finite
    in float16 is an error naming the images (by ``image_ids``, else by path)."""
    names = paths if image_ids is None else image_ids
    if batches is None:
        batches = same_size_batches(input_sizes(sizes, config), config.batch_size)
    with cudnn_benchmark(device.type == "cuda"):  # batches repeat a few shapes: tune each once
        yield from _extract_batches(extractor, paths, names, batches, config, device, num_workers, progress,
                                    already_done)  # fmt: skip


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's kernel search on for the block, then as it was: the process's setting is not ours to keep."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on or previous
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _extract_batches(
    extractor: Extractor, paths: Sequence[str], names: Sequence[str], batches: list[list[int]], config: ExtractConfig,
    device: torch.device, num_workers: int, progress: bool, already_done: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    dataset, collate = loader_dataset(paths, extractor.preprocess, config)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate,
    )
    with (
        torch.inference_mode(),
        tqdm(
            total=already_done + sum(map(len, batches)),
            initial=already_done,
            desc=f"extract {extractor.full_name}",
            disable=not progress,
        ) as bar,
    ):
        in_flight: HostCopy | None = None  # the batch before: its copy to the host overlaps this batch
        for indices, images in prepared_ahead(loader, partial(_prepare, extractor, config, device), device):
            with autocast_context(device, config.precision):
                pooled = extractor.mlsp(images)
            queued = HostCopy.start(indices, pooled.float().half())
            if in_flight is not None:  # the device already has this batch's work: now wait for the last
                yield require_finite_features(*in_flight.result(), names, extractor.full_name, config)
                bar.update(len(in_flight.indices))
            in_flight = queued
        if in_flight is not None:
            yield require_finite_features(*in_flight.result(), names, extractor.full_name, config)
            bar.update(len(in_flight.indices))


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65,504: larger values become inf when stored


def require_finite_features(
    indices: np.ndarray, features: np.ndarray, names: Sequence[str], backbone: str, config: ExtractConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, features) unchanged when every float16 value is finite; else one line naming the
    backbone and the images, before NaN features reach the distiller (where they would read as "loss
    became nan; lower distiller.lr"). Checked on the host copy: no wait on the device per batch."""
    finite = np.isfinite(features).all(axis=1)
    if finite.all():
        return indices, features
    bad = [str(names[index]) for index in indices[~finite]]
    listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    advice = (
        f"features.precision={config.precision} overflowed: try bf16 or fp32"
        if config.precision == "fp16"
        else f"the backbone's values exceed float16's range (+-{FLOAT16_MAX:,.0f}), or it gives NaN: "
        f"check features.weights ({config.weights}) and features.precision ({config.precision})"
    )
    raise UserError(f"extract {backbone}: features of {listed} are NaN or infinite in float16; {advice}")


def _prepare(extractor: Extractor, config: ExtractConfig, device: torch.device, *payload) -> torch.Tensor:
    """A loader batch as the network's input on the device: decoded (gpu decode), normalised, and in the
    model's memory format."""
    images = decode_on_device(*payload, device) if config.decode == "gpu" else payload[0]
    images = extractor.preprocess.normalise(images.to(device, non_blocking=True))
    if extractor.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def extract_to_parts(
    extractor: Extractor,
    paths: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    image_ids: np.ndarray,
    config: ExtractConfig,
    device: torch.device,
    writer: PartWriter,
    metadata: dict,
    num_workers: int = 0,
    progress: bool = True,
    rows_per_part: int = 4096,
    ranks: Ranks = SINGLE,
) -> tuple[int, int]:
    """Extracts every image into parquet parts of about ``rows_per_part`` rows, skipping the parts the
    writer already has (a resumed run); returns (parts done before this run, parts in all).

    Under torchrun each rank takes every ``world``-th part of the plan and writes it into the shared
    work folder; rank 0 then puts the folder in place (:meth:`PartWriter.commit`)."""
    parts = plan_parts(same_size_batches(input_sizes(sizes, config), config.batch_size), rows_per_part)
    done_before = sum(writer.has_part(number) for number in range(len(parts)))
    mine = range(ranks.rank, len(parts), ranks.world)
    todo = [number for number in mine if not writer.has_part(number)]
    done_rows = sum(len(batch) for number in mine if number not in todo for batch in parts[number])
    stream = extract_features(
        extractor,
        paths,
        sizes,
        config,
        device,
        num_workers,
        progress and ranks.is_main,
        batches=[batch for number in todo for batch in parts[number]],
        already_done=done_rows,
        image_ids=image_ids,
    )
    for number in todo:
        ids, vectors = [], []
        for _ in parts[number]:
            indices, pooled = next(stream)
            ids.append(image_ids[indices])
            vectors.append(pooled)
        table = make_table(
            {"image_id": np.concatenate(ids).tolist(), "feature": np.concatenate(vectors)}, metadata
        )
        writer.write(table, number)
    stream.close()
    return done_before, len(parts)
