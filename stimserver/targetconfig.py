"""Target configuration: the fields of API.md §7 and their defaults."""
from __future__ import annotations

DEFAULT_TARGET_CONFIG: dict = {
    "teacher_prompt": None,
    "student_prompt": None,
    "generators": [],
    "model_name": None,
    "num_traj_per_stimulus": 1,
    "max_concurrency": 10,
    "temperature": 1.0,
    "max_tokens": None,
    "extra_kwargs": {},
}

DEFAULT_BASE_MODEL = "Qwen/Qwen3-32B"
