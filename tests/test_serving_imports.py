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


def test_no_module_of_the_package_imports_itself_back_at_import_time():
    """Module-level imports between the package's modules form no cycle (imports inside functions, which
    load optional dependencies late, are not followed)."""
    import ast
    from pathlib import Path

    import digitrecognizer

    root = Path(digitrecognizer.__file__).parent
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}

    def cycle_from(start, seen=()):
        for nxt in graph[start]:
            if nxt in seen:
                return [*seen, nxt]
            found = cycle_from(nxt, (*seen, nxt))
            if found:
                return found
        return None

    cycles = [c for name in graph if (c := cycle_from(name, (name,))) and c[-1] == name]
    assert not cycles, f"import cycles: {cycles[:3]}"
