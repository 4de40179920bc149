"""Sign-in on the kubegate server: the ``/kubegate/auth/`` endpoint (``service``), its connectors (OIDC,
GitHub OAuth) and the pure mapping from what a provider says about a person to kubegate roles and traits
(``mapping``). The CA key stays on the server: clients send a public key and get a certificate back."""
