"""Offline lm-eval task definitions (YAML, lm-eval's own format) and their local data loader."""

from llmsparse.eval.tasks._local import LOCAL_TASKS, PACKAGE_DATA_DIR, TASKS_DIR, find_data_file

__all__ = ["LOCAL_TASKS", "PACKAGE_DATA_DIR", "TASKS_DIR", "find_data_file"]
