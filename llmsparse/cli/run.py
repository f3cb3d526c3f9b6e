"""``llmsparse run``: execute a YAML recipe (a whole pipeline)."""
from __future__ import annotations

from typing import List, Optional

import typer

EXAMPLES = """
Examples:

  llmsparse run recipes/smollm2-wanda-2of4.yaml

  llmsparse run recipes/smollm2-wanda-dsnot-0.6.yaml output=out/other seed=1 overwrite=true
"""


def register(app: typer.Typer) -> None:
    @app.command("run", help="Run a recipe: load a model, apply its pruning steps in order, write the "
                 "result (with the recipe as run), optionally evaluate it against the dense model. "
                 "key=value arguments override the recipe's top-level keys.\n" + EXAMPLES)
    def run_cmd(
        recipe: str = typer.Argument(..., help="Recipe YAML file."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. output=out/x"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ):
        from ..recipe import run_recipe

        run_recipe(recipe, overrides or [], progress=not quiet)
