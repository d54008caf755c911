"""The core may not import I/O, clocks or randomness: prove it in a fresh interpreter."""

import subprocess
import sys
import textwrap

FORBIDDEN = ("asyncio", "nats", "orjson", "time", "random", "uuid", "socket")


def test_core_imports_nothing_impure() -> None:
    code = textwrap.dedent(
        f"""
        import sys, importlib.abc
        forbidden = {FORBIDDEN!r}
        for name in list(sys.modules):
            if name.split(".")[0] in forbidden:
                del sys.modules[name]

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] in forbidden:
                    raise ImportError(f"the pure core imported {{fullname}}")
                return None

        sys.meta_path.insert(0, Block())
        import durablefuture.core
        import durablefuture.core.replay, durablefuture.core.orchestration
        import durablefuture.core.retry, durablefuture.core.state, durablefuture.core.definitions
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
        assert not loaded, loaded
        print("pure")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pure"
