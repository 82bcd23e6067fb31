"""A run_command fake that dispatches by program and records every call."""

import os


class FakeRun:
    """A run_command that hands each argv to the handler of its program (by basename) and keeps
    every call in order: ``run(argv, **kwargs) -> (rc, out, err)``. Unknown programs fail."""

    def __init__(self, **handlers):
        self.handlers = dict((name.replace("_", "-"), handler) for name, handler in handlers.items())
        self.calls = []

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        handler = self.handlers.get(os.path.basename(argv[0]))
        if handler is None:
            return 127, "", f"{argv[0]}: command not found"
        return handler(argv, **kwargs)

    def programs(self):
        """(program, verb) pairs in call order: ('criu', 'dump'), ('cuda-checkpoint', 'lock') ..."""
        out = []
        for argv, _kwargs in self.calls:
            verb = (
                argv[argv.index("--action") + 1] if "--action" in argv else argv[1] if len(argv) > 1 else ""
            )
            out.append((os.path.basename(argv[0]), verb))
        return out
