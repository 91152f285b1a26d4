"""Export formats: the stored lines as they are, or rewritten one by one into another row shape.

``raw`` is the stored bytes (served straight from the file). The others parse each
line and write one compact JSON row per line, or none:

- ``questions`` (stim): ``{"stimulus_id", "question"}``.
- ``sft`` (rollout): ``{"messages": [<conditioned stimulus messages>, {"role": "assistant",
  "content": <response.content>}]}`` — the chat rows TRL's SFTTrainer and OpenAI-style
  fine-tuning read. Failed trajectories (no ``response`` or no content) are left out.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

__all__ = ["FORMATS", "Converter", "converter", "convert_chunks", "questions_row", "sft_row"]

Row = dict[str, Any]
Converter = Callable[[Row], Row | None]


def questions_row(line: Row) -> Row | None:
    return {"stimulus_id": line.get("stimulus_id"), "question": line.get("question")}


def _messages(stimulus: object) -> list[Any]:
    if isinstance(stimulus, dict):
        messages = stimulus.get("messages")
        if isinstance(messages, list):
            return list(messages)
    return []


def sft_row(line: Row) -> Row | None:
    """A trajectory → one chat row; None for a failed one (no response content)."""
    response = line.get("response")
    if isinstance(response, dict):
        content = response.get("content")
    elif isinstance(response, str):  # the documented (older) shape: the response as a string
        content = response
    else:
        content = None
    if content is None or line.get("error"):
        return None
    prompt = _messages(line.get("conditioned_stimulus")) or _messages(line.get("unconditioned_stimulus"))
    return {"messages": [*prompt, {"role": "assistant", "content": content}]}


# format → (job kinds it applies to, converter); None: the stored bytes
FORMATS: dict[str, tuple[tuple[str, ...], Converter | None]] = {
    "raw": (("stim", "rollout"), None),
    "questions": (("stim",), questions_row),
    "sft": (("rollout",), sft_row),
}


def converter(fmt: str, kind: str) -> Converter | None:
    """The converter of ``fmt`` for ``kind``; ValueError saying which formats ``kind`` has."""
    entry = FORMATS.get(fmt)
    if entry is None or kind not in entry[0]:
        allowed = [name for name, (kinds, _) in FORMATS.items() if kind in kinds]
        raise ValueError(f"format must be one of {', '.join(allowed)} for {kind} output, not {fmt!r}")
    return entry[1]


def convert_chunks(chunks: Iterable[bytes], convert: Converter) -> Iterator[bytes]:
    """Whole-line chunks of stored data → chunks of converted rows (one JSON object a line)."""
    tail = b""
    for chunk in chunks:
        buf = tail + chunk
        cut = buf.rfind(b"\n") + 1
        tail = buf[cut:]
        out: list[bytes] = []
        for raw in buf[:cut].splitlines():
            row = convert(orjson.loads(raw))
            if row is not None:
                out.append(orjson.dumps(row))
        if out:
            out.append(b"")
            yield b"\n".join(out)
