"""Sub-commands of the ``npar`` command line; see :mod:`npar.cli`."""
