"""Shared helpers for the store tests: where the build's test tools live."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FERRY_BIN = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))
BUILD_DIR = os.path.dirname(os.path.abspath(FERRY_BIN))


def tool(name):
    """Path of a test tool built by meson under tests/tools/."""
    return os.path.join(BUILD_DIR, "tests", "tools", name)
