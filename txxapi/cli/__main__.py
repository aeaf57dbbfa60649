"""``python -m txxapi.cli``: the ``xe`` client."""

from txxapi.cli.client import console_main

console_main()
