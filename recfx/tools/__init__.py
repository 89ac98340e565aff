"""The ``recfx`` command line tools; each command is a module here registered with ``@command``."""
