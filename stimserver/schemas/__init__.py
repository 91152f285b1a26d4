"""Pydantic models of the API: request bodies, target config, generators, answers.

A rule about what a valid body or generator is lives here and nowhere else; handlers
parse with these models, job plans parse stored configs with them, and the OpenAPI
components are generated from them (``openapi.py``).
"""
from .targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG, DEFAULT_TEMPLATE

__all__ = ["DEFAULT_BASE_MODEL", "DEFAULT_TARGET_CONFIG", "DEFAULT_TEMPLATE"]
