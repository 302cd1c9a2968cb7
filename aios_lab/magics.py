"""``%aios`` / ``%%aios``: parse the line, call the verb, hand back what it returns to display."""

from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, magics_class

from .verbs import Context, run


@magics_class
class AiosMagics(Magics):
    """The ``%aios VERB ...`` line magic and ``%%aios VERB ...`` cell magic."""

    @line_cell_magic
    def aios(self, line: str, cell: str | None = None):
        """aios_lab control room: `%aios help` lists every verb, `%aios help VERB` its flags."""
        return run(line, Context(user_ns=self.shell.user_ns, cell=cell, interactive=True))


def load_ipython_extension(ipython) -> None:
    from .jobs.api import kernel_on_cpu

    kernel_on_cpu()  # the kernel checks on JAX's CPU backend; workers own the accelerators
    ipython.register_magics(AiosMagics)
