"""The serving path never imports torch: `pip install .` without the training extras can serve the app."""

import subprocess
import sys
import textwrap


def test_the_recognizer_web_app_cli_and_card_import_and_predict_without_torch():
    script = textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from digitrecognizer import Recognizer, card, constants, preprocess, segment, synth
        import digitrecognizer.web.app, digitrecognizer.cli, digitrecognizer.evaluate, digitrecognizer.store
        rec = Recognizer()
        print(rec.predict(np.pad(np.full((20, 4), 255, np.uint8), 4)).input28.shape)
        assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(28, 28)"
