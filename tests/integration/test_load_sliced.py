"""A sliced checkpoint loads through llmsparse.load in a fresh process (the loader registers the
sliced model classes itself) and gives the same logits as the in-memory sliced model."""
import subprocess
import sys

import torch


def test_llmsparse_load_sliced_fresh_process(tmp_path, tiny_model_dir, capsys):
    from llmsparse.cli.main import main

    out = tmp_path / "sliced"
    rc = main(["slice", str(tiny_model_dir), "--ratio", "0.25", "--calib", "c4:4x32", "--device", "cpu", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    code = (
        "import torch, sys, llmsparse\n"
        f"m = llmsparse.load({str(out)!r})\n"
        "assert 'llmsparse.slicing' in sys.modules\n"
        "ids = torch.arange(12).view(1, 12) % m.config.vocab_size\n"
        "with torch.no_grad(): print(float(m(ids).logits.double().abs().sum()))\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    total, nparams = r.stdout.split()
    from transformers import AutoModelForCausalLM

    import llmsparse.slicing  # noqa: F401

    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    m = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.arange(12).view(1, 12) % m.config.vocab_size
    with torch.no_grad():
        assert abs(float(m(ids).logits.double().abs().sum()) - float(total)) < 1e-6 * float(total)
    assert int(nparams) < sum(p.numel() for p in dense.parameters())
