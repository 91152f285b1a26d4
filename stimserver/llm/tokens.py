"""Counting the input tokens of a rollout's requests, for its cost estimate (``llm.estimate``).

A trajectory request is split in two: its *prefix* — the tools, the system prompt and every
turn before the last message, what ``chat.cache_breakpoints`` marks for the prompt cache — and
its *stimulus*, the last message (the question). Stimuli that share a prefix share its count.

Three ways to count, best first; the counts name the one used (``counted_by``):

* ``anthropic_count_tokens``: for an Anthropic model (``LLMConfig.provider_for``), the Messages
  API's ``POST /v1/messages/count_tokens`` through the official SDK, with the request a
  trajectory sends (system, turns and tools converted by ``llm.chat``, breakpoints included).
  A prefix is counted as a request of the prefix plus a one-character user turn, and a stimulus
  as its whole request minus that, so prefix + stimulus is each counted request's exact count.
  Each distinct prefix (the ``MAX_PREFIXES`` most common) is counted once, and ``EXACT_SAMPLE``
  stimuli spread evenly over the file. It goes only to the configured Anthropic URL
  (``ANTHROPIC_BASE_URL``, else https://api.anthropic.com) with its key; any failure (no key,
  the network, a timeout, an answer the API refuses) falls back to the approximation and says
  why, with keys redacted: an estimate never fails for it.
* ``tokenizer``: for any other model, its own ``tokenizer.json`` when one is on this machine,
  found as bakes find models (``train.resolve``: ``STIMSERVER_MODELS_DIR``, then the local
  Hugging Face cache; never downloaded), read with the optional ``tokenizers`` package. Each
  message counts its text's tokens plus ``MESSAGE_OVERHEAD`` (the chat template's role and
  separator tokens), tools their JSON, and each stimulus ``REPLY_PRIMING`` more (the start of
  the reply the server adds); ``TOKENIZER_SAMPLE`` stimuli are counted.
* ``approximation``: ``approx_tokens`` = ceil(UTF-8 bytes / 4) per text, the same overheads;
  every stimulus read is counted.

Stimuli not counted one by one are scaled by the UTF-8 length of their text at the counted
ones' tokens per byte; a prefix beyond the ``MAX_PREFIXES`` counted, by the counted prefixes'
tokens per byte. A stimuli file of more than ``MAX_SCAN`` lines is read at ``MAX_SCAN`` lines
spread evenly over it, and what they hold is scaled to every line.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..config import AnthropicCache
from ..store import lineindex
from ..store.output import open_pair
from ..train.resolve import ModelNotFound, resolve_model
from .chat import anthropic_messages, anthropic_tools, cache_breakpoints
from .describe import clip
from .sdk import preload

if TYPE_CHECKING:
    import anthropic

    from .providers import LLMConfig
else:
    from .sdk import anthropic

__all__ = ["approx_tokens", "BYTES_PER_TOKEN", "MESSAGE_OVERHEAD", "REPLY_PRIMING", "EXACT_SAMPLE",
           "TOKENIZER_SAMPLE", "MAX_SCAN", "MAX_PREFIXES", "COUNT_TIMEOUT", "Prefix", "Stimulus", "Scan", "TokenCounts",
           "RequestOf", "scan_stimuli", "count_tokens", "find_tokenizer", "ANTHROPIC", "TOKENIZER", "APPROXIMATION"]

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 5
"""Tokens a chat template adds around each message (ChatML: ``<|im_start|>``, the role, a newline,
``<|im_end|>``, a newline), for the tokenizer and the approximation."""
REPLY_PRIMING = 3
"""Tokens that open the assistant's reply (``<|im_start|>assistant`` and a newline), counted with each stimulus."""
EXACT_SAMPLE = 64
TOKENIZER_SAMPLE = 1024
MAX_PREFIXES = 8
MAX_SCAN = 20_000
COUNT_TIMEOUT = 30.0
"""Seconds the Anthropic counting may take in all before the estimate falls back to the approximation."""
COUNT_CONCURRENCY = 4

ANTHROPIC = "anthropic_count_tokens"
TOKENIZER = "tokenizer"
APPROXIMATION = "approximation"

_PROBE = {"role": "user", "content": "."}
_PLACEHOLDER_KEY = "stimserver-no-key"  # as llm.providers sends to a keyless base URL

Message = dict[str, Any]
Tools = list[dict[str, Any]] | None
RequestOf = Callable[[dict[str, Any]], tuple[list[Message], Tools]]
"""A stim line → the messages and tools its trajectory requests send (``jobs.rollout``'s rule)."""


def approx_tokens(text: str) -> int:
    """ceil(UTF-8 bytes / 4): a documented approximation of a text's token count (0 for "").

    About four bytes per token is the usual rate of BPE tokenizers on English text; other
    scripts and code run denser, so an estimate made with it says so (``counted_by``).
    """
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


# -- reading the stimuli -----------------------------------------------------------------------

@dataclass
class Prefix:
    """One distinct prefix: its messages and tools, how many scanned stimuli have it, its text's bytes."""

    messages: list[Message]
    tools: Tools
    stimuli: int = 0
    nbytes: int = 0

    @property
    def empty(self) -> bool:
        return not self.messages and not self.tools


@dataclass(frozen=True)
class Stimulus:
    """One scanned stim line: its line number, its prefix (an index into ``Scan.prefixes``), its last message."""

    line: int
    prefix: int
    tail: Message
    nbytes: int


@dataclass
class Scan:
    """What the stimuli file holds: its line count and the lines read (all, or ``MAX_SCAN`` spread over it)."""

    lines: int
    stimuli: list[Stimulus] = field(default_factory=list)
    prefixes: list[Prefix] = field(default_factory=list)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif part is not None:
                parts.append(orjson.dumps(part, default=str).decode())
        return "\n".join(parts)
    return str(content)


def message_text(message: Message) -> str:
    """The text a message's tokens come from: its content, and its tool calls as JSON."""
    text = _content_text(message.get("content"))
    calls = message.get("tool_calls")
    if calls:
        text += orjson.dumps(calls, default=str).decode()
    return text


def _tools_text(tools: Tools) -> str:
    return orjson.dumps(tools, default=str).decode() if tools else ""


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when ``count >= total``)."""
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


def scan_stimuli(job_dir: Path, data_name: str, index_name: str, request_of: RequestOf,
                 max_scan: int = MAX_SCAN) -> Scan | None:
    """The stimuli of a line file (a stim output, or a rollout's frozen copy); None when it is missing. Blocking."""
    pair = open_pair(job_dir, data_name, index_name)
    if pair is None:
        return None
    data_fd, idx_fd = pair
    try:
        lines = lineindex.count_entries(idx_fd)
        scan = Scan(lines)
        known: dict[bytes, int] = {}
        for line in _spread(lines, max_scan):
            begin, end = lineindex.read_span(idx_fd, line, line + 1)
            raw = os.pread(data_fd, end - begin, begin)
            messages, tools = request_of(lineindex.parse_line(raw, line))
            head, tail = messages[:-1], messages[-1] if messages else {"role": "user", "content": ""}
            key = orjson.dumps([head, tools or None], option=orjson.OPT_SORT_KEYS, default=str)
            pid = known.get(key)
            if pid is None:
                pid = known[key] = len(scan.prefixes)
                text = "".join(message_text(m) for m in head) + _tools_text(tools)
                scan.prefixes.append(Prefix(list(head), tools or None, 0, _nbytes(text)))
            scan.prefixes[pid].stimuli += 1
            tail = tail if isinstance(tail, dict) else {"role": "user", "content": str(tail)}
            scan.stimuli.append(Stimulus(line, pid, tail, _nbytes(message_text(tail))))
        return scan
    finally:
        os.close(data_fd)
        os.close(idx_fd)


# -- the counts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenCounts:
    """The input tokens of a rollout's stimuli, one trajectory request each.

    ``prefixes`` are (stimuli that have it, its tokens), the most common first, the stimuli
    scaled to ``stimuli``; ``stimulus_tokens`` is every stimulus's own part, summed (scaled
    likewise). ``counted`` stimuli were counted one by one. ``fallback`` says the intended
    method failed and the approximation counted instead (``notes`` says why).
    """

    counted_by: str
    stimuli: int
    scanned: int
    counted: int
    prefixes: tuple[tuple[float, int], ...]
    stimulus_tokens: float
    notes: tuple[str, ...] = ()
    tokenizer: str | None = None
    fallback: bool = False


def _assemble(scan: Scan, prefix_tokens: dict[int, int], stimulus_tokens: dict[int, int], counted_by: str,
              notes: list[str], *, tokenizer: str | None = None, fallback: bool = False) -> TokenCounts:
    """The counts of ``scan`` from the prefixes and stimuli (positions in ``scan.stimuli``) counted."""
    counted_bytes = sum(scan.prefixes[p].nbytes for p in prefix_tokens)
    per_byte = sum(prefix_tokens.values()) / counted_bytes if counted_bytes else 1 / BYTES_PER_TOKEN
    tokens = {pid: prefix_tokens.get(pid, round(p.nbytes * per_byte)) for pid, p in enumerate(scan.prefixes)}
    if len(prefix_tokens) < len(scan.prefixes):
        notes.append(f"{len(scan.prefixes) - len(prefix_tokens)} of {len(scan.prefixes)} distinct prefixes scaled "
                     f"by their length at {per_byte:.3f} tokens per byte")
    sample_bytes = sum(scan.stimuli[i].nbytes for i in stimulus_tokens)
    sample_tokens = sum(stimulus_tokens.values())
    rest = [s for i, s in enumerate(scan.stimuli) if i not in stimulus_tokens]
    scaled: float
    if not stimulus_tokens:
        scaled = sum(-(-s.nbytes // BYTES_PER_TOKEN) + MESSAGE_OVERHEAD + REPLY_PRIMING for s in rest)
    elif sample_bytes:
        scaled = sum(s.nbytes for s in rest) * sample_tokens / sample_bytes
    else:
        scaled = len(rest) * sample_tokens / len(stimulus_tokens)
    if rest and stimulus_tokens:
        rate = f"{sample_tokens / sample_bytes:.3f} tokens per byte" if sample_bytes else "their mean"
        notes.append(f"{len(stimulus_tokens)} of {len(scan.stimuli)} stimuli read counted one by one; the other "
                     f"{len(rest)} scaled by their UTF-8 length at {rate}")
    scale = scan.lines / len(scan.stimuli) if scan.stimuli else 0.0
    if scan.stimuli and len(scan.stimuli) < scan.lines:
        notes.append(f"{len(scan.stimuli)} of {scan.lines} lines read, spread evenly over the file, and scaled to "
                     "all of them")
    order = sorted(range(len(scan.prefixes)), key=lambda p: -scan.prefixes[p].stimuli)
    return TokenCounts(counted_by, scan.lines, len(scan.stimuli), len(stimulus_tokens),
                       tuple((scan.prefixes[p].stimuli * scale, tokens[p]) for p in order),
                       (sample_tokens + scaled) * scale, tuple(notes), tokenizer, fallback)


def _pick(scan: Scan, max_prefixes: int, sample: int) -> tuple[list[int], list[int]]:
    """(the prefixes to count, the stimuli to count): the most common prefixes; stimuli spread over those."""
    order = sorted(range(len(scan.prefixes)), key=lambda p: -scan.prefixes[p].stimuli)
    prefixes = order[:max_prefixes]
    chosen = set(prefixes)
    eligible = [i for i, s in enumerate(scan.stimuli) if s.prefix in chosen]
    return prefixes, [eligible[j] for j in _spread(len(eligible), sample)]


def _text_tokens(count: Callable[[str], int], messages: Sequence[Message], tools: Tools) -> int:
    return sum(count(message_text(m)) + MESSAGE_OVERHEAD for m in messages) + (count(_tools_text(tools))
                                                                              if tools else 0)


def _by_text(scan: Scan, count: Callable[[str], int], max_prefixes: int, sample: int, counted_by: str,
             notes: list[str], **kwargs: Any) -> TokenCounts:
    prefixes, stimuli = _pick(scan, max_prefixes, sample)
    prefix_tokens = {p: _text_tokens(count, scan.prefixes[p].messages, scan.prefixes[p].tools) for p in prefixes}
    stimulus_tokens = {i: _text_tokens(count, [scan.stimuli[i].tail], None) + REPLY_PRIMING for i in stimuli}
    return _assemble(scan, prefix_tokens, stimulus_tokens, counted_by, notes, **kwargs)


def approximate(scan: Scan, notes: Sequence[str] = (), *, fallback: bool = False) -> TokenCounts:
    """Every stimulus read and every prefix counted by ``approx_tokens``. Blocking (CPU)."""
    return _by_text(scan, approx_tokens, len(scan.prefixes), len(scan.stimuli), APPROXIMATION, list(notes),
                    fallback=fallback)


# -- a model's own tokenizer ---------------------------------------------------------------------

def find_tokenizer(model: str, models_dirs: Sequence[Path], hub_cache: Path | None = None) -> Path | None:
    """The ``tokenizer.json`` of ``model`` on this machine (found as bakes find models), or None. Blocking."""
    try:
        resolved = resolve_model(model, models_dirs=models_dirs, hub_cache=hub_cache)
    except ModelNotFound:
        return None
    path = resolved.path / "tokenizer.json"
    return path if path.is_file() else None


def _by_tokenizer(scan: Scan, path: Path) -> TokenCounts:
    """Counts with the tokenizer at ``path``; ImportError without the ``tokenizers`` package. Blocking (CPU)."""
    from tokenizers import Tokenizer  # optional: only needed for a local model with a tokenizer.json

    tokenizer = Tokenizer.from_file(str(path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    return _by_text(scan, count, MAX_PREFIXES * 8, TOKENIZER_SAMPLE, TOKENIZER, [], tokenizer=str(path))


# -- the Anthropic API ---------------------------------------------------------------------------

def _anthropic_request(messages: list[Message], tools: Tools, cache: AnthropicCache) -> dict[str, Any]:
    """``messages.count_tokens``'s arguments for a conversation, shaped as ``chat.create_chat_message`` sends it."""
    system, turns = anthropic_messages(messages)
    sent_system, sent_tools, turns = cache_breakpoints(system, anthropic_tools(tools) if tools else None, turns,
                                                       cache)
    kwargs: dict[str, Any] = {"messages": turns}
    if sent_system is not None:
        kwargs["system"] = sent_system
    if sent_tools:
        kwargs["tools"] = sent_tools
    return kwargs


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every secret in it replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _all(calls: list[Coroutine[Any, Any, int]]) -> list[int]:
    """Every call's result; on the first failure (or a timeout) the others are cancelled and awaited, so none
    is left talking to a client that is being closed."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _by_anthropic(scan: Scan, model: str, config: LLMConfig) -> TokenCounts:
    """Counts through ``POST /v1/messages/count_tokens``; raises whatever the SDK raises."""
    key = config.anthropic_api_key or (_PLACEHOLDER_KEY if config.anthropic_base_url else None)
    if key is None:
        raise LookupError("no ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL) is set")
    await preload("anthropic")
    # Explicit key and base URL, as llm.providers builds its client: the SDK reads nothing from the env.
    client = anthropic.AsyncAnthropic(api_key=key, base_url=config.anthropic_base_url or "https://api.anthropic.com",
                                      timeout=min(config.timeout, COUNT_TIMEOUT), max_retries=2)
    gate = asyncio.Semaphore(COUNT_CONCURRENCY)

    async def count(messages: list[Message], tools: Tools) -> int:
        async with gate:
            answer = await client.messages.count_tokens(model=model,
                                                        **_anthropic_request(messages, tools, config.anthropic_cache))
        tokens = getattr(answer, "input_tokens", None)
        if not isinstance(tokens, int) or tokens < 0:
            raise ValueError("the count_tokens answer has no input_tokens")
        return tokens

    try:
        prefixes, stimuli = _pick(scan, MAX_PREFIXES, EXACT_SAMPLE)
        counted = await _all([count([*scan.prefixes[p].messages, _PROBE], scan.prefixes[p].tools)
                              for p in prefixes if not scan.prefixes[p].empty])
        prefix_tokens = dict.fromkeys(prefixes, 0)
        prefix_tokens.update(zip([p for p in prefixes if not scan.prefixes[p].empty], counted, strict=True))
        wholes = await _all([count([*scan.prefixes[scan.stimuli[i].prefix].messages, scan.stimuli[i].tail],
                                   scan.prefixes[scan.stimuli[i].prefix].tools) for i in stimuli])
    finally:
        await client.close()
    stimulus_tokens = {i: max(0, whole - prefix_tokens[scan.stimuli[i].prefix])
                       for i, whole in zip(stimuli, wholes, strict=True)}
    return await asyncio.to_thread(_assemble, scan, prefix_tokens, stimulus_tokens, ANTHROPIC, [])


async def count_tokens(scan: Scan, model: str, config: LLMConfig, *, models_dirs: Sequence[Path],
                       hub_cache: Path | None = None, timeout: float = COUNT_TIMEOUT) -> TokenCounts:
    """The counts of ``scan`` for ``model``, by the best method there is (see the module docstring).

    Never raises for the counting itself: a failed exact count falls back to the approximation.
    """
    if config.provider_for(model) == "anthropic":
        try:
            return await asyncio.wait_for(_by_anthropic(scan, model, config), timeout)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the estimate goes on, approximated
            if isinstance(e, TimeoutError):
                why = f"it did not answer within {timeout:g} s"
            else:
                why = clip(f"{type(e).__name__}: {e}")
            why = redact(why, [config.anthropic_api_key, config.openai_api_key])
            note = f"Anthropic's count_tokens failed ({why}); the tokens are approximated"
            return await asyncio.to_thread(approximate, scan, [note], fallback=True)
    path = await asyncio.to_thread(find_tokenizer, model, models_dirs, hub_cache)
    if path is not None:
        try:
            return await asyncio.to_thread(_by_tokenizer, scan, path)
        except ImportError:
            note = f"{path} was found, but the tokenizers package is not installed; the tokens are approximated"
            return await asyncio.to_thread(approximate, scan, [note], fallback=True)
        except Exception as e:  # noqa: BLE001 - a tokenizer file it cannot read: approximate
            note = f"the tokenizer {path} could not be used ({clip(str(e))}); the tokens are approximated"
            return await asyncio.to_thread(approximate, scan, [note], fallback=True)
    note = f"no tokenizer.json of model {model!r} on this machine (STIMSERVER_MODELS_DIR, the Hugging Face cache)"
    return await asyncio.to_thread(approximate, scan, [note])
