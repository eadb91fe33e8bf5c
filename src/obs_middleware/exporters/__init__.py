"""Exporters: where finished records go. Each is called only from the export worker thread."""

from .console import ConsoleExporter
from .jsonl import JsonlExporter
from .memory import MemoryExporter

__all__ = ["ConsoleExporter", "JsonlExporter", "MemoryExporter"]
