# spdy.py compiled by Cython in pure-Python mode (setup.py); the .py stays the one source and runs as it
# is where no compiled module was built. The session tap (``SpdyTap``) runs on every read of a relayed
# SPDY exec / attach / port-forward stream (kubectl before 1.30, and the port-forward tunnel inside
# WebSocket); its steps run compiled.
