"""kubegate's certificates: the CA, the identities it issues, the kubeconfigs and bots that carry them,
and the lock list (DESIGN §3, §4; issue 4).

Modules and their API
---------------------
``certs.ca``
    ``CertificateAuthority.load_or_create(ca_dir, clock=time.time) -> (ca, created)`` — EC P-256, created
    atomically in ``<state_dir>/ca/`` (``ca.pem`` 0644, ``ca-key.pem`` 0600), loaded if present;
    ``.load(ca_dir)``; ``.create_in_memory()`` for tests.
    ``ca.issue_user_certificate(user, roles, ttl, traits=None, cluster=None, kind="user") -> IssuedCertificate``
    (``.certificate``, ``.cert_pem``, ``.key_pem``, ``.serial`` hex, ``.not_after``): CN = user, one O per
    role, clientAuth, digitalSignature, the kubegate extension, random 128-bit serial, notBefore
    back-dated one minute, notAfter capped at the CA's.
    ``ca.issue_server_certificate(hosts, ttl)``; ``ca.ensure_server_certificate(hosts, cert_path=None,
    key_path=None) -> (cert, key, issued_now)`` keeps ``<state_dir>/ca/server.pem`` + ``server-key.pem``
    current; ``server_hosts(public_addrs, listen)`` gives the SAN list.
    ``verify_client_chain(cert, ca_or_ca_cert, now=None)`` raises ``CertificateVerificationError``.
``certs.building``
    The X.509 profile: ``generate_private_key``, ``private_key_pem``, ``random_serial``, ``san_entries``,
    ``self_signed_ca(key, name, not_before, not_after)``, ``leaf_builder(subject, public_key, issuer,
    not_before, not_after)``, ``sign``; also used by the sandbox's PKI (``sandbox.tls``).
``certs.extension``
    The identity extension: OID ``1.3.6.1.4.1.32473.5723.1`` (non-critical), value = DER UTF8String of
    JSON ``{"v": 1, "kind": "user"|"bot", "cluster": str|null, "traits": {name: [values]}}``.
``certs.identity``
    ``identity_from_certificate(cert) -> rbac.identity.Identity``, ``from_der(bytes)``, ``from_pem(bytes)``;
    ``IdentityError`` for a certificate without exactly one CN or with a malformed extension. No
    extension → roles from O, no traits, kind "user".
``certs.locks``
    ``LockList(path, clock=time.time)`` on ``Config.locks_file`` (``<state_dir>/locks``, JSON):
    ``is_locked(identity) -> str | None`` (one ``stat`` per call, re-read on change; with
    ``watch(loop)`` no system call until an inotify event names the file; ``generation``: a new object
    per change while watched), ``lock_user``, ``lock_serial``, ``unlock_user``, ``unlock_serial``,
    ``locks()``; ``error`` when the file is broken.
``certs.file_watch``
    ``FileWatch.open(path, loop, on_change, on_lost)``: inotify on a file's directory, read by an asyncio
    loop; ``WatchUnavailable`` when it cannot be set up.
``certs.kubeconfig``
    ``write_kubeconfig(path, server_url, clusters, ca_pem, cert_pem, key_pem, current=None)``;
    ``build_kubeconfig(server_url, clusters, credentials, ca_pem=|ca_file=, user_name=, current=)`` with
    ``EmbeddedCredentials`` / ``FileCredentials`` / ``ExecCredentials``; ``cluster_server_url``;
    context and cluster entry names are the kubegate cluster names.
``certs.access``
    ``cap_ttl(requested, role_names, roles)``, ``unknown_roles``, ``visible_clusters(identity, roles,
    clusters)`` (``rbac.cluster_visible`` over anything with ``name`` and ``labels``).
``certs.bot``
    ``run_bot(...)``, ``renew_if_due(...)``, ``bot_credentials(dest) -> ExecCredential dict``.
``certs.paths``
    ``StatePaths.of(state_dir)``: ``ca_cert``, ``ca_key``, ``server_cert``, ``server_key``, ``locks``,
    ``bots_dir``.

Files are written atomically (``certs.files.write_atomic``): temp file with the final mode, fsync,
rename.
"""
