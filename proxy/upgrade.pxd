# upgrade.py compiled by Cython in pure-Python mode (setup.py); the .py stays the one source and runs as
# it is where no compiled module was built. The relay's per-read steps (``_Side``) run compiled.
