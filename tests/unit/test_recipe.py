import json

import pytest
import yaml

from llmsparse.cli.main import main
from llmsparse.errors import UserError
from llmsparse.recipe import load_recipe


def test_recipe_overrides_and_validation(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"model": "m", "output": "o", "steps": [{"method": "wanda", "sparsity": "2:4"}]}))
    r = load_recipe(str(p), ["seed=3", "output=elsewhere", "calib=c4:4x16"])
    assert r["seed"] == 3 and r["output"] == "elsewhere" and r["calib"] == "c4:4x16" and r["grouping"] == "layer"
    with pytest.raises(UserError, match="key=value"):
        load_recipe(str(p), ["seed"])
    with pytest.raises(UserError, match="unknown"):
        load_recipe(str(p), ["colour=red"])
    p.write_text(yaml.safe_dump({"model": "m", "output": "o", "steps": [{"sparsity": "2:4"}]}))
    with pytest.raises(UserError, match="needs a 'method'"):
        load_recipe(str(p))


def test_recipe_two_steps_wanda_then_dsnot(tmp_path, tiny_model_dir, capsys):
    p = tmp_path / "r.yaml"
    out = tmp_path / "out"
    p.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "output": str(out), "calib": "c4:4x32", "device": "cpu",
        "steps": [{"method": "wanda", "sparsity": "0.6"},
                  {"method": "dsnot", "init": "existing", "sparsity": "0.6", "skip": "none"}]}))
    assert main(["run", str(p), "-q"]) == 0, capsys.readouterr().err
    rec = json.loads((out / "llmsparse.json").read_text())
    assert [s["method"] for s in rec["steps"]] == ["wanda", "dsnot"]
    swaps = sum(v.get("swaps", 0) for v in rec["steps"][1]["method_info"].values())
    assert swaps > 0
    # DSnoT keeps the sparsity Wanda reached exactly
    assert rec["steps"][0]["sparsity_overall"] == rec["steps"][1]["sparsity_overall"]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["steps"][1]["init"] == "existing"


@pytest.mark.parametrize("name", ["smollm2-wanda-2of4", "smollm2-sparsegpt-0.5", "smollm2-wanda-dsnot-0.6"])
def test_shipped_recipes_run_from_a_fresh_directory(name, tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Each recipe under recipes/, as shipped (its steps and its `output: out/...`), run from a directory without
    `out/` (a fresh clone: `out/` is git-ignored) on the tiny model with small calibration and evaluation: the
    output is written where the recipe says, with the recipe's steps."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / f"{name}.yaml"
    shipped = yaml.safe_load(recipe.read_text())
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(recipe), f"model={tiny_model_dir}", "calib=c4:2x32", "device=cpu",
               "eval={ppl: wikitext2, seqlen: 32, limit: 1}", "-q"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / shipped["output"]
    assert shipped["output"].startswith("out/") and out.is_dir()
    rec = json.loads((out / "llmsparse.json").read_text())
    assert [s["method"] for s in rec["steps"]] == [s["method"] for s in shipped["steps"]]
    assert [s["sparsity"] for s in rec["steps"]] == [str(s["sparsity"]) for s in shipped["steps"]]
