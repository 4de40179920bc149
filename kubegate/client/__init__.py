"""The user and bot side of sign-in: talking to a proxy's ``/kubegate/auth/`` endpoint (``api``), the
identity kept in ``~/.kubegate`` (``profile``), the browser loopback redirect (``loopback``), the remote
bot (``bot``) and kubeconfig merging (``kubeconfig``). Nothing here needs the CA key."""
