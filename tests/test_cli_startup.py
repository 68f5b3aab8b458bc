"""The CLI starts without torch (~2 s): commands that need no model (ingest, query, report) stay quick."""

import subprocess
import sys


def test_cli_import_does_not_load_torch():
    code = "import sys, itaudit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tune_names_still_resolve():
    import itaudit.tune as tune

    assert tune.DEFAULT_LR["lora"] == 2e-4 and callable(tune.tune) and tune.TuneConfig.__name__ == "TuneConfig"
